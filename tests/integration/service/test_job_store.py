"""``core.jobs.JobStore`` against real Redis: atomic transitions, attempts, TTLs, counters."""

from __future__ import annotations

import json
import time

import pytest
import redis

from core.job_record import new_job_id
from core.jobs import JobStore
from core.keyspace import job_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def db_url(redis_db):
    return redis_db()


@pytest.fixture(scope="module")
def store(db_url):
    client = redis.Redis.from_url(db_url, decode_responses=True)
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


# --- the reaper: running jobs whose run stopped beating are queued again ------------------------
def silent_run(store: JobStore, *, silent_s: float = 120, max_attempts: int = 3) -> tuple[str, int]:
    """A running job whose run last beat ``silent_s`` ago; its id and the run's attempt."""
    job_id = new(store)
    claim = store.start(job_id, worker="dead@host", max_attempts=max_attempts)
    assert claim.outcome == "started"
    store.redis.hset(job_key(job_id), "beat_at", repr(time.time() - silent_s))
    return job_id, claim.attempts


def requeued(store: JobStore, max_silence_s: float = 60, max_attempts: int = 3) -> dict[str, tuple[str, int]]:
    return {r.job_id: (r.outcome, r.generation) for r in store.requeue_lost(max_silence_s, max_attempts)}


def test_a_running_job_whose_run_went_silent_is_queued_again_once(store):
    before = int(store.stats().get("requeues_total", 0))
    job_id, _ = silent_run(store)
    with store.redis.pubsub() as events:
        events.subscribe(f"srgan:events:{job_id}")
        events.get_message(timeout=1)  # the subscription's confirmation
        done = requeued(store)
        message = events.get_message(timeout=1)
    assert done[job_id] == ("requeued", 1)
    job = store.get(job_id)
    assert (job.status, job.generation, job.progress, job.worker, job.error) == ("queued", 1, 0.0, None, None)
    assert job.queued_at is not None and job.queued_at > time.time() - 5
    assert job_id in store.redis.smembers("srgan:jobs:queued")
    assert job_id not in store.redis.smembers("srgan:jobs:running")
    assert message and json.loads(message["data"])["status"] == "queued"
    assert int(store.stats()["requeues_total"]) == before + 1
    assert job_id not in requeued(store), "queued again once"


def test_the_next_start_counts_an_attempt_and_fences_off_the_lost_run(store):
    job_id, lost = silent_run(store)
    requeued(store)
    # the lost run, if it was only slow, can no longer write, beat or commit; it is told to stop
    assert store.update_running(job_id, attempt=lost, progress=0.9) is False
    assert store.touch(job_id, lost) is False
    assert store.finish(job_id, "succeeded", attempt=lost, output={"ext": "png"}) == "superseded"
    assert store.finish(job_id, "failed", generation=0, error={"code": "x", "message": "y"}) == "superseded"
    assert store.get(job_id).status == "queued"
    # the first message (generation 0), coming back after the visibility timeout, does not run it
    assert store.start(job_id, worker="w", max_attempts=3, generation=0).outcome == "superseded"
    claim = store.start(job_id, worker="live@host", max_attempts=3, generation=1)
    assert (claim.outcome, claim.attempts) == ("started", lost + 1)
    assert store.should_stop(job_id, lost) and not store.should_stop(job_id, claim.attempts)
    assert store.update_running(job_id, attempt=lost, progress=0.9) is False
    assert store.update_running(job_id, attempt=claim.attempts, progress=0.5) is True
    assert store.finish(job_id, "succeeded", attempt=lost, output={"ext": "png"}) == "superseded"
    assert store.finish(job_id, "succeeded", attempt=claim.attempts, output={"ext": "png"}) == "ok"
    job = store.get(job_id)
    assert (job.status, job.attempts, job.worker, job.output) == ("succeeded", 2, "live@host", {"ext": "png"})


