"""``/v1/jobs``: submit an image, follow the job, fetch the result, cancel.

``POST`` honours ``Prefer: wait=N`` (answer when the job ends, or after N s), ``Idempotency-Key``
(a retry gets the first request's job) and ``Cancel-After``/``deadline``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import Caller, CallerDep, JobDep, Services, ServicesDep, reject_unknown_query, require_api_key
from api.errors import ApiError
from api.fetch import MAX_URL_LENGTH, fetch_upload
from api.idempotent import claim_or_replay
from api.inspect import check_output, inspect_image
from api.openapi import AUTH, error_responses
from api.options import parse_deadline, parse_prefer_wait
from api.schemas import JobListOut, JobOptions, JobOut, JobRequest, download_name
from api.upload import Pace, Upload, receive_upload
from core import netguard, throughput, webhooks
from core.catalog import ModelRef
from core.idempotency import MAX_KEY_LENGTH, fingerprint
from core.jobs import Job, new_job_id
from core.limits import JobLimits, Refused
from core.storage import StoredResult, content_disposition
from model.images import ImageInfo
from model.interpolate import round_denoise, round_detail

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"],
                   dependencies=[Depends(require_api_key), Depends(reject_unknown_query)])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "properties": {
                "file": {"type": "string", "format": "binary",
                         "description": "PNG, JPEG, WebP, BMP, TIFF, AVIF or HEIC (or give `url` instead)"},
                **{name: {**JobRequest.model_json_schema()["properties"][name]} for name in JobRequest.model_fields},
                **{name: {**JobOptions.model_json_schema()["properties"][name]} for name in JobOptions.model_fields},
            },
        }}},
    }
}
_LOCATION = {"Location": {"description": "the job's URL, `/v1/jobs/{id}`", "schema": {"type": "string"}}}
_JOB_ERRORS = error_responses(*AUTH, "not_found")
_CREATED: dict[int | str, dict[str, Any]] = {
    200: {"model": JobOut, "description": "an `Idempotency-Key` retry: the first request's job, which has ended "
          "(`Idempotent-Replayed: true`)"},
    201: {"model": JobOut, "description": "`Prefer: wait=N` and the job ended within N s: the finished job"},
    202: {"model": JobOut, "description": "the job is queued or running; follow `Location` or `links.events`",
          "headers": _LOCATION},
}
_PREFER = Header(description="`wait=N`: hold the answer until the job ends or N seconds pass (at most "
                 "max_wait_s, 60); the answer says `Preference-Applied: wait=N`")
_IDEMPOTENCY_KEY = Header(max_length=MAX_KEY_LENGTH, description="any unique string (a UUID): a retry with the "
                          "same key and the same upload, by the same API key within 24 h, returns the first "
                          "request's job; the same key with another upload is 409 idempotency_conflict")
_CANCEL_AFTER = Header(description="a duration (90s, 5m, 1h): a job not started by then ends `aborted` "
                       "without running, one still running is canceled at its next tile")


def share_link(request: Request, services: Services, job: Job) -> tuple[str, int] | None:
    """The signed result link of a succeeded job, absolute (``public_url`` or the request's address)."""
    if job.status != "succeeded":
        return None
    base = services.settings.public_url or str(request.base_url)
    return services.links.sign(job.id, base=base)


def job_out(request: Request, services: Services, job: Job) -> JobOut:
    return JobOut.from_job(job, share=share_link(request, services, job))


async def wait_for_end(services: Services, job: Job, seconds: float) -> Job:
    """The job once it has finished, or as it is after ``seconds``; woken by its events, not polling."""
    if job.finished or seconds <= 0:
        return job
    deadline = time.monotonic() + seconds
    with services.events.watch(job.id, status_only=True) as changed:
        while True:
            changed.clear()  # before reading: a change published while we read still wakes the wait below
            latest = await run_in_threadpool(services.store.get, job.id)
            if latest is None:
                raise ApiError(404, "not_found", f"job {job.id} expired")
            job = latest
            remaining = deadline - time.monotonic()
            if job.finished or remaining <= 0:
                return job
            try:  # woken by the job's next event; re-checked at least every second regardless
                await asyncio.wait_for(changed.wait(), timeout=min(remaining, 1.0))
            except asyncio.TimeoutError:
                pass


def _parse_params(fields: dict[str, str]) -> tuple[JobRequest, JobOptions]:
    image_fields, option_fields = JobOptions.split(fields)
    try:
        return JobRequest.model_validate(image_fields), JobOptions.model_validate(option_fields)
    except ValidationError as exc:
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ApiError(422, "invalid_parameter", message) from None


def _limits(services: Services, caller: Caller) -> JobLimits:
    settings = services.settings
    if caller.anonymous:  # no keys, no per-key quotas; the global queue limit holds for everyone
        return JobLimits(max_queued=settings.max_queued_jobs)
    return JobLimits(max_queued=settings.max_queued_jobs, max_key_queued=settings.key_max_queued_jobs,
                     pixels_per_hour=settings.key_max_pixels_per_hour)



def choose_model(services: Services, params: JobRequest) -> ModelRef:
    """The model a job with ``params`` runs; a ``detail`` needs a model with a detail base that is offered, an asked
    ``denoise`` strength (not ``auto``) one with a denoise base."""
    return services.catalog.select(model=params.model, scale=params.scale, detail=params.detail is not None,
                                   denoise=isinstance(params.denoise, float))


def _admit(services: Services, upload: Upload, *, caller: Caller, idempotency_key: str | None,
           cancel_after: str | None) -> tuple[Job, bool]:
    """The job for this request and whether it is a replay (an earlier request with the same key)."""
    params, options = _parse_params(upload.fields)
    try:
        deadline_at = parse_deadline(cancel_after=cancel_after, deadline=options.deadline, now=time.time(),
                                     longest_s=services.settings.job_ttl_s)
    except ValueError as exc:
        raise ApiError(422, "invalid_parameter", f"deadline: {exc}") from None
    extra = {"deadline_at": deadline_at, "webhook": _webhook(services, options),
             "source": {"url": options.url} if options.url else None}
    if not idempotency_key:
        return _accept(services, upload, params, new_job_id(), caller, extra), False
    keys, job_id = services.idempotency, new_job_id()
    # a URL input is the URL, not what it gives today: a retry is the same request even if the image changed
    fp = fingerprint([] if options.url else [upload.path], {**upload.fields, "cancel-after": cancel_after or ""})
    earlier = claim_or_replay(keys, caller.name, idempotency_key, fingerprint=fp, kind="job", new_id=job_id,
                              lookup=services.store.get)
    if earlier is not None:
        return earlier, True
    try:
        return _accept(services, upload, params, job_id, caller, extra), False
    except BaseException:
        keys.release(caller.name, idempotency_key, job_id)
        raise


async def _image_from_url(services: Services, upload: Upload) -> Upload:
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


def _webhook(services: Services, options: JobOptions) -> dict | None:
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


def _accept(services: Services, upload: Upload, params: JobRequest, job_id: str, caller: Caller,
            extra: dict) -> Job:
    """Check the upload and its parameters, then store and queue the job (runs in a thread)."""
    settings = services.settings
    info = inspect_image(upload.path, max_input_pixels=settings.max_input_pixels)
    model = choose_model(services, params)
    scale = params.scale or model.scale
    check_output(info, scale=scale or 1, max_output_pixels=settings.max_output_pixels, fmt=params.format)
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
            params={"scale": scale, "model": params.model if params.model and ":" in params.model else model.name,
                    "format": params.format, "quality": params.quality,
                    **({"detail": round_detail(params.detail)} if params.detail is not None else {}),
                    **({"denoise": params.denoise if params.denoise == "auto" else round_denoise(params.denoise)}
                       if params.denoise is not None else {})},
            owner=caller.name, limits=_limits(services, caller), pixels=info.width * info.height, extra=extra,
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


@router.post("", status_code=202, response_model=JobOut, openapi_extra=_UPLOAD_BODY,
             summary="Upload an image to upscale", responses={**_CREATED, **error_responses(
                 *AUTH, "bad_multipart", "client_disconnected", "upload_timeout", "upload_too_large",
                 "unsupported_media_type", "unsupported_format", "invalid_image", "too_many_fields", "image_too_large",
                 "multi_frame", "too_expensive", "idempotency_conflict", "idempotency_in_progress", "url_refused",
                 "url_fetch_failed", "webhook_refused", "webhooks_disabled", "queue_full", "quota_exceeded",
                 "queue_unavailable", "storage_unavailable", "model_error")})
async def create_job(
    request: Request,
    response: Response,
    services: ServicesDep,
    caller: CallerDep,
    prefer: Annotated[str | None, _PREFER] = None,
    idempotency_key: Annotated[str | None, _IDEMPOTENCY_KEY] = None,
    cancel_after: Annotated[str | None, _CANCEL_AFTER] = None,
) -> JobOut:
    """Answers at once with the queued job (202; follow ``Location``), or with ``Prefer: wait=N`` when the
    job ends within N s (201 with the finished job)."""
    settings = services.settings
    # a cheap early refusal before the upload is received; the atomic check is in the store's create
    if await run_in_threadpool(services.store.queued_count) >= settings.max_queued_jobs:
        raise ApiError(429, "queue_full", f"{settings.max_queued_jobs} jobs are already waiting; try again later",
                       headers={"Retry-After": "10"})
    upload = await receive_upload(request, services.storage,
                                  allowed_fields=set(JobRequest.model_fields) | set(JobOptions.model_fields),
                                  max_bytes=settings.max_upload_bytes, max_parts=settings.max_form_fields,
                                  require_file=False, pace=Pace.of(settings))
    upload = await _image_from_url(services, upload)
    try:
        job, replayed = await run_in_threadpool(_admit, services, upload, caller=caller,
                                                idempotency_key=idempotency_key, cancel_after=cancel_after)
    finally:
        upload.discard()
    wait = parse_prefer_wait(prefer, limit=settings.max_wait_s)
    if wait is not None:
        response.headers["Preference-Applied"] = f"wait={wait:g}"
        job = await wait_for_end(services, job, wait)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    response.status_code = (200 if replayed else 201) if job.finished else 202
    return job_out(request, services, job)


@router.get("", response_model=JobListOut, responses=error_responses(*AUTH), summary="Your jobs, newest first")
def list_jobs(
    request: Request,
    services: ServicesDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=100, description="jobs per page")] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000, description="jobs to skip (newest first)")] = 0,
) -> JobListOut:
    """The jobs of the calling API key (not yet expired); another key's jobs are never listed."""
    jobs = services.store.jobs_of(caller.name, offset=offset, limit=limit)
    return JobListOut(jobs=[job_out(request, services, job) for job in jobs], limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobOut, responses=_JOB_ERRORS, summary="A job's status and progress")
