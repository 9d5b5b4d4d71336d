"""The task's hooks in the worker's main process: a job whose process hit the hard time limit is failed;
and the task itself: a Redis error is retried a bounded number of times, never leaving the job to nobody."""

from __future__ import annotations

import pytest
import redis
from celery.exceptions import TimeLimitExceeded

import worker.tasks
from worker.tasks import REDIS_RETRIES, UpscaleTask, upscale

pytestmark = pytest.mark.unit


def current_task() -> UpscaleTask:
    """The task object behind the ``upscale`` proxy (celery-types types the proxy as the task itself)."""
    return upscale._get_current_object()  # type: ignore[attr-defined]


class FakeStore:
    def __init__(self) -> None:
        self.finished: list[tuple] = []

    def finish(self, job_id, status, **fields):
        self.finished.append((job_id, status, fields))
        return "ok"


def test_hard_time_limit_fails_the_job_with_timeout(monkeypatch):
    task = current_task()
    store = FakeStore()
    monkeypatch.setitem(task.__dict__, "store", store)
    task.on_failure(TimeLimitExceeded(660), "task-id", ["job-1"], {}, None)
    ((job_id, status, fields),) = store.finished
    assert (job_id, status, fields["error"]["code"]) == ("job-1", "failed", "timeout")
    assert "killed" in fields["error"]["message"]


def test_other_failures_are_left_to_redelivery(monkeypatch):
    task = current_task()
    store = FakeStore()
    monkeypatch.setitem(task.__dict__, "store", store)
    task.on_failure(RuntimeError("boom"), "task-id", ["job-1"], {}, None)
    assert store.finished == []


@pytest.fixture
def flaky(monkeypatch):
    """The task with a fake store, and ``process_job`` failing with a Redis error the first ``n`` times."""
    task = current_task()
    store = FakeStore()
    for name, value in (("store", store), ("storage", object()), ("engines", object())):
        monkeypatch.setitem(task.__dict__, name, value)
    calls: list[int] = []
    countdowns: list[float] = []
    retry = task.retry

    def spy_retry(*args, **kwargs):
        countdowns.append(kwargs["countdown"])
        return retry(*args, **kwargs)

    monkeypatch.setattr(task, "retry", spy_retry)

    def setup(failures: int):
        def process_job(job_id, **kwargs):
            calls.append(task.request.retries)
            if len(calls) <= failures:
                raise redis.exceptions.ConnectionError("Error 111 connecting to redis:6379. Connection refused.")
            return "succeeded"

        monkeypatch.setattr(worker.tasks, "process_job", process_job)
        return task, store, calls, countdowns

    return setup


def test_a_redis_error_is_retried_with_a_growing_countdown(flaky):
    task, store, calls, countdowns = flaky(failures=2)
    result = task.apply(args=["job-1"])  # eager: each retry runs at once, in order
    assert result.get() == "succeeded"
    assert calls == [0, 1, 2], "the same job again, as retries 1 and 2"
    assert countdowns[0] > 0 and countdowns == sorted(countdowns) and len(countdowns) == 2
    assert store.finished == []


def test_retries_are_bounded_and_the_job_is_then_failed(flaky):
    task, store, calls, countdowns = flaky(failures=100)
    result = task.apply(args=["job-1"])
    assert result.failed() and isinstance(result.result, redis.exceptions.ConnectionError)
    assert len(calls) == REDIS_RETRIES + 1 and len(countdowns) == REDIS_RETRIES
    assert max(countdowns) <= 60
    ((job_id, status, fields),) = store.finished
    assert (job_id, status, fields["error"]["code"]) == ("job-1", "failed", "store_unavailable")


def test_other_errors_are_not_retried(flaky, monkeypatch):
    task, store, calls, countdowns = flaky(failures=0)

    def broken(job_id, **kwargs):
        calls.append(task.request.retries)
        raise RuntimeError("boom")

    monkeypatch.setattr(worker.tasks, "process_job", broken)
    result = task.apply(args=["job-1"])
    assert result.failed() and isinstance(result.result, RuntimeError)
    assert calls == [0] and countdowns == [] and store.finished == []
