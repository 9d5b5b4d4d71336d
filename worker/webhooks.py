"""The Celery task that delivers webhook messages (``srgan.webhook``), and queueing them.

Deliveries run on their own queue (``webhook_queue``), consumed by a worker with a thread pool
(``srgan worker --webhooks``; ``srgan serve`` starts one), so a slow receiver never holds up a job and
a busy job worker never delays a message. A message is sent to the checked, pinned address of its
URL (``core.netguard``); a 2xx answer delivers it, anything else (an error status, a timeout, a
refused connection) retries it with exponential backoff until ``webhook_retry_window_s`` after its
first try. An address the guard refuses is not retried. Each attempt is recorded in the job.
"""

from __future__ import annotations

import logging
import time
from functools import cached_property

import httpx

from core import netguard, webhooks
from core.settings import Settings
from worker.celery_app import ServiceTask, app

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 300


class WebhookTask(ServiceTask):
    @cached_property
    def http(self) -> httpx.Client:
        timeout = self.settings.webhook_timeout_s
        return httpx.Client(timeout=httpx.Timeout(timeout, connect=timeout), trust_env=False)


def attempt(http: httpx.Client, settings: Settings, url: str, msg_id: str, body: str) -> tuple[int | None, str | None]:
    """One delivery: ``(HTTP status or None, error or None)``; raises AddressRefused for a refused address."""
    key = webhooks.secret_key(settings)
    allow = netguard.Allow.parse(settings.outbound_allow)
    try:
        response = netguard.send(http, "POST", url, allow, content=body.encode(),
                                 headers=webhooks.headers(key, msg_id, body.encode()))
        try:
            response.read()
        finally:
            response.close()
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"the receiver answered {response.status_code}"


@app.task(name=webhooks.WEBHOOK_TASK, base=WebhookTask, bind=True, max_retries=None, acks_late=True)
def deliver(self: WebhookTask, job_id: str, event: str, msg_id: str, body: str, first_try_at: float) -> str:
    """Send one message; retry it later on failure while the retry window lasts."""
    settings = self.settings
    job = self.store.get(job_id)
    url = (job.webhook or {}).get("url") if job else None
    if not url:
        return "no webhook"  # the job expired meanwhile
    attempts = self.request.retries + 1
    record = {"id": msg_id, "attempts": attempts, "last_attempt_at": time.time()}
    try:
        status, error = attempt(self.http, settings, url, msg_id, body)
    except (netguard.AddressRefused, webhooks.WebhookConfigError) as exc:
        self.store.set_fields(job_id, {webhooks.delivery_field(event): {
            **record, "state": "refused", "last_status": None, "last_error": str(exc)[:MAX_ERROR_CHARS]}})
        log.warning("job %s: %s webhook refused: %s", job_id, event, exc)
        return "refused"
    if error is None:
        self.store.set_fields(job_id, {webhooks.delivery_field(event): {
            **record, "state": "delivered", "last_status": status, "last_error": None}})
        return "delivered"
    elapsed = time.time() - first_try_at
    give_up = elapsed >= settings.webhook_retry_window_s
    self.store.set_fields(job_id, {webhooks.delivery_field(event): {
        **record, "state": "failed" if give_up else "retrying", "last_status": status, "last_error": error}})
    if give_up:
        log.warning("job %s: %s webhook failed %d times over %.0f s; giving up: %s", job_id, event, attempts,
                    elapsed, error)
        return "failed"
    countdown = webhooks.backoff_s(self.request.retries, settings)
    log.info("job %s: %s webhook attempt %d failed (%s); retry in %g s", job_id, event, attempts, error, countdown)
    raise self.retry(countdown=countdown, max_retries=None)