async def get_job(
    request: Request,
    job: JobDep,
    services: ServicesDep,
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for the job to finish")] = 0,
) -> JobOut:
    return job_out(request, services, await wait_for_end(services, job, wait))


@router.get("/{job_id}/result", response_class=FileResponse, responses={
    200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}, "image/avif": {}},
          "description": "the upscaled image"},
    **error_responses(*AUTH, "not_found", "not_ready", "job_failed", "job_canceled", "job_aborted",
                      "storage_unavailable")}, summary="The upscaled image")
def get_result(job: JobDep, services: ServicesDep) -> Response:
    return result_file(job, services)


def finished_result(job: Job, services: Services) -> StoredResult:
    """The stored result of a succeeded job; the 409/404 errors otherwise."""
    if job.status != "succeeded":
        if not job.finished:
            raise ApiError(409, "not_ready", f"job {job.id} is {job.status}; the result is not ready yet",
                           headers={"Retry-After": "1"})
        detail = f": {job.error['message']}" if job.error else ""
        raise ApiError(409, f"job_{job.status}", f"job {job.id} {job.status} and has no result{detail}")
    output = job.output or {}
    try:
        stored = services.storage.open_result(job.id, str(output.get("ext", "png")))
    except OSError as exc:
        log.warning("job %s: the result could not be read: %s", job.id, exc)
        raise ApiError(503, "storage_unavailable", "the result could not be read from the store; try again",
                       headers={"Retry-After": "1"}) from None
    if stored is None:
        raise ApiError(404, "not_found", f"the result of job {job.id} is gone (expired)")
    return stored


