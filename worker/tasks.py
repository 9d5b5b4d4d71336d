"""The Celery task: thin; the work is in ``worker.pipeline``.

Per-process resources (Redis client, storage, loaded ONNX sessions) are cached
properties of the task class, so each worker process makes them once.
"""

from __future__ import annotations

import logging
import socket
from functools import cached_property

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from core.jobs import JobStore, connect
from core.settings import Settings, get_settings
from core.storage import Storage
from worker.celery_app import TASK_NAME, app
from worker.engines import EngineCache
from worker.pipeline import process_job

log = logging.getLogger(__name__)


class UpscaleTask(Task):
    """Holds what one worker process reuses across jobs."""

    @cached_property
    def settings(self) -> Settings:
        return get_settings()

    @cached_property
    def store(self) -> JobStore:
        if not self.settings.redis_url:
            raise RuntimeError("SRGAN_REDIS_URL is not set")
        return JobStore(connect(self.settings.redis_url), ttl_s=self.settings.job_ttl_s)

    @cached_property
    def storage(self) -> Storage:
        return Storage(self.settings.resolved_storage_dir)

    @cached_property
    def engines(self) -> EngineCache:
        return EngineCache(self.settings, self.store.redis)

    @property
    def worker_name(self) -> str:
        return self.request.hostname or socket.gethostname()

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:  # noqa: ANN001 - Celery's signature
        """Runs in the worker's main process when the hard time limit killed the job's process."""
        if isinstance(exc, TimeLimitExceeded) and args:
            self.store.finish(args[0], "failed", error={
                "code": "timeout",
                "message": f"the job ran longer than {self.settings.time_limit_s:g} s and its process was killed",
            })


@app.task(name=TASK_NAME, base=UpscaleTask, bind=True)
def upscale(self: UpscaleTask, job_id: str) -> str:
    """Upscale the image of job ``job_id``; returns what happened (for the worker's log)."""
    return process_job(
        job_id, store=self.store, storage=self.storage, engines=self.engines, settings=self.settings,
        worker=self.worker_name, on_soft_timeout=SoftTimeLimitExceeded,
    )
