"""The Celery app, configured from the settings: ``celery -A worker.celery_app worker``.

Delivery guarantees, in short: a job's message is acknowledged only after the
task returns (``acks_late``); if the process running it dies, the message is
put back (``reject_on_worker_lost``), and if the whole worker dies, Redis
hands it out again after ``visibility_timeout_s``, which is longer than the
hard time limit so a job still running is never handed out twice. Each
delivery counts as an attempt on the job record, and a job out of attempts is
failed instead of run (see ``core.jobs.JobStore.start``).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from celery import Celery, Task

from core.jobs import UPSCALE_TASK as TASK_NAME
from core.jobs import JobStore, connect
from core.settings import Settings, get_settings

__all__ = ["TASK_NAME", "app", "celery_config", "make_celery"]


def celery_config(settings: Settings) -> dict[str, Any]:
    visibility = settings.visibility_timeout_s
    return {
        "broker_url": settings.redis_url or "redis://localhost:6379/0",
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": visibility,
            # look for messages of dead workers often enough to notice them soon after they are due
            "unacked_restore_interval": max(1, min(60, int(visibility / 10))),
            "unacked_restore_throttle": 1,
        },
        "task_default_queue": settings.queue,
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "task_soft_time_limit": settings.soft_time_limit_s,
        "task_time_limit": settings.time_limit_s,
        "worker_prefetch_multiplier": 1,
        # how long a dead pool process's job waits for a result before it counts as lost and is requeued;
        # tasks record their own results in the job record, so there is nothing worth waiting 10 s for
        "worker_lost_wait": 2.0,
        "worker_concurrency": settings.worker_concurrency,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
    }


def make_celery(settings: Settings) -> Celery:
    app = Celery("srgan", include=["worker.tasks", "worker.webhooks", "worker.lifecycle"])
    app.conf.update(celery_config(settings))
    return app


app = make_celery(get_settings())


class ServiceTask(Task):
    """Base of the service's tasks: the settings and the job store, made once per worker process."""

    @cached_property
    def settings(self) -> Settings:
        return get_settings()

    @cached_property
    def store(self) -> JobStore:
        if not self.settings.redis_url:
            raise RuntimeError("SRGAN_REDIS_URL is not set")
        return JobStore(connect(self.settings.redis_url), ttl_s=self.settings.job_ttl_s)
