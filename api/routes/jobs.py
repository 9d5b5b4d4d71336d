"""``/v1/jobs``: submit an image, follow the job, fetch the result, cancel."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import JobDep, Services, ServicesDep, reject_unknown_query, require_api_key
from api.errors import ApiError
from api.inspect import check_output, inspect_image
from api.openapi import AUTH, error_responses
from api.schemas import JobOut, JobRequest, download_name
from api.upload import Pace, Upload, receive_upload
from core import throughput
from core.catalog import select_model
from core.jobs import Job, new_job_id
from model.images import ImageInfo

router = APIRouter(prefix="/v1/jobs", tags=["jobs"],
                   dependencies=[Depends(require_api_key), Depends(reject_unknown_query)])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary", "description": "PNG, JPEG, WebP, BMP or TIFF"},
                **{name: {**JobRequest.model_json_schema()["properties"][name]} for name in JobRequest.model_fields},
            },
        }}},
    }
}
_LOCATION = {"Location": {"description": "the job's URL, `/v1/jobs/{id}`", "schema": {"type": "string"}}}
_JOB_ERRORS = error_responses(*AUTH, "not_found")


def _parse_params(fields: dict[str, str]) -> JobRequest:
    try:
        return JobRequest.model_validate(fields)
    except ValidationError as exc:
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ApiError(422, "invalid_parameter", message) from None


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


def _accept(services: Services, upload: Upload) -> Job:
    """Check the upload and its parameters, then store and queue the job (runs in a thread)."""
    settings = services.settings
    params = _parse_params(upload.fields)
    info = inspect_image(upload.path, max_input_pixels=settings.max_input_pixels)
    model = select_model(settings, model=params.model, scale=params.scale)
    scale = params.scale or model.scale
    check_output(info, scale=scale or 1, max_output_pixels=settings.max_output_pixels, fmt=params.format)
    check_cost(services, info, model.name)
    job_id = new_job_id()
    services.storage.adopt_input(job_id, upload.path)
    job = services.store.create(
        job_id,
        input={"filename": upload.filename, "format": info.format.lower(), "width": info.width,
               "height": info.height, "mode": info.mode, "bytes": upload.size},
        # a bare name runs the version active when the job starts (a deploy or rollback reaches queued jobs)
        params={"scale": scale, "model": params.model if params.model and ":" in params.model else model.name,
                "format": params.format, "quality": params.quality},
    )
    try:
        services.queue.send(job_id)
    except Exception as exc:
        services.store.forget(job_id)
        services.storage.remove(job_id)
        raise ApiError(503, "queue_unavailable", f"the job could not be queued: {exc}") from exc
    return job


@router.post("", status_code=202, response_model=JobOut, openapi_extra=_UPLOAD_BODY,
             summary="Upload an image to upscale", responses={202: {"headers": _LOCATION}, **error_responses(
                 *AUTH, "bad_multipart", "client_disconnected", "upload_timeout", "upload_too_large",
                 "unsupported_media_type", "unsupported_format", "invalid_image", "too_many_fields", "image_too_large",
                 "multi_frame", "too_expensive", "queue_full", "quota_exceeded", "queue_unavailable", "model_error")})
async def create_job(request: Request, response: Response, services: ServicesDep) -> JobOut:
    """Answers at once with the queued job; follow ``Location`` (``?wait=S`` to wait for the end)."""
    settings = services.settings
    if await run_in_threadpool(services.store.queued_count) >= settings.max_queued_jobs:
        raise ApiError(429, "queue_full", f"{settings.max_queued_jobs} jobs are already waiting; try again later",
                       headers={"Retry-After": "10"})
    pace = Pace(settings.upload_idle_timeout_s, settings.upload_min_rate_bytes_s, settings.upload_rate_grace_s)
    upload = await receive_upload(request, services.storage, allowed_fields=set(JobRequest.model_fields),
                                  max_bytes=settings.max_upload_bytes, max_parts=settings.max_form_fields, pace=pace)
    try:
        job = await run_in_threadpool(_accept, services, upload)
    finally:
        upload.discard()
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.from_job(job)


@router.get("/{job_id}", response_model=JobOut, responses=_JOB_ERRORS, summary="A job's status and progress")
async def get_job(
    job: JobDep,
    services: ServicesDep,
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for the job to finish")] = 0,
) -> JobOut:
    if wait and not job.finished:
        deadline = time.monotonic() + wait
        with services.events.watch(job.id) as changed:
            while True:
                changed.clear()  # before reading: a change published while we read still wakes the wait below
                latest = await run_in_threadpool(services.store.get, job.id)
                if latest is None:
                    raise ApiError(404, "not_found", f"job {job.id} expired")
                job = latest
                remaining = deadline - time.monotonic()
                if job.finished or remaining <= 0:
                    break
                try:  # woken by the job's next event; re-checked at least every second regardless
                    await asyncio.wait_for(changed.wait(), timeout=min(remaining, 1.0))
                except asyncio.TimeoutError:
                    pass
    return JobOut.from_job(job)


@router.get("/{job_id}/result", response_class=FileResponse, responses={
    200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}, "description": "the upscaled image"},
    **error_responses(*AUTH, "not_found", "not_ready", "job_failed", "job_canceled")}, summary="The upscaled image")
def get_result(job: JobDep, services: ServicesDep) -> FileResponse:
    if job.status != "succeeded":
        if not job.finished:
            raise ApiError(409, "not_ready", f"job {job.id} is {job.status}; the result is not ready yet",
                           headers={"Retry-After": "1"})
        detail = f": {job.error['message']}" if job.error else ""
        raise ApiError(409, f"job_{job.status}", f"job {job.id} {job.status} and has no result{detail}")
    output = job.output or {}
    path = services.storage.result_path(job.id, str(output.get("ext", "png")))
    if not path.is_file():
        raise ApiError(404, "not_found", f"the result of job {job.id} is gone (expired)")
    return FileResponse(path, media_type=output.get("media_type"), filename=download_name(job),
                        content_disposition_type="attachment")


@router.delete("/{job_id}", response_model=JobOut,
               responses={202: {"model": JobOut, "description": "a running job will end `canceled`"},
                          **error_responses(*AUTH, "not_found", "job_finished")},
               summary="Cancel a queued or running job")
def cancel_job(job: JobDep, services: ServicesDep, response: Response) -> JobOut:
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
    latest = services.store.get(job.id) or job
    return JobOut.from_job(latest)
