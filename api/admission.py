"""Job admission: from a request's upload and fields to a stored, queued job (or a refusal).

The steps, in order, for ``POST /v1/jobs`` (a file or a ``url``) and each file of ``POST /v1/batches``:

1. parse the options (:func:`parse_params`: 422 on a bad one), the deadline (:func:`deadline_of`) and
   the webhook (:func:`webhook_of`);
2. idempotency: a retry with the same ``Idempotency-Key`` gets the first request's job (:func:`admit_job`,
   :func:`admit_batch`, through ``api.idempotent.claim_or_replay``);
3. read the image's header, work out the scale its asked size needs (``core.sizing``: 422 outside 1..8) and
   choose the model (:func:`choose_model`, the catalog's ``select``: with none named, the smallest native
   scale that reaches it);
4. check the limits: the result's pixels, estimated engine time (:func:`check_cost`), then the queue and the
   caller's quotas, atomically with the record (``JobStore.create`` with :func:`job_limits`);
5. accept: store the upload, write the record (``queued``), send the id to the queue (:func:`accept`).

Everything here runs in a thread (it reads files and talks to Redis); the routes only receive the
upload and shape the answer. The job's states after this: ``core.job_states``.
"""

from __future__ import annotations

import logging
import time

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import Caller, Services
from api.errors import ApiError, status_for
from api.fetch import MAX_URL_LENGTH, fetch_upload
from api.idempotent import claim_or_replay
from api.inspect import check_output, inspect_image
from api.options import parse_deadline
from api.schemas import JobOptions, JobRequest
from api.upload import Upload
from core import netguard, throughput, webhooks
from core.batches import Batch, new_batch_id
from core.catalog.catalog import ModelRef
from core.idempotency import fingerprint
from core.job_record import Job, new_job_id
from core.limits import JobLimits, Refused
from core.sizing import OutputSize
from model.errors import InvalidParameter, ModelError, SRGANError
from model.images import ImageInfo
from model.knobs import round_denoise, round_detail

log = logging.getLogger(__name__)


def parse_params(fields: dict[str, str]) -> tuple[JobRequest, JobOptions]:
    """The image's and the job's options of a form; 422 ``invalid_parameter`` naming the field."""
    image_fields, option_fields = JobOptions.split(fields)
    try:
        params, options = JobRequest.model_validate(image_fields), JobOptions.model_validate(option_fields)
        params.output_size()
    except ValidationError as exc:
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ApiError(422, "invalid_parameter", message) from None
    except InvalidParameter as exc:
        raise ApiError(422, "invalid_parameter", exc.message) from None
    return params, options


def job_limits(services: Services, caller: Caller) -> JobLimits:
    settings = services.settings
    if caller.anonymous:  # no keys, no per-key quotas; the global queue limit holds for everyone
        return JobLimits(max_queued=settings.max_queued_jobs)
    return JobLimits(max_queued=settings.max_queued_jobs, max_key_queued=settings.key_max_queued_jobs,
                     pixels_per_hour=settings.key_max_pixels_per_hour)


def choose_model(services: Services, params: JobRequest, scale: float | None) -> ModelRef:
    """The model a job with ``params`` runs to reach ``scale`` (None: the model's own); a ``detail`` needs a model
    with a detail base that is offered, an asked ``denoise`` strength (not ``auto``) one with a denoise base."""
    return services.catalog.select(model=params.model, scale=scale, detail=params.detail is not None,
                                   denoise=isinstance(params.denoise, float))


def image_params(params: JobRequest, size: OutputSize, model: ModelRef) -> dict:
    """The job record's ``params``: the asked size (nothing asked: the model's scale), model, format and knobs."""
    asked = size.params() or ({"scale": model.scale} if model.scale else {})
    return {**asked, "model": params.model if params.model and ":" in params.model else model.name,
            "format": params.format, "quality": params.quality,
            **({"detail": round_detail(params.detail)} if params.detail is not None else {}),
            **({"denoise": params.denoise if params.denoise == "auto" else round_denoise(params.denoise)}
               if params.denoise is not None else {})}


def deadline_of(services: Services, options: JobOptions, cancel_after: str | None) -> float | None:
    """When the job must end (``Cancel-After`` or ``deadline``, at most ``job_ttl_s`` away); 422 when unreadable."""
    try:
        return parse_deadline(cancel_after=cancel_after, deadline=options.deadline, now=time.time(),
                              longest_s=services.settings.job_ttl_s)
    except ValueError as exc:
        raise ApiError(422, "invalid_parameter", f"deadline: {exc}") from None