def result_file(job: Job, services: Services) -> Response:
    """The result of a succeeded job as a download (a local file as it is, an object streamed from the
    store); the 409/404 errors otherwise."""
    stored = finished_result(job, services)
    media_type = (job.output or {}).get("media_type")
    if stored.path is not None:
        return FileResponse(stored.path, media_type=media_type, filename=download_name(job),
                            content_disposition_type="attachment")
    return StreamingResponse(stored.chunks(), media_type=media_type, headers={
        "Content-Length": str(stored.size), "Content-Disposition": content_disposition(download_name(job))})


@router.delete("/{job_id}", response_model=JobOut,
               responses={202: {"model": JobOut, "description": "a running job will end `canceled`"},
                          **error_responses(*AUTH, "not_found", "job_finished")},
               summary="Cancel a queued or running job")
def cancel_job(request: Request, job: JobDep, services: ServicesDep, response: Response) -> JobOut:
    """A queued job ends ``canceled`` at once (200). A running one (202) stops before its next tile and
    ends ``canceled``: its result was not committed and never will be. A finished one is 409: a job that
    ``succeeded`` had committed its result before the cancel arrived."""
    outcome = services.store.cancel(job.id)
    if outcome == "missing":
        raise ApiError(404, "not_found", f"job {job.id} expired")
    if outcome not in ("canceled", "cancel_requested"):
        status = outcome.split(":")[-1]
        why = "; its result was committed before the cancel arrived" if status == "succeeded" else ""
        raise ApiError(409, "job_finished", f"job {job.id} already {status}{why}; nothing to cancel")
    if outcome == "cancel_requested":
        response.status_code = 202
    else:
        services.notify(job.id, "completed")
    latest = services.store.get(job.id) or job
    return job_out(request, services, latest)