def test_a_silent_run_out_of_attempts_fails_and_one_whose_cancel_was_requested_ends_canceled(store):
    exhausted, _ = silent_run(store, max_attempts=1)
    canceled, _ = silent_run(store)
    store.cancel(canceled)
    done = requeued(store, max_attempts=1)
    assert done[exhausted] == ("failed", 0) and done[canceled] == ("canceled", 0)
    job = store.get(exhausted)
    assert (job.status, job.error["code"]) == ("failed", "attempts_exhausted")
    assert "died 1 time" in job.error["message"]
    assert store.get(canceled).status == "canceled"
    assert not {exhausted, canceled} & (store.redis.smembers("srgan:jobs:queued") |
                                         store.redis.smembers("srgan:jobs:running"))


def test_the_reaper_leaves_live_runs_and_queued_jobs_alone(store):
    beating, attempt = silent_run(store, silent_s=1)
    just_started = new(store)
    store.start(just_started, worker="fresh@host", max_attempts=3)
    queued = new(store)
    done = requeued(store)
    assert not {beating, just_started, queued} & set(done)
    assert [store.get(j).status for j in (beating, just_started, queued)] == ["running", "running", "queued"]
    store.redis.hset(job_key(beating), "beat_at", repr(time.time() - 120))
    assert store.touch(beating, attempt), "a run that beats again..."
    assert beating not in requeued(store), "...is left alone"


def test_a_redelivered_job_belongs_to_its_new_run(store):
    job_id, lost = silent_run(store)
    claim = store.start(job_id, worker="new@host", max_attempts=3)  # Celery's redelivery of the same message
    assert (claim.outcome, claim.attempts) == ("started", lost + 1)
    assert job_id not in requeued(store), "its start is a heartbeat"
    assert store.get(job_id).status == "running"


def test_the_first_of_reaper_and_finish_wins(store):
    first_reaper, lost = silent_run(store)
    assert first_reaper in requeued(store)
    assert store.finish(first_reaper, "succeeded", attempt=lost, output={"ext": "png"}) == "superseded"
    assert (store.get(first_reaper).status, store.get(first_reaper).output) == ("queued", None)

    first_finish, attempt = silent_run(store)
    assert store.finish(first_finish, "succeeded", attempt=attempt, output={"ext": "png"}) == "ok"
    assert first_finish not in requeued(store)
    assert store.get(first_finish).status == "succeeded"


def test_two_reapers_racing_queue_each_job_again_once(store, db_url):
    import threading

    jobs = [silent_run(store)[0] for _ in range(30)]
    stores = [JobStore(redis.Redis.from_url(db_url, decode_responses=True), ttl_s=60) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    results: list[dict[str, tuple[str, int]]] = [{} for _ in stores]

    def reap(i: int) -> None:
        barrier.wait()
        results[i] = requeued(stores[i])

    threads = [threading.Thread(target=reap, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for other in stores:
        other.redis.close()
    claims = [job_id for result in results for job_id in result if job_id in jobs]
    assert sorted(claims) == sorted(jobs), "each job queued again by exactly one reaper"
    assert all(store.get(j).generation == 1 and store.get(j).status == "queued" for j in jobs)


# --- lost messages: queued jobs sent again ---------------------------------------------------
def test_a_queued_job_is_found_once_old_and_resent_once(store):
    job_id = new(store)
    assert job_id not in store.queued_since(20)
    store.redis.hset(job_key(job_id), "queued_at", repr(time.time() - 30))
    since = store.queued_since(20)[job_id]
    assert store.resend(job_id, since, 20) == 1
    assert store.resend(job_id, since, 20) is None, "a second reaper that read the same moment does nothing"
    assert job_id not in store.queued_since(20), "it entered the queue again just now"
    job = store.get(job_id)
    assert (job.status, job.generation) == ("queued", 1)
    assert store.start(job_id, worker="w", max_attempts=3, generation=0).outcome == "superseded"
    assert store.start(job_id, worker="w", max_attempts=3, generation=1).outcome == "started"
    assert store.resend(job_id, since, 0) is None, "a started job is not sent again"
