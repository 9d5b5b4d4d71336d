"""The API's dependencies, as annotated types: route signatures read as declarations."""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass
from typing import Annotated, Protocol, TypeVar

from fastapi import Depends, Path, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.errors import ApiError
from api.events import JobEvents
from api.queue import JobQueue
from core.batches import BatchStore
from core.catalog.catalog import ModelCatalog
from core.idempotency import IdempotencyKeys
from core.job_record import Job, is_job_id
from core.jobs import JobStore
from core.limits import Limiter
from core.links import DeploymentLinks
from core.settings import ANONYMOUS, Settings, hash_api_key
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
    links: DeploymentLinks
    idempotency: IdempotencyKeys
    notify: Notifier
    batches: BatchStore
    catalog: ModelCatalog
    limiter: Limiter | None = None
    redis_down_since: float | None = None
    """``time.monotonic()`` when Redis stopped answering the API's pings; None while it answers."""


def _services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(_services)]


def _settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(_settings)]


@dataclass(frozen=True)
class Caller:
    """Who makes the request: an API key's name and hash, or ``anonymous`` when authentication is off.

    Jobs belong to the name; logs and job records carry the name, never the key.
    """

    name: str
    key_hash: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.key_hash is None


def require_api_key(request: Request, settings: SettingsDep) -> Caller:
    """Who calls; every ``/v1`` route depends on it.

    With ``api_keys`` set, ``/v1`` needs ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``, and each
    request counts against the key's ``rate_limit_per_minute`` (``429 rate_limited`` beyond it; the
    ``RateLimit-*`` headers go on every answer, see ``api.middleware``).
    """
    if not settings.api_keys:
        caller = Caller(ANONYMOUS)
    else:
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not given:
            raise ApiError(401, "unauthorized", "an API key is required (X-API-Key or Authorization: Bearer)",
                           headers={"WWW-Authenticate": "Bearer"})
        digest = hash_api_key(given).encode()
        name = None
        for key_name, key_hash in settings.api_keys.items():  # every entry compared: no early exit
            if hmac.compare_digest(digest, key_hash.encode()):
                name = key_name
        if name is None:
            raise ApiError(403, "forbidden", "the API key is not valid")
        caller = Caller(name, digest.decode())
        _count_request(request, settings, caller)
    request.state.caller = caller.name  # for logs and other middleware: the name, never the key
    return caller


def _count_request(request: Request, settings: Settings, caller: Caller) -> None:
    services: Services | None = getattr(request.app.state, "services", None)
    if not settings.rate_limit_per_minute or services is None or services.limiter is None:
        return
    decision = services.limiter.hit(caller.name, settings.rate_limit_per_minute)
    request.state.rate_limit_headers = decision.headers()
    if not decision.allowed:
        raise ApiError(429, "rate_limited", f"API key {caller.name!r} made more than {decision.limit} requests in a "
                       f"minute; retry in {decision.retry_after_s} s", headers=decision.headers())


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


T = TypeVar("T")

CallerDep = Annotated[Caller, Depends(require_api_key)]


class WorkerSupervision(Protocol):
    """What ``srgan serve`` tells the app about the workers it supervises (``app.state.worker_supervision``)."""

    def unavailable(self) -> tuple[str, float] | None:
        """Why no worker can run jobs now, and for how many more seconds; None while one can."""

    def describe(self) -> str: ...


def worker_supervision(request: Request) -> WorkerSupervision | None:
    return getattr(request.app.state, "worker_supervision", None)


def _accepting_caller(request: Request, caller: CallerDep) -> Caller:
    """The caller of a route that queues jobs: ``503 no_worker`` (``Retry-After``) while the workers that
    ``srgan serve`` supervises have used up their restart budget, instead of a job no one would run."""
    supervision = worker_supervision(request)
    down = supervision.unavailable() if supervision is not None else None
    if down is not None:
        reason, retry_after_s = down
        raise ApiError(503, "no_worker", reason, {"Retry-After": str(max(1, math.ceil(retry_after_s)))})
    return caller


AcceptingCallerDep = Annotated[Caller, Depends(_accepting_caller)]
"""``CallerDep`` for the routes that queue jobs (``POST /v1/jobs``, ``POST /v1/batches``)."""


def owned(record: T | None, caller: Caller, kind: str, record_id: str) -> T:
    """``record`` when ``caller`` made it; ``404`` otherwise, exactly as for an unknown id."""
    if record is None or (getattr(record, "owner", None) or ANONYMOUS) != caller.name:
        raise ApiError(404, "not_found", f"no {kind} {record_id[:64]!r}: unknown, or expired and deleted")
    return record


def _job(services: ServicesDep, caller: CallerDep,
         job_id: Annotated[str, Path(description="the job's id (a UUID)")]) -> Job:
    """The caller's job: another key's job is ``404`` exactly as an unknown id."""
    return owned(services.store.get(job_id) if is_job_id(job_id) else None, caller, "job", job_id)


JobDep = Annotated[Job, Depends(_job)]
