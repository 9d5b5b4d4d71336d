"""``core.throughput`` against real Redis: per-process moving averages, the fastest fresh figure wins."""

from __future__ import annotations

import json
import time

import pytest
import redis

from core import throughput
from core.keyspace import THROUGHPUT

pytestmark = pytest.mark.integration


@pytest.fixture
def client(service):  # the session service's database; this module's keys are its own model names
    c = redis.Redis.from_url(service.settings.redis_url, decode_responses=True)
    yield c
    c.close()


def test_each_process_keeps_a_moving_average_and_the_fastest_fresh_one_counts(client):
    model = f"m-{time.time_ns()}"
    assert throughput.fastest(client, model, max_age_s=60) is None
    assert throughput.record(client, model, 100, 1.0, source="a") is None, "too small to say anything"
    assert throughput.record(client, model, 20_000, 2.0, source="a") == 10_000
    assert throughput.record(client, model, 20_000, 1.0, source="a") == pytest.approx(15_000)  # 0.5 old + 0.5 new
    throughput.record(client, model, 20_000, 0.5, source="b")  # a faster process: 40_000
    throughput.record(client, "other-" + model, 20_000, 0.1, source="c")  # another model does not count
    assert throughput.fastest(client, model, max_age_s=60) == pytest.approx(40_000)
    assert throughput.estimate_engine_s(80_000, throughput.passes_for(True), 40_000) == pytest.approx(4.0)


def test_stale_and_unreadable_figures_are_dropped(client):
    model = f"m-{time.time_ns()}"
    client.hset(THROUGHPUT, f"{model}|old", json.dumps({"px_s": 1e9, "at": time.time() - 1000}))
    client.hset(THROUGHPUT, f"{model}|junk", "not json")
    throughput.record(client, model, 20_000, 1.0, source="fresh")
    assert throughput.fastest(client, model, max_age_s=100) == pytest.approx(20_000)
    assert not client.hexists(THROUGHPUT, f"{model}|old") and not client.hexists(THROUGHPUT, f"{model}|junk")
