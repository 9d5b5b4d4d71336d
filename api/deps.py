"""The API's dependencies, as annotated types: route signatures read as declarations."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.errors import ApiError
from api.events import JobEvents
from api.queue import JobQueue
from core.jobs import Job, JobStore, is_job_id
from core.settings import Settings
from core.storage import Storage


@dataclass
class Services:
    """What the routes share; built once in ``api.main.create_app``'s lifespan."""

    settings: Settings
    store: JobStore
    storage: Storage
    queue: JobQueue
    events: JobEvents


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
    given = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not given:
        raise ApiError(401, "unauthorized", "an API key is required (X-API-Key or Authorization: Bearer)",
                       headers={"WWW-Authenticate": "Bearer"})
    if not any(hmac.compare_digest(given.encode(), key.encode()) for key in settings.api_keys):
        raise ApiError(403, "forbidden", "the API key is not valid")


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def reject_unknown_query(request: Request) -> None:
    """Refuse query parameters the route does not declare (``?scale=4`` on a POST is not a form field)."""
    route = request.scope.get("route")
    if not request.query_params or not isinstance(route, APIRoute):
        return
    known = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        accepted = ", ".join(sorted(known)) or "none"
        hint = " (the job's options are form fields of the multipart body)" if request.method == "POST" else ""
        raise ApiError(422, "invalid_parameter",
                       f"unknown query parameter {unknown[0][:40]!r}; accepted here: {accepted}{hint}")


def _job(services: ServicesDep, job_id: Annotated[str, Path(description="the job's id (a UUID)")]) -> Job:
    job = services.store.get(job_id) if is_job_id(job_id) else None
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id[:64]!r}: unknown, or expired and deleted")
    return job


JobDep = Annotated[Job, Depends(_job)]
