"""The API's dependencies, as annotated types: route signatures read as declarations."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request

from api.errors import ApiError
from api.events import JobEvents
from api.queue import JobQueue
from core.batches import BatchStore
from core.idempotency import IdempotencyKeys
from core.jobs import Job, JobStore, is_job_id
from core.links import LinkSigner
from core.settings import Settings
from core.storage import Storage
from core.webhooks import Notifier


@dataclass
class Services:
    """What the routes share; built once in ``api.main.create_app``'s lifespan."""

    settings: Settings
    store: JobStore
    storage: Storage
    queue: JobQueue
    events: JobEvents
    links: LinkSigner
    idempotency: IdempotencyKeys
    notify: Notifier
    batches: BatchStore


def _services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(_services)]


def _settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(_settings)]


def require_api_key(request: Request, settings: SettingsDep) -> None:
    """With ``api_keys`` set, ``/v1`` needs ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``."""
    if not settings.api_keys:
        return
    given = _given_key(request)
    if not given:
        raise ApiError(401, "unauthorized", "an API key is required (X-API-Key or Authorization: Bearer)",
                       headers={"WWW-Authenticate": "Bearer"})
    if not any(hmac.compare_digest(given.encode(), key.encode()) for key in settings.api_keys):
        raise ApiError(403, "forbidden", "the API key is not valid")


def _given_key(request: Request) -> str | None:
    given = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return given or None


def caller_id(request: Request, settings: SettingsDep) -> str:
    """Who is asking, for what is kept per caller (idempotency keys, a job's ``owner``).

    A hash of the API key (never the key itself), or ``anonymous`` while authentication is off.
    """
    given = _given_key(request) if settings.api_keys else None
    return "key-" + hashlib.sha256(given.encode()).hexdigest()[:16] if given else "anonymous"


CallerDep = Annotated[str, Depends(caller_id)]


def _job(services: ServicesDep, job_id: Annotated[str, Path(description="the job's id (a UUID)")]) -> Job:
    job = services.store.get(job_id) if is_job_id(job_id) else None
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id[:64]!r}: unknown, or expired and deleted")
    return job


JobDep = Annotated[Job, Depends(_job)]
