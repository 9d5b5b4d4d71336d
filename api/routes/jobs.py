"""``/v1/jobs``: submit an image, follow the job, fetch the result, cancel.

``POST`` honours ``Prefer: wait=N`` (answer when the job ends, or after N s), ``Idempotency-Key``
(a retry gets the first request's job) and ``Cancel-After``/``deadline``. Admission (options, model,
limits, idempotency, queueing) is ``api.admission``; what a job looks like and its download, ``api.results``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from api.admission import admit_job, image_from_url
from api.deps import AcceptingCallerDep, CallerDep, JobDep, Services, ServicesDep, reject_unknown_query, require_api_key
from api.errors import ApiError
from api.openapi import AUTH, error_responses, form_fields
from api.options import parse_prefer_wait
from api.results import job_out, result_file
from api.schemas import JobListOut, JobOptions, JobOut, JobRequest
from api.upload import Pace, receive_upload
from core.idempotency import MAX_KEY_LENGTH
from core.job_record import Job

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
                **form_fields(JobRequest, JobOptions),
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


@router.post("", status_code=202, response_model=JobOut, openapi_extra=_UPLOAD_BODY,
             summary="Upload an image to upscale", responses={**_CREATED, **error_responses(
                 *AUTH, "bad_multipart", "client_disconnected", "upload_timeout", "upload_too_large",
                 "unsupported_media_type", "unsupported_format", "invalid_image", "too_many_fields", "image_too_large",
                 "multi_frame", "too_expensive", "idempotency_conflict", "idempotency_in_progress", "url_refused",
                 "url_fetch_failed", "webhook_refused", "webhooks_disabled", "queue_full", "quota_exceeded",
                 "queue_unavailable", "storage_unavailable", "model_error", "no_worker")})
async def create_job(
    request: Request,
    response: Response,
    services: ServicesDep,
    caller: AcceptingCallerDep,
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
    upload = await image_from_url(services, upload)
    try:
        job, replayed = await run_in_threadpool(admit_job, services, upload, caller=caller,
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
