"""``/healthz`` (the process answers), ``/readyz`` (it can do work), ``/metrics`` (Prometheus)."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import CallerDep, ServicesDep, worker_supervision
from api.openapi import AUTH, error_responses
from api.schemas import CheckOut, HealthOut, ReadyOut
from core.workers import WorkerHeartbeats

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}}, summary="Liveness")
async def healthz(request: Request) -> JSONResponse:
    """``503`` once Redis has not answered for longer than ``dependency_grace_s``: restart me."""
    services = getattr(request.app.state, "services", None)
    since = services.redis_down_since if services is not None else None
    if services is not None and since is not None:
        down_s = time.monotonic() - since
        grace = services.settings.dependency_grace_s
        if down_s > grace:
            body = HealthOut(status="failing", detail=f"Redis has not answered for {down_s:.0f} s (grace {grace:g} s)")
            return JSONResponse(body.model_dump(), status_code=503)
    supervision = worker_supervision(request)
    down = supervision.unavailable() if supervision is not None else None
    return JSONResponse(HealthOut(detail=down[0] if down else None).model_dump(exclude_none=True))


@router.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}}, summary="Readiness")
def readyz(request: Request, services: ServicesDep) -> JSONResponse:
    """Ready when Redis answers, the job storage (folder or object store) is writable and a worker has sent
    a fresh heartbeat."""
    checks: dict[str, CheckOut] = {}
    try:
        services.store.redis.ping()
        checks["redis"] = CheckOut(ok=True, detail="answers")
        workers = WorkerHeartbeats(services.store.redis).alive(max_age_s=3 * services.settings.heartbeat_s)
        checks["workers"] = CheckOut(ok=bool(workers), detail=f"{len(workers)} alive")
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        # the error's kind only: its text names the internal Redis address (and the log has it)
        log.warning("readiness: Redis does not answer: %s", exc)
        checks["redis"] = CheckOut(ok=False, detail=f"does not answer ({type(exc).__name__})")
        checks["workers"] = CheckOut(ok=False, detail="unknown: Redis does not answer")
    supervision = worker_supervision(request)
    if supervision is not None:  # `srgan serve`'s own workers: say why none runs, not only that none beats
        down = supervision.unavailable()
        checks["supervisor"] = CheckOut(ok=down is None, detail=down[0] if down else supervision.describe())
    try:
        services.storage.check_writable()
        checks["storage"] = CheckOut(ok=True, detail="writable")
    except OSError as exc:
        log.warning("readiness: the storage (%s) is not writable: %s", services.storage.describe(), exc)
        checks["storage"] = CheckOut(ok=False, detail=f"not writable ({exc.strerror or type(exc).__name__})")
    ready = all(c.ok for c in checks.values())
    body = ReadyOut(status="ready" if ready else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses=error_responses(*AUTH))
def metrics(request: Request, _: CallerDep) -> Response:
    """With API keys on, scrape it with one (``Authorization: Bearer KEY``): it shows the whole service."""
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
