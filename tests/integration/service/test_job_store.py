"""``core.jobs.JobStore`` against real Redis: atomic transitions, attempts, TTLs, counters."""

from __future__ import annotations

import time

import pytest
import redis

from core.jobs import JobStore, job_key, new_job_id

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(redis_db):
    client = redis.Redis.from_url(redis_db(), decode_responses=True)
    yield JobStore(client, ttl_s=60)
    client.close()


def new(store: JobStore) -> str:
    job_id = new_job_id()
    store.create(job_id, input={"filename": "a.png"}, params={"scale": 4})
    return job_id


def test_a_job_lives_for_its_ttl(store):
    job_id = new(store)
    assert 55 <= store.redis.ttl(job_key(job_id)) <= 60
    job = store.get(job_id)
    assert (job.status, job.attempts, job.input, job.expires_at > time.time()) == ("queued", 0, {"filename": "a.png"}, True)


def test_start_counts_attempts_and_fails_a_job_out_of_them(store):
    job_id = new(store)
    assert store.start(job_id, worker="w", max_attempts=2).outcome == "started"
    assert store.start(job_id, worker="w", max_attempts=2).outcome == "started"  # redelivered after a crash
    claim = store.start(job_id, worker="w", max_attempts=2)
    assert (claim.outcome, claim.attempts) == ("exhausted", 3)
    job = store.get(job_id)
    assert job.status == "failed" and job.error["code"] == "attempts_exhausted"
    assert store.start(job_id, worker="w", max_attempts=2).outcome == "finished"


def test_finished_jobs_are_left_alone(store):
    job_id = new(store)
    store.start(job_id, worker="w", max_attempts=3)
    assert store.finish(job_id, "succeeded", output={"ext": "png"}) == "ok"
    assert store.finish(job_id, "failed", error={"code": "x", "message": "y"}) == "succeeded"
    assert store.start(job_id, worker="w", max_attempts=3).outcome == "finished"
    assert store.get(job_id).progress == 1.0 and store.get(job_id).error is None


def test_cancel_queued_running_finished_missing(store):
    queued = new(store)
    assert store.cancel(queued) == "canceled"
    assert store.start(queued, worker="w", max_attempts=3).outcome == "finished", "a canceled job never runs"

    running = new(store)
    store.start(running, worker="w", max_attempts=3)
    assert not store.should_stop(running)
    assert store.cancel(running) == "cancel_requested"
    assert store.should_stop(running)
    assert store.finish(running, "canceled") == "ok"
    assert store.cancel(running) == "finished:canceled"
    assert store.cancel(new_job_id()) == "missing"


def test_writes_never_bring_an_expired_record_back(store):
    job_id = new(store)
    store.start(job_id, worker="w", max_attempts=3)
    store.redis.delete(job_key(job_id))
    assert store.update_running(job_id, progress=0.5) is False
    assert store.finish(job_id, "succeeded") == "missing"
    assert store.should_stop(job_id), "a running job whose record expired stops"
    assert not store.redis.exists(job_key(job_id))


def test_state_sets_counters_and_pruning(store):
    before = store.stats()
    job_id = new(store)
    assert store.state_counts()["queued"] >= 1
    store.start(job_id, worker="w", max_attempts=3)
    assert job_id in store.redis.smembers("srgan:jobs:running")
    store.redis.delete(job_key(job_id))  # expired while running (its worker vanished)
    assert store.prune_state_sets() >= 1
    assert job_id not in store.redis.smembers("srgan:jobs:running")
    after = store.stats()
    assert int(after["jobs_total:queued"]) == int(before.get("jobs_total:queued", 0)) + 1


def test_a_forgotten_job_is_not_counted_as_queued(store):
    """A job whose task could not be sent is forgotten: no record, and the queued counter as it was."""
    before_total = int(store.stats().get("jobs_total:queued", 0))
    before_queued = store.queued_count()
    job_id = new(store)
    assert int(store.stats()["jobs_total:queued"]) == before_total + 1
    store.forget(job_id)
    assert store.get(job_id) is None and store.queued_count() == before_queued
    assert int(store.stats()["jobs_total:queued"]) == before_total


def test_heartbeats(store):
    store.heartbeat("w1@host")
    assert "w1@host" in store.live_workers(max_age_s=5)
    store.worker_gone("w1@host")
    assert "w1@host" not in store.live_workers(max_age_s=5)
