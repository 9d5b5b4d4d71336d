"""What the API shows of a job and hands out as its result: the job's JSON, its signed link, the download.

``/v1/jobs``, ``/v1/batches`` (each of its jobs) and ``/v1/links`` (a result through a signed link) all
answer through these, so a job reads the same everywhere.
"""

from __future__ import annotations

import logging

from fastapi import Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from api.deps import Services
from api.errors import ApiError
from api.schemas import JobOut, download_name
from core.job_record import Job
from core.storage import StoredResult, content_disposition

log = logging.getLogger(__name__)


def share_link(request: Request, services: Services, job: Job) -> tuple[str, int] | None:
    """The signed result link of a succeeded job, absolute (``public_url`` or the request's address)."""
    if job.status != "succeeded":
        return None
    base = services.settings.public_url or str(request.base_url)
    return services.links.sign(job.id, base=base)


def job_out(request: Request, services: Services, job: Job) -> JobOut:
    return JobOut.from_job(job, share=share_link(request, services, job))


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