def admit_job(services: Services, upload: Upload, *, caller: Caller, idempotency_key: str | None,
           cancel_after: str | None) -> tuple[Job, bool]:
    """The job for this request and whether it is a replay (an earlier request with the same key)."""
    params, options = parse_params(upload.fields)
    deadline_at = deadline_of(services, options, cancel_after)
    extra = {"deadline_at": deadline_at, "webhook": webhook_of(services, options),
             "source": {"url": options.url} if options.url else None}
    if not idempotency_key:
        return accept(services, upload, params, new_job_id(), caller, extra), False
    keys, job_id = services.idempotency, new_job_id()
    # a URL input is the URL, not what it gives today: a retry is the same request even if the image changed
    fp = fingerprint([] if options.url else [upload.path], {**upload.fields, "cancel-after": cancel_after or ""})
    earlier = claim_or_replay(keys, caller.name, idempotency_key, fingerprint=fp, kind="job", new_id=job_id,
                              lookup=services.store.get)
    if earlier is not None:
        return earlier, True
    try:
        return accept(services, upload, params, job_id, caller, extra), False
    except BaseException:
        keys.release(caller.name, idempotency_key, job_id)
        raise


async def image_from_url(services: Services, upload: Upload) -> Upload:
    """The upload itself, or, for a form with ``url`` and no file, the image fetched from the URL."""
    url = upload.fields.get("url", "").strip()
    if upload.filename and url:
        upload.discard()
        raise ApiError(422, "invalid_parameter", "give the image as `file` or as `url`, not both")
    if upload.filename:
        return upload
    upload.discard()
    if not url:
        raise ApiError(422, "invalid_parameter", "the form has no 'file' part with the image (nor a `url`)")
    if len(url) > MAX_URL_LENGTH:
        raise ApiError(422, "invalid_parameter", f"url is longer than {MAX_URL_LENGTH} characters")
    return await run_in_threadpool(fetch_upload, url, services.storage, services.settings, upload.fields)


def webhook_of(services: Services, options: JobOptions) -> dict | None:
    """The job's ``webhook`` record, checked: the server signs webhooks, the events exist, the address is
    one we may send to."""
    if not options.webhook:
        if options.webhook_events:
            raise ApiError(422, "invalid_parameter", "webhook_events needs a webhook URL")
        return None
    try:
        webhooks.secret_key(services.settings)
        events = webhooks.parse_events(options.webhook_events)
    except webhooks.WebhookConfigError as exc:
        code = "invalid_parameter" if "event" in str(exc) else "webhooks_disabled"
        raise ApiError(422, code, str(exc)) from None
    try:
        netguard.check_url(options.webhook, netguard.Allow.parse(services.settings.outbound_allow))
    except netguard.AddressRefused as exc:
        raise ApiError(422, "webhook_refused", f"webhook: {exc}") from None
    return {"url": options.webhook, "events": events}


def check_cost(services: Services, info: ImageInfo, model: str) -> None:
    """Refuse a job whose estimated engine time cannot fit in the soft time limit (422 too_expensive)."""
    settings = services.settings
    if not settings.cost_limit_factor:
        return
    px_s = throughput.fastest(services.store.redis, model, max_age_s=settings.throughput_max_age_s)
    if px_s is None:
        return  # no worker has measured this model yet
    estimate = throughput.estimate_engine_s(info.pixels, throughput.passes_for(info.has_alpha), px_s)
    allowed = settings.cost_limit_factor * settings.soft_time_limit_s
    if estimate > allowed:
        raise ApiError(422, "too_expensive",
                       f"this {info.width}x{info.height} image would take about {estimate:.0f} s of engine time "
                       f"with {model} (the fastest worker runs {px_s:.0f} input pixels/s), over the time limit of "
                       f"{allowed:g} s; send a smaller image, or ask the operator to raise SRGAN_SOFT_TIME_LIMIT_S")


