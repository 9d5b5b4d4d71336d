"""Worker process hooks: seeding the registry, heartbeats for the API's readiness check, the reaper, and loading
the model early.

The main worker process seeds the registry with the shipped models before
its pool starts (``core.catalog.catalog.ModelCatalog.seed``: the worker's start-up
step; jobs only read the registry).

The main worker process writes a heartbeat to Redis every ``heartbeat_s``
(``/readyz`` needs one fresh heartbeat) and, in another thread, runs the
reaper every ``reaper_interval_s`` (``core.recovery``: jobs of dead workers and
lost messages are queued again; one pass at a time across all workers and the
API); each pool process starts loading the configured model as soon as it is
forked, so the first job does not pay for it.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import redis
from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown

from core import throughput
from core.catalog.catalog import ModelCatalog
from core.recovery import Reaper
from core.workers import WorkerHeartbeats
from model.engine import Upscaler
from worker.celery_app import app
from worker.tasks import upscale

log = logging.getLogger(__name__)

_stop = threading.Event()
_threads: list[threading.Thread] = []


def _heartbeat_loop(name: str) -> None:
    interval = upscale.settings.heartbeat_s
    heartbeats = WorkerHeartbeats(upscale.store.redis)
    while not _stop.is_set():
        try:
            heartbeats.beat(name)
        except Exception as exc:  # noqa: BLE001 - Redis may be away for a while; keep trying
            log.warning("heartbeat failed: %s", exc)
        _stop.wait(interval)


def _reaper_loop() -> None:
    reaper = Reaper(upscale.store, upscale.settings, app.send_task, upscale.notifier)
    while not _stop.wait(upscale.settings.reaper_interval_s):
        try:
            reaper.maybe_run()
        except Exception as exc:  # noqa: BLE001 - Redis may be away for a while; keep trying
            log.warning("the reaper's pass failed: %s", exc)


def _runs_jobs(consumer: object) -> bool:
    """False for a worker that consumes only the webhook queue: it runs no jobs, so it sends no heartbeat."""
    try:
        queues = set(consumer.app.amqp.queues.consume_from or {})  # type: ignore[attr-defined]
    except AttributeError:
        return True
    return not queues or upscale.settings.queue in queues


@worker_init.connect
def seed_registry(**_: object) -> None:
    ModelCatalog(upscale.settings).seed()


@worker_ready.connect
def start_heartbeat(sender: object = None, **_: object) -> None:
    if not _runs_jobs(sender):
        log.info("webhook delivery worker: no heartbeat (it runs no jobs)")
        return
    name = getattr(sender, "hostname", None) or "worker"
    _stop.clear()
    _threads[:] = [threading.Thread(target=_heartbeat_loop, args=(name,), name="srgan-heartbeat", daemon=True),
                   threading.Thread(target=_reaper_loop, name="srgan-reaper", daemon=True)]
    for thread in _threads:
        thread.start()


@worker_shutdown.connect
def stop_heartbeat(sender: object = None, **_: object) -> None:
    _stop.set()
    for thread in _threads:
        thread.join(timeout=2)
    try:
        WorkerHeartbeats(upscale.store.redis).gone(getattr(sender, "hostname", None) or "worker")
    except Exception as exc:  # noqa: BLE001
        log.warning("could not remove the heartbeat: %s", exc)


PROBE_SIDE = 128
"""The warm-up runs the model once on a PROBE_SIDE x PROBE_SIDE image to measure its throughput."""


def _warm_up() -> None:
    try:
        engine = upscale.engines.get(None)
        log.info("model ready: %s x%d on %s", engine.contract.name, engine.scale, engine.backend_name)
    except Exception as exc:  # noqa: BLE001 - jobs will report it as their own error
        log.error("could not load the model %r: %s", upscale.settings.model, exc)
        return
    try:
        _measure(upscale.store.redis, upscale.engines.catalog.resolve(None).name, engine)
    except Exception as exc:  # noqa: BLE001 - the API then has no estimate until the first job
        log.warning("could not measure the model's throughput: %s", exc)


def _measure(client: redis.Redis, model: str, engine: Upscaler) -> None:
    """Time one probe run through the engine and publish it (see ``core.throughput``)."""
    probe = np.random.default_rng(0).integers(0, 256, (PROBE_SIDE, PROBE_SIDE, 3), dtype=np.uint8)
    started = time.perf_counter()
    engine.upscale(probe)
    seconds = time.perf_counter() - started
    px_s = throughput.record(client, model, PROBE_SIDE * PROBE_SIDE, seconds)
    log.info("throughput of %s: %.0f input pixels/s", model, px_s or 0)


@worker_process_init.connect
def warm_up(**_: object) -> None:
    # worker_process_init must return within seconds; loading (CUDA especially) may take longer
    threading.Thread(target=_warm_up, name="srgan-warm-up", daemon=True).start()
