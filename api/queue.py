"""Send jobs to the workers by task name; the API never imports worker code."""

from __future__ import annotations

from typing import TYPE_CHECKING

from celery import Celery

from core.jobs import UPSCALE_TASK
from core.settings import Settings

if TYPE_CHECKING:
    import redis


class JobQueue:
    """A producer-only Celery app on the service's broker."""

    def __init__(self, settings: Settings) -> None:
        self.queue = settings.queue
        self.app = Celery("srgan-api", broker=settings.redis_url)
        self.app.conf.update(
            broker_connection_retry_on_startup=True,
            broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
            task_serializer="json",
            task_ignore_result=True,
        )

    def send(self, job_id: str) -> None:
        self.app.send_task(UPSCALE_TASK, args=[job_id], queue=self.queue, task_id=job_id,
                           retry=True, retry_policy={"max_retries": 3, "interval_start": 0.1,
                                                     "interval_step": 0.2, "interval_max": 1.0})

    def depth(self, client: redis.Redis) -> int:
        """Messages waiting in the broker's list for the queue (not yet taken by a worker)."""
        return int(client.llen(self.queue))

    def close(self) -> None:
        self.app.close()
