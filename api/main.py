"""Build the FastAPI app: ``uvicorn --factory api.main:create_app`` (or ``srgan serve``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from api.deps import Services
from api.errors import install_error_handlers
from api.events import JobEvents
from api.metrics import JobsCollector, RequestMetrics
from api.middleware import install_middleware
from api.openapi import install_openapi
from api.queue import JobQueue
from api.routes import batches, health, job_events, jobs, links, models, web
from core.batches import BatchStore
from core.catalog import store_sync
from core.catalog.announce import generation
from core.catalog.catalog import ModelCatalog
from core.cleanup import sweep_expired
from core.idempotency import IdempotencyKeys
from core.jobs import JobStore, connect
from core.limits import Limiter
from core.links import DeploymentLinks
from core.recovery import Reaper
from core.settings import Settings, get_settings
from core.storage import open_storage
from core.webhooks import Notifier
from core.workers import WorkerHeartbeats

log = logging.getLogger(__name__)

SWEEP_GRACE_S = 600.0
MODEL_SYNC_POLL_S = 1.0


async def _sweep_forever(services: Services) -> None:
    settings = services.settings
    grace = min(SWEEP_GRACE_S, float(settings.job_ttl_s))
    while True:
        try:
            await run_in_threadpool(sweep_expired, services.store, services.storage, grace_s=grace)
        except Exception as exc:  # noqa: BLE001 - try again next time
            log.warning("sweep of expired jobs failed: %s", exc)
        await asyncio.sleep(settings.sweep_interval_s)


async def _reap_forever(services: Services) -> None:
    """Jobs of dead workers and lost messages are queued again (``core.recovery``; the workers run it too)."""
    reaper = Reaper(services.store, services.settings, services.queue.app.send_task, services.notify)
    while True:
        try:
            await run_in_threadpool(reaper.maybe_run)
        except Exception as exc:  # noqa: BLE001 - try again next time
            log.warning("the reaper's pass failed: %s", exc)
        await asyncio.sleep(services.settings.reaper_interval_s)


async def _sync_models_forever(services: Services) -> None:
    """With an object store: keep this host's registry in step with the store's (``core.catalog.store_sync``),
    at once when the generation moves on Redis (a deploy), else every ``model_refresh_s``."""
    settings = services.settings
    seen: int | None = None
    synced_at = float("-inf")
    while True:
        current: int | None
        try:
            current = await run_in_threadpool(generation, services.store.redis)
        except Exception:  # noqa: BLE001 - Redis away: sync on the timer alone
            current = seen
        if current != seen or time.monotonic() - synced_at >= settings.model_refresh_s:
            try:
                await run_in_threadpool(store_sync.pull, settings)
                seen, synced_at = current, time.monotonic()
            except Exception as exc:  # noqa: BLE001 - try again next time
                log.warning("cannot sync the model registry from the store: %s", exc)
        await asyncio.sleep(MODEL_SYNC_POLL_S)


async def _watch_redis(services: Services) -> None:
    """Ping Redis every few seconds; note since when it has not answered (``/healthz`` reads it)."""
    interval = min(5.0, services.settings.dependency_grace_s / 4)
    while True:
        try:
            await run_in_threadpool(services.store.redis.ping)
            if services.redis_down_since is not None:
                log.warning("Redis answers again after %.0f s", time.monotonic() - services.redis_down_since)
            services.redis_down_since = None
        except Exception as exc:  # noqa: BLE001 - any failure counts as down
            if services.redis_down_since is None:
                services.redis_down_since = time.monotonic()
                log.warning("Redis does not answer: %s", exc)
        await asyncio.sleep(interval)


DEADLINE_CHECK_S = 0.5


async def _abort_overdue_forever(services: Services) -> None:
    """Queued jobs whose deadline passed end ``aborted`` within about half a second of it."""
    while True:
        try:
            for job_id in await run_in_threadpool(services.store.abort_overdue):
                await run_in_threadpool(services.notify, job_id, "completed")
        except Exception as exc:  # noqa: BLE001 - try again next time
            log.warning("aborting overdue jobs failed: %s", exc)
        await asyncio.sleep(DEADLINE_CHECK_S)


def create_app(settings: Settings | None = None, *, exposure_checked: bool = False) -> FastAPI:
    """The app. ``exposure_checked``: the caller (``srgan serve``) refused to bind beyond loopback without API
    keys and a host allow-list; otherwise (``uvicorn --factory``) the app refuses such requests itself."""
    settings = settings or get_settings()
    registry = CollectorRegistry()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.redis_url:
            raise RuntimeError("SRGAN_REDIS_URL is not set (`srgan serve` starts an embedded Redis when it is not)")
        catalog = ModelCatalog(settings)
        await run_in_threadpool(catalog.seed)  # the one write of the shipped models, at start-up
        store = JobStore(connect(settings.redis_url), ttl_s=settings.job_ttl_s)
        queue = JobQueue(settings)
        events = JobEvents(settings.redis_url)
        services = Services(settings, store, open_storage(settings).ensure(), queue, events,
                            DeploymentLinks(settings, store.redis),
                            IdempotencyKeys(store.redis, ttl_s=settings.idempotency_ttl_s),
                            Notifier(settings, store, queue.app.send_task), BatchStore(store.redis, store),
                            catalog, limiter=Limiter(store.redis))
        app.state.services = services
        collector = JobsCollector(
            store, queue_depth=lambda: queue.depth(store.redis),
            live_workers=lambda: len(WorkerHeartbeats(store.redis).alive(max_age_s=3 * settings.heartbeat_s)),
        )
        registry.register(collector)
        await events.start()
        sweeper = asyncio.create_task(_sweep_forever(services), name="srgan-sweeper")
        watcher = asyncio.create_task(_watch_redis(services), name="srgan-redis-watch")
        deadlines = asyncio.create_task(_abort_overdue_forever(services), name="srgan-deadlines")
        reaper = asyncio.create_task(_reap_forever(services), name="srgan-reaper")
        background = [sweeper, watcher, deadlines, reaper]
        if settings.uses_s3:
            background.append(asyncio.create_task(_sync_models_forever(services), name="srgan-model-sync"))
        try:
            yield
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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
    for module in (jobs, job_events, batches, links, models, health, web):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    install_middleware(app, settings, exposure_checked=exposure_checked)
    app.add_middleware(RequestMetrics, registry=registry)
    return app
