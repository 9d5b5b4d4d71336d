"""Webhooks as the Standard Webhooks convention has them (https://www.standardwebhooks.com).

A job made with ``webhook=URL`` (and ``webhook_events``, default ``completed``) has each chosen event
sent as ``POST URL`` with a JSON body ``{"type": "job.<event>", "timestamp": ..., "data": <job>}``
and the headers ``webhook-id`` (the same on every retry of one message: receivers deduplicate on
it), ``webhook-timestamp`` (unix seconds of this attempt) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 over "{id}.{timestamp}.{body}">`` with the deployment's secret,
``whsec_<base64 key>``). The workers send them (Celery task ``srgan.webhook`` on its own queue), so
nothing waits for a receiver; failures are retried with exponential backoff for
``webhook_retry_window_s``, and each event's last delivery is recorded in the job.

What is here is shared by the API (checking a job's webhook, queueing events it causes) and the
workers (queueing and sending): the message, the signature and the retry schedule.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from core.job_record import Job
from core.jobs import JobStore
from core.links import DeploymentLinks, LinkSigner
from core.settings import Settings

log = logging.getLogger(__name__)

WEBHOOK_TASK = "srgan.webhook"
EVENTS = ("started", "progress", "completed")
DEFAULT_EVENTS = ("completed",)
SECRET_PREFIX = "whsec_"


class WebhookConfigError(ValueError):
    """A job's webhook fields, or the deployment's secret, are not usable."""


def parse_events(text: str | None) -> list[str]:
    """``"started, completed"`` -> ``["started", "completed"]``; empty: the default (``completed``)."""
    if not text or not text.strip():
        return list(DEFAULT_EVENTS)
    events = [e.strip().lower() for e in text.split(",") if e.strip()]
    unknown = sorted(set(events) - set(EVENTS))
    if unknown:
        raise WebhookConfigError(f"unknown webhook event(s) {', '.join(unknown)}; choose from {', '.join(EVENTS)}")
    return [e for e in EVENTS if e in events]


def secret_key(settings: Settings) -> bytes:
    """The HMAC key of ``webhook_secret`` (``whsec_`` + base64); WebhookConfigError when unset or bad."""
    if settings.webhook_secret is None:
        raise WebhookConfigError("webhooks are off: the server has no SRGAN_WEBHOOK_SECRET")
    text = settings.webhook_secret.get_secret_value()
    text = text[len(SECRET_PREFIX):] if text.startswith(SECRET_PREFIX) else text
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        raise WebhookConfigError("SRGAN_WEBHOOK_SECRET must be whsec_ followed by base64") from None
    if len(key) < 16:
        raise WebhookConfigError("SRGAN_WEBHOOK_SECRET is too short (at least 16 bytes of key)")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(key: bytes, msg_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    return {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, msg_id, timestamp, body), "user-agent": "srgan-webhooks/1"}


def wants(job: Job, event: str) -> bool:
    return bool(job.webhook and event in job.webhook.get("events", DEFAULT_EVENTS))


def job_data(job: Job, *, signer: LinkSigner | None, public_url: str | None) -> dict[str, Any]:
    """The job as a webhook's ``data``: the fields of ``GET /v1/jobs/{id}`` a receiver acts on."""

    def ts(value: float | None) -> str | None:
        return datetime.fromtimestamp(value, timezone.utc).isoformat().replace("+00:00", "Z") if value else None

    base = (public_url or "").rstrip("/")
    links: dict[str, Any] = {"self": f"{base}/v1/jobs/{job.id}", "result": f"{base}/v1/jobs/{job.id}/result",
                             "events": f"{base}/v1/jobs/{job.id}/events"}
    if job.status == "succeeded" and signer is not None:
        links["share"], expires = signer.sign(job.id, base=base)
        links["share_expires_at"] = ts(expires)
    output = None
    if job.status == "succeeded" and job.output:
        output = {k: job.output.get(k) for k in ("width", "height", "format", "media_type", "bytes")}
    return {"id": job.id, "status": job.status, "progress": job.progress, "created_at": ts(job.created_at),
            "started_at": ts(job.started_at), "finished_at": ts(job.finished_at), "error": job.error,
            "input": job.input or None, "output": output, "model": job.model, "batch_id": job.batch_id,
            "links": links}


def message(job: Job, event: str, *, signer: LinkSigner | None, public_url: str | None) -> dict[str, Any]:
    """``{"id": msg id, "body": JSON text}``: one event's message, the same on every retry."""
    body = {"type": f"job.{event}", "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            "data": job_data(job, signer=signer, public_url=public_url)}
    return {"id": f"msg_{uuid.uuid4().hex}", "body": json.dumps(body, separators=(",", ":"))}


def backoff_s(retry: int, settings: Settings) -> float:
    """Wait before retry number ``retry`` (0-based): doubling from ``webhook_backoff_s``, capped."""
    cap = min(settings.webhook_backoff_max_s, settings.visibility_timeout_s / 2)
    return min(cap, settings.webhook_backoff_s * 2**retry)


def delivery_field(event: str) -> str:
    """The job's hash field recording the last delivery of ``event``."""
    return f"webhook:{event}"


class Notifier:
    """Queues a job's webhook messages: ``notify(job_id, "completed")``. One per process (API or worker),
    around that process's Celery ``send_task``; ``progress`` is sent at most every ``webhook_progress_every_s``."""

    def __init__(self, settings: Settings, store: JobStore, send_task: Callable[..., object]) -> None:
        self.settings, self.store, self.send_task = settings, store, send_task
        self._links: DeploymentLinks | None = None
        self._last_progress: dict[str, float] = {}

    @property
    def signer(self) -> LinkSigner:
        if self._links is None:
            self._links = DeploymentLinks(self.settings, self.store.redis)
        return self._links.signer

    def __call__(self, job_id: str, event: str) -> None:
        """Queue ``event`` of the job if its webhook asked for it (never raises: a job never fails for it)."""
        try:
            job = self.store.get(job_id)
            if job is None or not wants(job, event):
                return
            if event == "progress":
                now = time.monotonic()
                if now - self._last_progress.get(job_id, -1e9) < self.settings.webhook_progress_every_s:
                    return
                self._last_progress[job_id] = now
            elif event == "completed":
                self._last_progress.pop(job_id, None)
            queue_message(self.settings, self.store, self.send_task, job, event, self.signer)
        except Exception as exc:  # noqa: BLE001 - the job goes on; the record says nothing was queued
            log.warning("job %s: could not queue its %s webhook: %s", job_id, event, exc)


def queue_message(settings: Settings, store: JobStore, send_task: Callable[..., object], job: Job, event: str,
                  signer: LinkSigner | None) -> str:
    """Record the message as pending in the job and hand it to the delivery workers; its id."""
    msg = message(job, event, signer=signer, public_url=settings.public_url)
    store.set_fields(job.id, {delivery_field(event): {
        "id": msg["id"], "state": "pending", "attempts": 0, "last_status": None, "last_error": None,
        "queued_at": time.time()}})
    send_task(WEBHOOK_TASK, args=[job.id, event, msg["id"], msg["body"], time.time()],
              queue=settings.webhook_queue)
    return msg["id"]
