"""Which workers are alive: each job worker's main process writes a heartbeat every ``heartbeat_s``
(``worker.lifecycle``); ``/readyz`` needs a fresh one and ``/metrics`` counts them.

Kept in ``srgan:workers`` (``core.keyspace``), a sorted set of worker name -> last heartbeat (unix time).
A job's own run sends its heartbeats to the job record instead (``core.jobs.JobStore.touch``).
"""

from __future__ import annotations

import time

import redis

from core.keyspace import WORKERS


class WorkerHeartbeats:
    """The heartbeats of the workers, in the service's Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def beat(self, worker: str) -> None:
        self.redis.zadd(WORKERS, {worker: time.time()})

    def gone(self, worker: str) -> None:
        self.redis.zrem(WORKERS, worker)

    def alive(self, max_age_s: float) -> list[str]:
        """Workers whose last heartbeat is at most ``max_age_s`` old; older entries are pruned."""
        now = time.time()
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(WORKERS, "-inf", now - max(max_age_s, 60.0))
            pipe.zrangebyscore(WORKERS, now - max_age_s, "+inf")
            return list(pipe.execute()[1])
