"""Send jobs to the workers by task name; the API never imports worker code."""

from __future__ import annotations

import redis
from celery import Celery

from core.recovery import send_job
from core.settings import Settings


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
        send_job(self.app.send_task, self.queue, job_id)

    def depth(self, client: redis.Redis) -> int:
        """Messages waiting in the broker's list for the queue (not yet taken by a worker)."""
        return int(client.llen(self.queue))

    def close(self) -> None:
        self.app.close()
