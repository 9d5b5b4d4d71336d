"""Job duration histograms in the ``stats`` hash, which ``GET /metrics`` reads (``api/metrics.py``).

Each job that ends observes two durations: ``total`` (created to ended) and ``run`` (started to ended,
when it started), per final status, as a cumulative-ready histogram: a count per bucket, a sum and a count.
"""

from __future__ import annotations

import math

import redis

from core.keyspace import STATS, job_key

DURATION_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, math.inf)
"""Upper bounds (seconds) of the job duration histograms kept in ``stats``."""


def observe_durations(client: redis.Redis, job_id: str, status: str, now: float) -> None:
    """Count the job's total and run durations into the histograms of ``status`` (its final one)."""
    created, started = client.hmget(job_key(job_id), "created_at", "started_at")
    observations = {"total": now - float(created or now)}
    if started:
        observations["run"] = now - float(started)
    with client.pipeline(transaction=False) as pipe:
        for phase, seconds in observations.items():
            bucket = next(b for b in DURATION_BUCKETS if seconds <= b)
            prefix = f"duration:{phase}:{status}"
            pipe.hincrby(STATS, f"{prefix}:bucket:{bucket}", 1)
            pipe.hincrbyfloat(STATS, f"{prefix}:sum", seconds)
            pipe.hincrby(STATS, f"{prefix}:count", 1)
        pipe.execute()
