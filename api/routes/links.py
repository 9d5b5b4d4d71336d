"""``GET /v1/links/{id}``: a job's result through a signed, expiring link; no API key needed."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import FileResponse, RedirectResponse

from api.deps import ServicesDep, reject_unknown_query
from api.errors import ApiError
from api.openapi import error_responses
from api.results import finished_result, result_file
from api.schemas import download_name
from core.job_record import is_job_id

router = APIRouter(prefix="/v1/links", tags=["jobs"], dependencies=[Depends(reject_unknown_query)])


@router.get("/{job_id}", response_class=FileResponse, summary="A result through a signed link", responses={
    200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}, "image/avif": {}},
          "description": "the upscaled image"},
    **error_responses("link_invalid", "link_expired", "not_found", "not_ready", "job_failed", "job_canceled",
                      "job_aborted", "storage_unavailable")})
def shared_result(
    services: ServicesDep,
    job_id: Annotated[str, Path(description="the job's id")],
    expires: Annotated[int, Query(description="unix time the link stops working")],
    signature: Annotated[str, Query(max_length=128, description="HMAC-SHA256 over `{id}.{expires}`")],
) -> Response:
    """The link is ``links.share`` of a succeeded job; ``403 link_invalid`` when the id, expiry or signature
    was changed, ``403 link_expired`` after its expiry. With ``s3_presign_links`` on an object store the
    answer is a ``307`` to a presigned object URL that expires with the link."""
    verdict = services.links.check(job_id, expires, signature)
    if verdict == "invalid":
        raise ApiError(403, "link_invalid", "the link's signature does not match; it was changed or is not ours")
    if verdict == "expired":
        raise ApiError(403, "link_expired", "the link has expired; ask the API for the job again for a new one")
    job = services.store.get(job_id) if is_job_id(job_id) else None
    if job is None:
        raise ApiError(404, "not_found", f"job {job_id[:64]} has expired and its result is deleted")
    if services.settings.s3_presign_links:
        finished_result(job, services)  # the same 404/409 answers as a download
        output = job.output or {}
        url = services.storage.presign_result(job.id, str(output.get("ext", "png")),
                                              expires_in_s=int(expires - time.time()),
                                              media_type=str(output.get("media_type") or "application/octet-stream"),
                                              filename=download_name(job))
        if url is not None:
            return RedirectResponse(url, status_code=307)
    return result_file(job, services)
