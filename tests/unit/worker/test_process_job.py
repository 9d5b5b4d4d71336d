"""``worker.pipeline.process_job`` with a fake job store: which error code a missing file gives."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import cast

import pytest
import redis

from bench.tiny_models import make_nearest_model
from core.jobs import Claim, Job, JobStore, new_job_id
from core.settings import Settings
from core.storage import FolderStorage
from model.engine import Upscaler
from worker.engines import EngineCache
from worker.pipeline import process_job

pytestmark = pytest.mark.unit


class FakeStore:
    """The calls ``process_job`` makes, for one queued job; ``finish`` is recorded."""

    def __init__(self, job_id: str) -> None:
        self.job = Job(id=job_id, status="queued", params={})
        self.finished: list[tuple] = []

    def start(self, job_id, *, worker, max_attempts, generation=0):
        self.job.status = "running"
        return Claim("started", 1, "running")

    def get(self, job_id):
        return self.job

    def update_running(self, job_id, *, attempt=None, **fields):
        return True

    def touch(self, job_id, attempt):
        return True

    def should_stop(self, job_id, attempt=None):
        return False

    def cancel_requested(self, job_id):
        return False

    def finish(self, job_id, status, *, generation=None, attempt=None, **fields):
        self.finished.append((job_id, status, fields))
        return "ok"


class Engines:
    """An engine cache that gives ``upscaler``, or raises ``error``."""

    def __init__(self, upscaler=None, error: BaseException | None = None) -> None:
        self.upscaler, self.error = upscaler, error

    def get(self, spec=None, detail=None):
        if self.error is not None:
            raise self.error
        return self.upscaler

    def _ref(self):
        from core.catalog import ModelRef

        return ModelRef(name="n", version="1", scale=self.upscaler.scale if self.upscaler else 4, path=Path("n.onnx"))

    def resolve(self, spec=None):
        if self.error is not None:
            raise self.error
        return self._ref()

    def get_blend(self, spec=None, detail=None, denoise=None):
        from core.upscalers import Blend

        upscaler = self.get(spec, detail)
        return upscaler, Blend(self._ref())


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory):
    path = make_nearest_model(tmp_path_factory.mktemp("m") / "n.onnx")
    return Upscaler.from_file(path, backend="onnxruntime", threads=1, tile=16, overlap=2)


def run(tmp_path, engines, upload: bytes | None = None) -> tuple[str, dict]:
    job_id = new_job_id()
    storage = FolderStorage(tmp_path / "jobs").ensure()
    if upload is not None:  # the engine is chosen for the decoded upload: a model error comes after it is read
        storage.input_path(job_id).parent.mkdir(parents=True, exist_ok=True)
        storage.input_path(job_id).write_bytes(upload)
    store = FakeStore(job_id)
    outcome = process_job(job_id, store=cast(JobStore, store), storage=storage, engines=engines,
                          settings=Settings(_env_file=None), worker="w1")
    ((finished_id, status, fields),) = store.finished
    assert finished_id == job_id and status == outcome == "failed"
    return outcome, fields["error"]


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, "PNG")
    return buf.getvalue()


def test_a_missing_model_file_is_an_internal_error_not_a_missing_upload(tmp_path):
    model_file = tmp_path / "models" / "sr" / "v1" / "model.onnx"  # removed from the registry meanwhile
    gone = FileNotFoundError(errno.ENOENT, "No such file or directory", str(model_file))
    _, error = run(tmp_path, Engines(error=gone), upload=_png())
    assert error["code"] == "internal_error"
    assert "uploaded image" not in error["message"]


def test_a_missing_upload_is_input_missing(tmp_path, upscaler):
    _, error = run(tmp_path, Engines(upscaler))  # the job's input file was never written
    assert error["code"] == "input_missing"
    assert "input" in error["message"]


class FlakyStore(FakeStore):
    """Redis goes away under the job: ``update_running`` or ``finish`` raise a connection error."""

    def __init__(self, job_id: str, fail: str) -> None:
        super().__init__(job_id)
        self.fail = fail

    def update_running(self, job_id, *, attempt=None, **fields):
        if self.fail == "update_running":
            raise redis.exceptions.ConnectionError("Connection refused")
        return True

    def finish(self, job_id, status, *, generation=None, attempt=None, **fields):
        if self.fail == "finish":
            raise redis.exceptions.TimeoutError("Timeout reading from socket")
        return super().finish(job_id, status, **fields)


@pytest.mark.parametrize("fail", ["update_running", "finish"])
def test_a_redis_error_is_raised_for_the_task_to_retry_not_recorded_as_the_jobs_failure(tmp_path, upscaler, fail):
    job_id = new_job_id()
    storage = FolderStorage(tmp_path / "jobs").ensure()
    storage.input_path(job_id).parent.mkdir(parents=True)
    storage.input_path(job_id).write_bytes(_png())  # the model is recorded once the upload is decoded
    store = FlakyStore(job_id, fail)
    with pytest.raises(redis.RedisError):
        process_job(job_id, store=cast(JobStore, store), storage=storage,
                    engines=cast(EngineCache, Engines(upscaler)),
                    settings=Settings(_env_file=None), worker="w1")
    assert store.finished == [], "not failed with internal_error"


@pytest.mark.parametrize(("events", "expected"), [
    (["completed"], ["started", "completed"]),  # `started` is asked of the notifier, which drops unwanted events
    (["started", "progress", "completed"], ["started", "progress", "completed"]),
])
def test_webhook_events_are_queued_in_order(tmp_path, upscaler, events, expected):
    from tests.utils.service import image_bytes

    job_id = new_job_id()
    storage = FolderStorage(tmp_path / "jobs").ensure()
    storage.input_path(job_id).parent.mkdir(parents=True)
    storage.input_path(job_id).write_bytes(image_bytes(48, 48))
    store = FakeStore(job_id)
    store.job.webhook = {"url": "https://example.com/hook", "events": events}
    told: list[str] = []
    outcome = process_job(job_id, store=cast(JobStore, store), storage=storage,
                          engines=cast(EngineCache, Engines(upscaler)),
                          settings=Settings(_env_file=None), worker="w1", notify=lambda _, event: told.append(event))
    assert outcome == "succeeded"
    assert [e for i, e in enumerate(told) if i == 0 or e != told[i - 1]] == expected, told


def test_no_webhook_no_notifications(tmp_path, upscaler):
    job_id = new_job_id()
    storage = FolderStorage(tmp_path / "jobs").ensure()
    told: list[str] = []
    process_job(job_id, store=cast(JobStore, FakeStore(job_id)), storage=storage,
                engines=cast(EngineCache, Engines(upscaler)),
                settings=Settings(_env_file=None), worker="w1", notify=lambda _, event: told.append(event))
    assert told == []
