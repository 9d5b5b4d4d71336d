"""``core.workers.WorkerHeartbeats`` against real Redis: what /readyz and /metrics count."""

from __future__ import annotations

import time

import pytest
import redis

from core.keyspace import WORKERS
from core.workers import WorkerHeartbeats

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def heartbeats(redis_db):
    client = redis.Redis.from_url(redis_db(), decode_responses=True)
    yield WorkerHeartbeats(client)
    client.close()


def test_heartbeats(heartbeats):
    heartbeats.beat("w1@host")
    assert "w1@host" in heartbeats.alive(max_age_s=5)
    heartbeats.gone("w1@host")
    assert "w1@host" not in heartbeats.alive(max_age_s=5)


def test_a_stale_heartbeat_is_not_alive_and_a_long_gone_one_is_pruned(heartbeats):
    heartbeats.redis.zadd(WORKERS, {"stale@host": time.time() - 30, "gone@host": time.time() - 3600})
    assert heartbeats.alive(max_age_s=5) == []
    assert heartbeats.redis.zscore(WORKERS, "gone@host") is None, "older than a minute: pruned"
    assert heartbeats.redis.zscore(WORKERS, "stale@host") is not None
