"""Build the FastAPI app: ``uvicorn --factory api.main:create_app`` (or ``srgan serve``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from api.deps import Services
from api.errors import install_error_handlers
from api.events import JobEvents
from api.metrics import JobsCollector, RequestMetrics
from api.openapi import install_openapi
from api.queue import JobQueue
from api.routes import health, jobs, models, web
from core.cleanup import sweep_expired
from core.jobs import JobStore, connect
from core.settings import Settings, get_settings
from core.storage import Storage

log = logging.getLogger(__name__)

SWEEP_GRACE_S = 600.0


async def _sweep_forever(services: Services) -> None:
    settings = services.settings
    grace = min(SWEEP_GRACE_S, float(settings.job_ttl_s))
    while True:
        try:
            await run_in_threadpool(sweep_expired, services.store, services.storage, grace_s=grace)
        except Exception as exc:  # noqa: BLE001 - try again next time
            log.warning("sweep of expired jobs failed: %s", exc)
        try:
            reaped = await run_in_threadpool(services.store.reap_lost, settings.resolved_worker_lost_s)
            if reaped:
                log.warning("failed %d job(s) whose worker was lost: %s", len(reaped), ", ".join(reaped))
        except Exception as exc:  # noqa: BLE001 - try again next time
            log.warning("reaping jobs of lost workers failed: %s", exc)
        await asyncio.sleep(settings.sweep_interval_s)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    registry = CollectorRegistry()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.redis_url:
            raise RuntimeError("SRGAN_REDIS_URL is not set (`srgan serve` starts an embedded Redis when it is not)")
        store = JobStore(connect(settings.redis_url), ttl_s=settings.job_ttl_s)
        queue = JobQueue(settings)
        events = JobEvents(settings.redis_url)
        services = Services(settings, store, Storage(settings.resolved_storage_dir).ensure(), queue, events)
        app.state.services = services
        collector = JobsCollector(
            store, queue_depth=lambda: queue.depth(store.redis),
            live_workers=lambda: len(store.live_workers(max_age_s=3 * settings.heartbeat_s)),
        )
        registry.register(collector)
        await events.start()
        sweeper = asyncio.create_task(_sweep_forever(services), name="srgan-sweeper")
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await events.stop()
            registry.unregister(collector)
            queue.close()
            store.redis.close()

    app = FastAPI(
        title="SRGAN super-resolution",
        version="1",
        summary="Upload an image, poll the job, download the upscaled result.",
        lifespan=lifespan,
        docs_url=None,  # served by install_openapi, with assets from the app instead of a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics_registry = registry
    install_error_handlers(app)
    install_openapi(app, keys_required=bool(settings.api_keys))
    for module in (jobs, models, health, web):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    app.add_middleware(RequestMetrics, registry=registry)
    return app
