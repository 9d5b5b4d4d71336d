"""Workers that die mid-job (``kill -9``): the job is redelivered and ends ``succeeded`` with one result,
or ``failed`` with a clear error once its attempts are used; it never stays ``running``."""

from __future__ import annotations

import contextlib

import pytest
import redis

from core.storage import open_storage
from tests.utils.service import LiveApi, WorkerProc, image_bytes, wait_for, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

# A dead worker's message comes back after the visibility timeout, which must exceed the hard limit.
LIMITS = dict(soft_time_limit_s=5.0, time_limit_s=6.0, visibility_timeout_s=7.0)


@contextlib.contextmanager
def stack(settings, tmp_path, workers=1):
    api = LiveApi(settings).start()
    procs = [WorkerProc(settings, tmp_path / f"worker{i}.log").start() for i in range(workers)]
    try:
        yield api, procs
    finally:
        for proc in procs:
            proc.stop()
        api.stop()


@pytest.fixture(scope="module")
def module_db(redis_db) -> str:
    return redis_db()


@pytest.fixture
def fresh_db(module_db: str) -> str:
    """The module's database, emptied: one database for the module (the session's Redis has 15)."""
    client = redis.Redis.from_url(module_db)
    client.flushdb()
    client.close()
    return module_db


def start_slow_job(client):
    response = client.post("/v1/jobs", files={"file": ("slow.png", image_bytes(160, 160), "image/png")})
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    wait_until(lambda: client.get(location).json()["progress"] > 0.1, what="the job to be well under way")
    return location


def files_of(settings, job):
    return open_storage(settings).files(job["id"])


def test_killed_pool_process_job_is_redelivered_and_succeeds_once(fresh_db, make_settings, storage_settings,
                                                                  backend, tmp_path):
    settings = make_settings(fresh_db, **LIMITS, **storage_settings(backend))
    with stack(settings, tmp_path) as (api, (worker,)), api.client() as client:
        location = start_slow_job(client)
        worker.kill_pool_process()
        job = wait_for(client, location, timeout_s=30)
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 2
        assert files_of(settings, job) == ["input", "result.png"]
        assert worker.alive(), "the worker's main process replaced its pool process"


def test_job_of_a_killed_worker_finishes_on_a_new_worker(fresh_db, make_settings, storage_settings, backend,
                                                         tmp_path):
    settings = make_settings(fresh_db, **LIMITS, **storage_settings(backend))
    with stack(settings, tmp_path) as (api, (worker,)), api.client() as client:
        location = start_slow_job(client)
        worker.kill_all()
        assert client.get(location).json()["status"] == "running"
        replacement = WorkerProc(settings, tmp_path / "replacement.log").start()
        try:
            job = wait_for(client, location, timeout_s=40)
        finally:
            replacement.stop()
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 2
        assert files_of(settings, job) == ["input", "result.png"]


def test_poison_job_fails_once_its_attempts_are_used(fresh_db, make_settings, tmp_path):
    settings = make_settings(fresh_db, max_attempts=1, **LIMITS)
    with stack(settings, tmp_path) as (api, (worker,)), api.client() as client:
        location = start_slow_job(client)
        worker.kill_pool_process()
        job = wait_for(client, location, timeout_s=30)
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "attempts_exhausted"
        assert "died 1 time" in job["error"]["message"]
        result = client.get(location + "/result")
        assert result.status_code == 409 and result.json()["error"]["code"] == "job_failed"
        # the worker is fine and takes the next job
        ok = client.post("/v1/jobs", files={"file": ("ok.png", image_bytes(8, 8), "image/png")})
        assert wait_for(client, ok.headers["location"])["status"] == "succeeded"


def test_job_over_the_soft_time_limit_fails_with_timeout(fresh_db, make_settings, tmp_path):
    settings = make_settings(fresh_db, soft_time_limit_s=0.5, time_limit_s=4.0, visibility_timeout_s=5.0)
    with stack(settings, tmp_path) as (api, _), api.client() as client:
        response = client.post("/v1/jobs", files={"file": ("slow.png", image_bytes(160, 160), "image/png")})
        job = wait_for(client, response.headers["location"], timeout_s=30)
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "timeout" and "0.5 s" in job["error"]["message"]
