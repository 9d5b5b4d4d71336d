"""The task's hooks in the worker's main process: a job whose process hit the hard time limit is failed."""

from __future__ import annotations

import pytest
from celery.exceptions import TimeLimitExceeded

from worker.tasks import upscale

pytestmark = pytest.mark.unit


class FakeStore:
    def __init__(self) -> None:
        self.finished: list[tuple] = []

    def finish(self, job_id, status, **fields):
        self.finished.append((job_id, status, fields))
        return "ok"


def test_hard_time_limit_fails_the_job_with_timeout(monkeypatch):
    task = upscale._get_current_object()
    store = FakeStore()
    monkeypatch.setitem(task.__dict__, "store", store)
    task.on_failure(TimeLimitExceeded(660), "task-id", ["job-1"], {}, None)
    ((job_id, status, fields),) = store.finished
    assert (job_id, status, fields["error"]["code"]) == ("job-1", "failed", "timeout")
    assert "killed" in fields["error"]["message"]


def test_other_failures_are_left_to_redelivery(monkeypatch):
    task = upscale._get_current_object()
    store = FakeStore()
    monkeypatch.setitem(task.__dict__, "store", store)
    task.on_failure(RuntimeError("boom"), "task-id", ["job-1"], {}, None)
    assert store.finished == []
