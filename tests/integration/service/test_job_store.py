"""``core.jobs.JobStore`` against real Redis: atomic transitions, attempts, TTLs, counters."""

from __future__ import annotations

import json
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
    assert (job.status, job.attempts, job.input, job.expires_at > time.time()) == (
        "queued", 0, {"filename": "a.png"}, True)


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


@pytest.mark.parametrize("reported", ["succeeded", "failed"])
def test_a_requested_cancel_ends_canceled_whatever_the_worker_reports(store, reported):
    job_id = new(store)
    store.start(job_id, worker="w", max_attempts=3)
    assert store.cancel(job_id) == "cancel_requested"
    error = {"code": "x", "message": "m"}
    fields = {"output": {"ext": "png"}} if reported == "succeeded" else {"error": error}
    assert store.finish(job_id, reported, **fields) == "canceled"
    job = store.get(job_id)
    assert (job.status, job.output, job.error) == ("canceled", None, None)
    assert store.cancel(job_id) == "finished:canceled"


def test_a_cancel_after_the_result_was_committed_is_too_late(store):
    job_id = new(store)
    store.start(job_id, worker="w", max_attempts=3)
    assert store.finish(job_id, "succeeded", output={"ext": "png"}) == "ok"
    assert store.cancel(job_id) == "finished:succeeded"
    assert store.get(job_id).status == "succeeded"


def test_the_reaper_ends_a_job_whose_cancel_was_requested_canceled(store):
    job_id = new(store)
    store.start(job_id, worker="gone-worker", max_attempts=3)
    store.cancel(job_id)
    store.redis.hset(job_key(job_id), "started_at", repr(time.time() - 100))
    assert job_id in store.reap_lost(max_silence_s=10)
    assert store.get(job_id).status == "canceled"


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


# --- the reaper: running jobs of workers that stopped sending heartbeats -----------------------
def started_by(store: JobStore, worker: str, *, beat_age_s: float | None) -> str:
    """A running job of ``worker`` whose last heartbeat is ``beat_age_s`` old (None: no heartbeat entry)."""
    job_id = new(store)
    assert store.start(job_id, worker=worker, max_attempts=3).outcome == "started"
    store.redis.hset(job_key(job_id), "started_at", repr(time.time() - 3600))  # started long ago
    if beat_age_s is None:
        store.redis.zrem("srgan:workers", worker)
    else:
        store.redis.zadd("srgan:workers", {worker: time.time() - beat_age_s})
    return job_id


def test_the_reaper_fails_a_running_job_whose_worker_stopped_beating(store):
    before = int(store.stats().get("jobs_total:failed", 0))
    stale = started_by(store, "dead@host", beat_age_s=120)
    vanished = started_by(store, "gone@host", beat_age_s=None)  # its entry was pruned
    with store.redis.pubsub() as events:
        events.subscribe(f"srgan:events:{stale}")
        events.get_message(timeout=1)  # the subscription's confirmation
        reaped = store.reap_lost(max_silence_s=60)
        message = events.get_message(timeout=1)
    assert {stale, vanished} <= set(reaped)
    for job_id in (stale, vanished):
        job = store.get(job_id)
        assert (job.status, job.error["code"]) == ("failed", "worker_lost"), job
        assert "no heartbeat for over 60 s" in job.error["message"]
        assert job.finished_at is not None and job_id not in store.redis.smembers("srgan:jobs:running")
    assert message and json.loads(message["data"])["status"] == "failed"
    assert int(store.stats()["jobs_total:failed"]) == before + 2
    assert stale not in store.reap_lost(max_silence_s=60), "reaped once"


def test_the_reaper_leaves_jobs_of_live_workers_alone(store):
    alive = started_by(store, "alive@host", beat_age_s=1)
    just_started = new(store)  # its worker has no heartbeat entry yet, but it was seen starting the job
    store.start(just_started, worker="fresh@host", max_attempts=3)
    queued = new(store)
    reaped = store.reap_lost(max_silence_s=60)
    assert not {alive, just_started, queued} & set(reaped)
    assert [store.get(j).status for j in (alive, just_started, queued)] == ["running", "running", "queued"]
    assert store.update_running(alive, progress=0.5) and store.get(alive).error is None


def test_a_redelivered_job_belongs_to_its_new_worker(store):
    job_id = started_by(store, "dead@host", beat_age_s=600)
    store.heartbeat("new@host")
    assert store.start(job_id, worker="new@host", max_attempts=3).outcome == "started"
    assert job_id not in store.reap_lost(max_silence_s=60)
    assert store.get(job_id).status == "running"


def test_the_first_of_reaper_and_finish_wins(store):
    """Both are one script: a worker finishing after the reaper finds the job failed (and does not
    bring it back); a reaper after the finish finds it finished."""
    reaped = started_by(store, "dead@host", beat_age_s=600)
    assert reaped in store.reap_lost(max_silence_s=60)
    assert store.finish(reaped, "succeeded", output={"ext": "png"}) == "failed"
    job = store.get(reaped)
    assert (job.status, job.error["code"], job.output) == ("failed", "worker_lost", None)
    assert store.start(reaped, worker="new@host", max_attempts=3).outcome == "finished", "never runs again"

    finished = started_by(store, "dead@host", beat_age_s=600)
    assert store.finish(finished, "succeeded", output={"ext": "png"}) == "ok"
    assert finished not in store.reap_lost(max_silence_s=60)
    assert store.get(finished).status == "succeeded" and store.get(finished).error is None
