"""Batch records: several jobs made by one request, followed and downloaded together.

``srgan:batch:{id}`` is a hash (``created_at``, ``owner``, ``jobs``: the job ids as a JSON list, in
the order of the uploaded files) with the jobs' time to live. The jobs are ordinary jobs carrying
``batch_id``; the batch only lists them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import cast

import redis

from core.job_record import Job, is_job_id, new_job_id
from core.jobs import JobStore
from core.keyspace import batch_key, job_key

new_batch_id = new_job_id
is_batch_id = is_job_id


@dataclass
class Batch:
    id: str
    created_at: float
    owner: str | None = None
    job_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BatchState:
    """The batch with its jobs as they are now (expired ones left out)."""

    batch: Batch
    jobs: list[Job]

    @property
    def finished(self) -> bool:
        return all(job.finished for job in self.jobs)

    @property
    def progress(self) -> float:
        """Mean over the jobs, an ended job counting as done whatever its status."""
        if not self.jobs:
            return 1.0
        return sum(1.0 if job.finished else job.progress for job in self.jobs) / len(self.jobs)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in self.jobs:
            counts[job.status] = counts.get(job.status, 0) + 1
        return counts


class BatchStore:
    def __init__(self, client: redis.Redis, jobs: JobStore) -> None:
        self.redis, self.jobs = client, jobs

    def create(self, batch_id: str, job_ids: list[str], *, owner: str | None) -> Batch:
        now = time.time()
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(batch_key(batch_id), mapping={"created_at": repr(now), "owner": owner or "",
                                                    "jobs": json.dumps(job_ids)})
            pipe.expire(batch_key(batch_id), self.jobs.ttl_s)
            pipe.execute()
        return Batch(batch_id, now, owner, job_ids)

    def get(self, batch_id: str) -> Batch | None:
        raw = cast("dict[str, str]", self.redis.hgetall(batch_key(batch_id)))  # a decode_responses client
        if not raw:
            return None
        return Batch(batch_id, float(raw.get("created_at") or 0), raw.get("owner") or None,
                     json.loads(raw.get("jobs") or "[]"))

    def state(self, batch: Batch) -> BatchState:
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in batch.job_ids:
                pipe.hgetall(job_key(job_id))
            raws = pipe.execute()
        return BatchState(batch, [Job.from_hash(job_id, raw) for job_id, raw in zip(batch.job_ids, raws) if raw])
