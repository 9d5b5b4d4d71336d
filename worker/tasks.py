"""The Celery task: thin; the work is in ``worker.pipeline``.

Per-process resources (Redis client, storage, loaded ONNX sessions) are cached
properties of the task class, so each worker process makes them once.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import redis
from billiard.einfo import ExceptionInfo
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from core.jobs import JobStore
from core.storage import Storage, open_storage
from core.webhooks import Notifier
from worker.celery_app import TASK_NAME, ServiceTask, app
from worker.engines import EngineCache
from worker.pipeline import process_job

log = logging.getLogger(__name__)

REDIS_RETRIES = 5
"""Times a job is sent again when Redis failed under it (restarting, say) before it is given up."""
REDIS_RETRY_BACKOFF_S = 2.0
"""The first retry waits this long, each later one twice as long as the one before, at most 60 s."""


class UpscaleTask(ServiceTask):
    """Holds what one worker process reuses across jobs."""

    @cached_property
    def storage(self) -> Storage:
        return open_storage(self.settings)

    @cached_property
    def notifier(self) -> Notifier:
        return Notifier(self.settings, self.store, app.send_task)

    @cached_property
    def engines(self) -> EngineCache:
        return EngineCache(self.settings, self.store.redis)

    @property
    def worker_name(self) -> str:
        return self.request.hostname or socket.gethostname()

    def on_failure(
        self, exc: Exception, task_id: str, args: Sequence[Any], kwargs: dict[str, Any], einfo: ExceptionInfo | None,
    ) -> None:
        """Runs in the worker's main process when the hard time limit killed the job's process."""
        if isinstance(exc, TimeLimitExceeded) and args:
            generation = int((kwargs or {}).get("generation", 0))
            outcome = self.store.finish(args[0], "failed", generation=generation, error={
                "code": "timeout",
                "message": f"the job ran longer than {self.settings.time_limit_s:g} s and its process was killed",
            })
            if outcome == "ok":
                self.notifier(args[0], "completed")


@app.task(name=TASK_NAME, base=UpscaleTask, bind=True, max_retries=REDIS_RETRIES)
def upscale(self: UpscaleTask, job_id: str, generation: int = 0) -> str:
    """Upscale the image of job ``job_id``; returns what happened (for the worker's log).

    ``generation``: the job's, when this message was sent (``core.recovery``); the message of an
    older generation than the job's does nothing.

    A Redis error (Redis restarting, say) would otherwise end the task with the job left
    ``running``: the task is sent again a few times instead. A retry whose Redis error came
    before the job was claimed counts no attempt; one that re-runs a started job counts one,
    like any redelivery, so ``max_attempts`` still bounds the real re-runs. Once the retries
    are used up the job is failed with ``store_unavailable`` if Redis answers by then.
    """
    try:
        return process_job(
            job_id, store=self.store, storage=self.storage, engines=self.engines, settings=self.settings,
            worker=self.worker_name, on_soft_timeout=SoftTimeLimitExceeded, notify=self.notifier,
            generation=generation,
        )
    except redis.RedisError as exc:
        retries = self.request.retries
        if retries >= REDIS_RETRIES:
            log.error("job %s: Redis failed %d times, giving up: %s", job_id, retries + 1, exc)
            _fail_if_possible(self.store, job_id, generation, exc)
            raise
        countdown = min(60.0, REDIS_RETRY_BACKOFF_S * 2**retries)
        log.warning("job %s: Redis failed (%s); retry %d of %d in %g s", job_id, exc, retries + 1,
                    REDIS_RETRIES, countdown)
        raise self.retry(exc=exc, countdown=countdown) from exc


def _fail_if_possible(store: JobStore, job_id: str, generation: int, exc: redis.RedisError) -> None:
    try:
        outcome = store.finish(job_id, "failed", generation=generation, error={
            "code": "store_unavailable",
            "message": f"Redis failed under the job {REDIS_RETRIES + 1} times: {type(exc).__name__}: {exc}",
        })
        if outcome == "ok":
            upscale.notifier(job_id, "completed")
    except redis.RedisError as again:  # the reaper queues it again once Redis answers (its run is silent)
        log.error("job %s: Redis still fails: %s; the reaper will queue it again", job_id, again)
