"""What a worker does with one job, as plain functions (the Celery task only calls :func:`process_job`).

:func:`process_job` claims the job, runs ``core.render.render`` (the use-case
``srgan upscale`` runs too) with progress and cancellation wired to the job
record, writes the result atomically and records the outcome. Running it
twice for the same job leaves one result: a finished job is left alone and
the result's name is fixed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Self

from PIL import Image
from redis import RedisError

from core import throughput, webhooks
from core.catalog.catalog import Blend, choose_denoise
from core.catalog.load import provenance
from core.job_record import Job, download_name
from core.jobs import JobStore
from core.render import PixelLimits, Rendered, RenderOptions, render
from core.settings import Settings
from core.sizing import OutputSize
from core.storage import InputMissing, Storage, StorageError
from model.engine import Upscaler
from model.errors import Canceled, SRGANError
from model.images import default_output_format
from worker.engines import EngineCache

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.1


Notify = Callable[[str, str], None]
"""``notify(job_id, event)``: queue the job's webhook for ``started``, ``progress`` or ``completed``."""


class _Heartbeat:
    """The heartbeat of one run, from a thread of the process running it: while it beats, the reaper
    (``core.recovery``) leaves the job alone; when the process dies, or the run ends or gives the job up,
    it stops, and the job is queued again once it has been silent for ``worker_lost_s``."""

    def __init__(self, store: JobStore, job_id: str, attempt: int, interval_s: float) -> None:
        self.store, self.job_id, self.attempt, self.interval_s = store, job_id, attempt, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"srgan-job-beat-{job_id[:8]}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if not self.store.touch(self.job_id, self.attempt):
                    return  # no longer this run's job: it ended, or was queued again (should_stop says so)
            except Exception as exc:  # noqa: BLE001 - Redis may be away for a while; keep trying
                log.warning("job %s: heartbeat failed: %s", self.job_id, exc)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _JobHooks:
    """Progress and cancellation callbacks bound to one run of a job (its attempt), and its time left."""

    def __init__(self, store: JobStore, job_id: str, attempt: int, delay_s: float,
                 on_progress: Callable[[], None] | None) -> None:
        self.store, self.job_id, self.attempt, self.delay_s = store, job_id, attempt, delay_s
        self.on_progress = on_progress
        self._last_write = 0.0
        self.time_left = throughput.TimeLeft()

    def begin(self, prior_s: float | None, tail_s: float) -> None:
        """The render starts now; ``prior_s``: its expected engine time from the recorded speed, if any;
        ``tail_s``: its expected encode time."""
        self.time_left = throughput.TimeLeft(prior_s, tail_s)

    def progress(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self._last_write >= PROGRESS_EVERY_S:
            eta = self.time_left.at(done, total)
            self.store.update_running(self.job_id, attempt=self.attempt, progress=round(done / max(total, 1), 4),
                                      **({"eta_s": round(eta, 1)} if eta is not None else {}))
            self._last_write = now
            if self.on_progress is not None:
                self.on_progress()
        if self.delay_s:
            time.sleep(self.delay_s)

    def should_stop(self) -> bool:
        return self.store.should_stop(self.job_id, self.attempt)


def process_job(
    job_id: str,
    *,
    store: JobStore,
    storage: Storage,
    engines: EngineCache,
    settings: Settings,
    worker: str,
    on_soft_timeout: type[BaseException] | None = None,
    notify: Notify | None = None,
    generation: int = 0,
) -> str:
    """Run one delivery of ``job_id`` (a message of ``generation``); returns what happened (a status, or why
    nothing ran).

    A ``redis.RedisError`` propagates wherever it happens (the Celery task retries the job).
    ``notify`` queues the job's webhooks (``started``, ``progress``, ``completed``). The run beats
    every ``heartbeat_s`` while it works, and every write it makes names its attempt: once the job was
    queued again (its run presumed lost), the run stops at the next tile and commits nothing.
    """
    claim = store.start(job_id, worker=worker, max_attempts=settings.max_attempts, generation=generation)
    if claim.outcome != "started":
        log.info("job %s: %s (%s), nothing to do", job_id, claim.outcome, claim.status)
        if notify is not None and claim.outcome in ("exhausted", "canceled", "aborted"):
            notify(job_id, "completed")
        return claim.outcome
    job = store.get(job_id)
    if job is None:
        return "missing"
    log.info("job %s of %s: attempt %d", job_id, job.owner or "anonymous", claim.attempts)
    notify = notify if job.webhook else None
    if notify is not None:
        notify(job_id, "started")
    with _Heartbeat(store, job_id, claim.attempts, settings.heartbeat_s):
        outcome = _run(job, claim.attempts, store=store, storage=storage, engines=engines, settings=settings,
                       on_soft_timeout=on_soft_timeout, notify=notify)
    if notify is not None and outcome in ("succeeded", "failed", "canceled"):
        notify(job_id, "completed")
    return outcome


def _run(job: Job, attempt: int, *, store: JobStore, storage: Storage, engines: EngineCache, settings: Settings,
         on_soft_timeout: type[BaseException] | None, notify: Notify | None) -> str:
    job_id = job.id
    wants_progress = notify is not None and webhooks.wants(job, "progress")
    on_progress = partial(notify, job_id, "progress") if notify is not None and wants_progress else None
    hooks = _JobHooks(store, job_id, attempt, settings.debug_tile_delay_s, on_progress)

    def end(status: str, code: str | None = None, message: str | None = None) -> str:
        return _end(store, job_id, attempt, status, code, message)

    try:
        storage.discard_partial(job_id)
        ran: list[Blend] = []

        def pick(img: Image.Image) -> tuple[Upscaler, dict[str, Any]]:
            """The engine for the decoded upload (denoise auto reads it), recorded on the job before it runs."""
            spec = job.params.get("model")
            denoise = choose_denoise(engines.catalog.resolve(spec), job.params.get("denoise"), img)
            upscaler, blend = engines.get_blend(spec, job.params.get("detail"), denoise)
            contract = upscaler.contract
            prior_s, tail_s = _expected_s(store, blend.target.name, job, settings, upscaler.scale)
            store.update_running(job_id, attempt=attempt, model={
                "name": contract.name, "version": contract.version, "scale": upscaler.scale,
                "backend": upscaler.backend_name, "precision": upscaler.precision, **blend.describe()},
                **({"eta_s": round(prior_s + tail_s, 1)} if prior_s is not None else {}))
            hooks.begin(prior_s, tail_s)  # the engine starts now
            ran.append(blend)
            return upscaler, provenance(upscaler, blend)

        t0 = time.perf_counter()
        with storage.input_file(job_id) as source:  # the file itself, or a download removed after the block
            result = render(pick, source, RenderOptions.from_params(job.params), PixelLimits.from_settings(settings),
                            progress=hooks.progress, should_stop=hooks.should_stop)
        blend = ran[-1]
        if store.cancel_requested(job_id):  # after the last tile: the result is not written at all
            raise Canceled("canceled after the last tile, before the result was committed")
        if not store.touch(job_id, attempt):  # given up while it ran (queued again): the new run writes it
            log.warning("job %s: attempt %d was superseded; its result is not written", job_id, attempt)
            return "superseded"
        storage.write_result(job_id, result.data, result.ext, media_type=result.media_type,
                             filename=download_name(job, result.ext))
        result.timings["write_s"] = round(time.perf_counter() - t0 - sum(result.timings.values()), 6)
    except Canceled:
        if job.deadline_at is not None and time.time() >= job.deadline_at and not store.cancel_requested(job_id):
            return end("canceled", "deadline_exceeded",
                        "the job's deadline passed while it was running; it was stopped at the next tile")
        return end("canceled")
    except RedisError:
        raise  # the job record is out of reach, not the job at fault: the task retries it
    except InputMissing as exc:
        return end("failed", "input_missing", f"the uploaded image is gone: {exc.filename}")
    except StorageError as exc:  # the object store failed after botocore's own retries
        return end("failed", "storage_unavailable", f"the object store failed: {exc}")
    except FileNotFoundError as exc:
        log.exception("job %s failed unexpectedly", job_id)  # e.g. a model file removed from the registry
        return end("failed", "internal_error", f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        if on_soft_timeout is not None and _caused_by(exc, on_soft_timeout):  # raised wherever the signal hit:
            return end("failed", "timeout",  # a backend or decoder may have wrapped it
                        f"the job ran longer than {settings.soft_time_limit_s:g} s and was stopped")
        if isinstance(exc, SRGANError):
            return end("failed", exc.code, exc.message)
        log.exception("job %s failed unexpectedly", job_id)
        return end("failed", "internal_error", f"{type(exc).__name__}: {exc}")
    _record_throughput(store, blend.target.name, job, result)
    output = result.describe()
    for warning in result.warnings:
        log.warning("job %s: %s", job_id, warning)
    outcome = store.finish(job_id, "succeeded", attempt=attempt, output=output, timings=result.timings,
                           warnings=result.warnings or None, resample=result.resample)
    if outcome == "canceled":  # canceled as the result was being written: it is not committed
        storage.discard_result(job_id)
    return "succeeded" if outcome == "ok" else outcome


def _expected_s(store: JobStore, name: str, job: Job, settings: Settings, scale: int) -> tuple[float | None, float]:
    """The job's engine time at the speed this process measured for the model (else the fastest worker's;
    None: none recorded), and its encode time at its output format's recorded speed (0: none recorded)."""
    pixels = int(job.input.get("width") or 0) * int(job.input.get("height") or 0)
    alpha = job.input.get("mode") in ("RGBA", "LA", "PA")
    fmt = job.params.get("format") or default_output_format(str(job.input.get("format") or "png"), alpha)
    try:
        out_w, out_h = OutputSize.from_params(job.params).result_size(
            int(job.input.get("width") or 0), int(job.input.get("height") or 0), scale)
    except (ValueError, ZeroDivisionError):  # no input size, or a size render refuses: no encode estimate
        out_w = out_h = 0
    out_pixels = out_w * out_h

    def speed(what: str) -> float | None:
        return (throughput.of_this_process(store.redis, what, max_age_s=settings.throughput_max_age_s)
                or throughput.fastest(store.redis, what, max_age_s=settings.throughput_max_age_s))

    try:
        px_s, encode_px_s = speed(name), speed(throughput.encoder(fmt))
    except Exception as exc:  # noqa: BLE001 - an estimate is not worth failing or retrying a job
        log.warning("job %s: no recorded speed to estimate its time from: %s", job.id, exc)
        return None, 0.0
    tail_s = out_pixels / encode_px_s if encode_px_s else 0.0
    if not pixels or px_s is None:
        return None, tail_s
    return throughput.estimate_engine_s(pixels, throughput.passes_for(alpha), px_s), tail_s


def _record_throughput(store: JobStore, name: str, job: Job, result: Rendered) -> None:
    """Publish this process's engine speed for the model that ran the job (what the API's cost estimate uses)."""
    pixels = int(job.input.get("width") or 0) * int(job.input.get("height") or 0)
    try:
        throughput.record(store.redis, name, pixels * throughput.passes_for(result.mode in ("RGBA", "LA")),
                          result.timings.get("engine_s", 0.0))
        throughput.record(store.redis, throughput.encoder(result.format), result.width * result.height,
                          result.timings.get("encode_s", 0.0))
    except Exception as exc:  # noqa: BLE001 - a figure for estimates is not worth failing or retrying a job
        log.warning("job %s: could not record the engine's throughput: %s", job.id, exc)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _end(store: JobStore, job_id: str, attempt: int, status: str, code: str | None = None,
         message: str | None = None) -> str:
    error = {"code": code, "message": message} if code else None
    outcome = store.finish(job_id, status, attempt=attempt, error=error)  # type: ignore[arg-type]
    if status == "failed":
        log.warning("job %s failed: %s: %s", job_id, code, message)
    return status if outcome == "ok" else outcome

