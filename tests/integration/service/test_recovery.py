"""Recovery in seconds (``core.recovery``), with real worker processes: a job whose worker was killed runs
again on a live worker long before the visibility timeout, once; a job whose message was lost is sent again;
a job a run gave up (its message gone) is queued again; one reaper pass at a time."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Iterator

import pytest
import redis

from core.job_record import new_job_id
from core.jobs import JobStore
from core.keyspace import REAPER_LOCK, events_log_key, job_key
from core.recovery import Reaper, broker_job_ids, run_pass
from core.settings import Settings
from tests.utils.service import LiveApi, WorkerProc, image_bytes, wait_for, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

# Short heartbeats and reaper passes for the test; the visibility timeout is long, so only the reaper can
# bring a job back within the test (test_service_settings checks the 60 s bound of the defaults).
RECOVERY: dict[str, float] = {"heartbeat_s": 0.5, "worker_lost_s": 2.0, "message_lost_s": 2.0,
                               "reaper_interval_s": 0.5, "soft_time_limit_s": 20.0, "time_limit_s": 25.0,
                               "visibility_timeout_s": 600.0}


@pytest.fixture(scope="module")
def module_db(redis_db) -> str:
    return redis_db()


@pytest.fixture
def db(module_db: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(module_db, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@contextlib.contextmanager
def workers(settings: Settings, tmp_path, count: int) -> Iterator[list[WorkerProc]]:
    procs: list[WorkerProc] = []
    try:
        for i in range(count):
            procs.append(WorkerProc(settings, tmp_path / f"worker{i}.log").start())
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def status_events(db: redis.Redis, job_id: str) -> list[str]:
    events = [json.loads(raw) for raw in db.lrange(events_log_key(job_id), 0, -1)]
    return [e["status"] for e in events if e["type"] == "status"]


def test_a_killed_workers_job_runs_again_on_a_live_worker_in_seconds_once(db, module_db, make_settings, tmp_path):
    settings = make_settings(module_db, debug_tile_delay_s=0.15, **RECOVERY)  # 25 tiles: ~4 s a run
    api = LiveApi(settings).start()
    try:
        with workers(settings, tmp_path, 2) as procs, api.client() as client:
            response = client.post("/v1/jobs", files={"file": ("slow.png", image_bytes(160, 160), "image/png")})
            assert response.status_code == 202, response.text
            location, job_id = response.headers["location"], response.json()["id"]
            wait_until(lambda: client.get(location).json()["progress"] > 0.1, what="the job to be well under way")
            first = db.hget(job_key(job_id), "worker")
            (victim,) = [p for p in procs if first.startswith(p.name + "@")]
            (survivor,) = [p for p in procs if p is not victim]
            victim.kill_all()
            killed_at = time.monotonic()

            def running_on_survivor() -> bool:
                worker, status = db.hmget(job_key(job_id), "worker", "status")
                return status == "running" and bool(worker) and worker.startswith(survivor.name + "@")

            wait_until(running_on_survivor, timeout_s=30, interval_s=0.05, what="the job to run on the live worker")
            again_after = time.monotonic() - killed_at
            # worker_lost_s + reaper_interval_s = 2.5 s, plus the pick-up; far below the 600 s visibility timeout
            assert again_after < settings.requeue_within_s + 10, again_after
            job = wait_for(client, location, timeout_s=60)
            assert job["status"] == "succeeded", job
            assert job["attempts"] == 2, "the requeue counts as an attempt"
            assert sorted(p.name for p in (settings.resolved_storage_dir / job_id).iterdir()) == ["input", "result.png"]
            assert status_events(db, job_id) == ["queued", "running", "queued", "running", "succeeded"]
            assert int(db.hget("srgan:stats", "requeues_total")) == 1
            assert int(db.hget("srgan:stats", "jobs_total:succeeded")) == 1, "committed once"

            # the dead worker's own message comes back at the visibility timeout (here: by hand, as kombu
            # restores it): it is of the first generation, so it does nothing
            held = db.hgetall("unacked")
            assert held, "the killed worker's message is still held"
            for tag, raw in held.items():
                message, _exchange, routing_key = json.loads(raw)
                db.lpush(routing_key or settings.queue, json.dumps(message))
                db.hdel("unacked", tag)
                db.zrem("unacked_index", tag)
            wait_until(lambda: not db.llen(settings.queue) and not db.hlen("unacked"), timeout_s=20,
                       what="the live worker to take the old message and acknowledge it")
            job = client.get(location).json()
            assert (job["status"], job["attempts"]) == ("succeeded", 2), job
            assert status_events(db, job_id)[-1] == "succeeded"

            wait_until(lambda: client.get("/readyz").json()["checks"]["workers"]["detail"] == "1 alive",
                       timeout_s=10, what="/readyz to count the live worker only")
    finally:
        api.stop()


def test_a_job_whose_message_was_lost_is_sent_again(db, module_db, make_settings, tmp_path):
    settings = make_settings(module_db, **RECOVERY)
    api = LiveApi(settings).start()  # no worker yet: the message waits in the broker's list
    try:
        with api.client() as client:
            response = client.post("/v1/jobs", files={"file": ("a.png", image_bytes(16, 16), "image/png")})
            location, job_id = response.headers["location"], response.json()["id"]
            assert job_id in broker_job_ids(db, settings.queue)
            db.delete(settings.queue)  # the message is lost (a Redis that restarted without it, say)
            # the reaper bumps the generation, then sends: wait for both (the test saw the gap under load)
            wait_until(lambda: db.hget(job_key(job_id), "generation") == "1"
                       and job_id in broker_job_ids(db, settings.queue), timeout_s=15,
                       what="the reaper to send the message again")
            body = json.loads(db.lrange(settings.queue, 0, -1)[0])["body"]
            assert json.loads(base64.b64decode(body))[:2] == [[job_id], {"generation": 1}]
            with workers(settings, tmp_path, 1):
                job = wait_for(client, location, timeout_s=60)
            assert (job["status"], job["attempts"]) == ("succeeded", 1), job
            assert int(db.hget("srgan:stats", "resends_total")) == 1, "sent again once"
    finally:
        api.stop()


def test_a_job_a_run_gave_up_is_queued_again_and_runs(db, module_db, make_settings, tmp_path):
    """A run that gave the job up (Redis failed under it, and its retries with it) leaves it ``running``
    with no message and no heartbeat, while its worker lives on: the workers' reaper queues it again."""
    settings = make_settings(module_db, **RECOVERY)
    store = JobStore(db, ttl_s=settings.job_ttl_s)
    with workers(settings, tmp_path, 1) as (worker,):
        job_id = new_job_id()
        (settings.resolved_storage_dir / job_id).mkdir(parents=True)
        (settings.resolved_storage_dir / job_id / "input").write_bytes(image_bytes(16, 16))
        store.create(job_id, input={"filename": "a.png", "width": 16, "height": 16}, params={})
        claim = store.start(job_id, worker=worker.name + "@host", max_attempts=3)  # no message was ever sent
        assert claim.outcome == "started"

        def finished() -> bool:
            job = store.get(job_id)
            return job is not None and job.finished

        wait_until(finished, timeout_s=60, interval_s=0.1, what="the job to be queued again and run (no API)")
        job = store.get(job_id)
        assert job is not None and (job.status, job.attempts, job.generation) == ("succeeded", 2, 1), job
        assert status_events(db, job_id) == ["queued", "running", "queued", "running", "succeeded"]