def accept(services: Services, upload: Upload, params: JobRequest, job_id: str, caller: Caller,
            extra: dict) -> Job:
    """Check the upload and its parameters, then store and queue the job (runs in a thread)."""
    settings = services.settings
    info = inspect_image(upload.path, max_input_pixels=settings.max_input_pixels)
    size = params.output_size()
    model = choose_model(services, params, size.needed_scale(info.width, info.height))
    check_output(info, size=size.result_size(info.width, info.height, model.scale or 1),
                 max_output_pixels=settings.max_output_pixels, fmt=params.format)
    check_cost(services, info, model.name)
    try:
        services.storage.adopt_input(job_id, upload.path)
    except OSError as exc:
        upload.path.unlink(missing_ok=True)
        log.warning("job %s: the upload could not be stored: %s", job_id, exc)
        raise ApiError(503, "storage_unavailable", "the upload could not be stored; try again",
                       headers={"Retry-After": "1"}) from None
    try:  # admission (queue and quotas) and the record: one atomic step
        job = services.store.create(
            job_id,
            input={"filename": upload.filename, "format": info.format.lower(), "width": info.width,
                   "height": info.height, "orientation": info.orientation, "mode": info.mode, "bit_depth": info.bits,
                   "bytes": upload.size},
            # a bare name runs the version active when the job starts (a deploy or rollback reaches queued jobs)
            params=image_params(params, size, model),
            owner=caller.name, limits=job_limits(services, caller), pixels=info.width * info.height, extra=extra,
        )
    except Refused as exc:
        services.storage.remove(job_id)
        headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
        raise ApiError(exc.status, exc.code, exc.message, headers=headers) from None
    except BaseException:
        services.storage.remove(job_id)
        raise
    try:
        services.queue.send(job_id)
    except Exception as exc:
        services.store.forget(job_id, caller.name)
        services.storage.remove(job_id)
        log.warning("job %s could not be queued: %s", job_id, exc)  # the broker's address stays in the log
        raise ApiError(503, "queue_unavailable",
                       f"the job could not be queued ({type(exc).__name__}); try again") from exc
    log.info("job %s queued for %s (%dx%d)", job_id, caller.name, info.width, info.height)
    return job


def admit_batch(services: Services, files: list[Upload], fields: dict[str, str], *, caller: Caller,
                 idempotency_key: str | None, cancel_after: str | None) -> tuple[Batch, bool]:
    params, options = parse_params(fields)
    if options.url:
        raise ApiError(422, "invalid_parameter", "a batch takes `file` parts; `url` is for single jobs")
    # the model and detail are the whole request's, checked once; a size's scale is each file's (accept)
    choose_model(services, params, params.scale)
    deadline_at = deadline_of(services, options, cancel_after)
    batch_id = new_batch_id()
    keys = services.idempotency
    if idempotency_key:
        fp = fingerprint([f.path for f in files], {**fields, "cancel-after": cancel_after or ""})
        earlier = claim_or_replay(keys, caller.name, idempotency_key, fingerprint=fp, kind="batch",
                                  new_id=batch_id, lookup=services.batches.get)
        if earlier is not None:
            return earlier, True
    try:
        extra = {"deadline_at": deadline_at, "webhook": webhook_of(services, options), "batch_id": batch_id}
        job_ids: list[str] = []
        for upload in files:
            job_ids.append(_job_for_file(services, upload, params, caller, extra, first=not job_ids))
        return services.batches.create(batch_id, job_ids, owner=caller.name), False
    except BaseException:
        if idempotency_key:
            keys.release(caller.name, idempotency_key, batch_id)
        raise


def _job_for_file(services: Services, upload: Upload, params: JobRequest, caller: Caller, extra: dict, *,
                  first: bool) -> str:
    """Queue the file's job; a file that cannot be read becomes a ``failed`` job with the error it got.

    A refusal by the queue or the key's quotas (429) refuses the whole request at the first file (nothing
    of the batch exists yet); later in the batch it fails that file's job with the refusal's code.
    """
    job_id = new_job_id()
    try:
        accept(services, upload, params, job_id, caller, extra)
    except ModelError:
        raise  # the same for every file: the request's fault, not this file's
    except (SRGANError, ApiError) as exc:
        status = exc.status if isinstance(exc, ApiError) else status_for(exc)
        if status == 503 or (status == 429 and first):
            raise
        code = exc.code
        services.store.create_failed(job_id, input={"filename": upload.filename, "bytes": upload.size},
                                     error={"code": code, "message": exc.message}, owner=caller.name,
                                     extra=extra)
    return job_id