def test_one_reaper_pass_per_interval_across_processes(db, module_db, make_settings):
    settings = make_settings(module_db, **{**RECOVERY, "reaper_interval_s": 5.0})
    store = JobStore(db, ttl_s=settings.job_ttl_s)
    sent: list[tuple[str, dict]] = []

    def send_task(name: str, **kwargs: object) -> None:  # what would go to the broker, recorded
        sent.append((name, kwargs))

    reapers = [Reaper(store, settings, send_task) for _ in range(3)]
    assert [r.maybe_run() is not None for r in reapers] == [True, False, False]
    assert 3000 < db.pttl(REAPER_LOCK) <= 4000
    db.delete(REAPER_LOCK)
    job_id = new_job_id()
    store.create(job_id, input={}, params={})
    store.start(job_id, worker="dead@host", max_attempts=3)
    db.hset(job_key(job_id), "beat_at", repr(time.time() - 60))
    done = run_pass(store, settings, send_task)
    assert done.requeued == [job_id] and not run_pass(store, settings, send_task), "queued again once"
    assert sent == [("srgan.upscale", {"args": [job_id], "kwargs": {"generation": 1}, "queue": settings.queue,
                                       "task_id": job_id, "retry": True, "retry_policy": sent[0][1]["retry_policy"]})]
