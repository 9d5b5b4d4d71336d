"""A Python client for the service: ``Client(url).upscale(path) -> bytes``.

It does what a careful integration does: each upload carries an ``Idempotency-Key``, so a retry after
a timeout or a dropped connection gets the job the first attempt made instead of a second one; it
waits with ``Prefer: wait`` or follows the job's Server-Sent Events for progress; it downloads the
result; connection errors, 429 and 5xx answers are retried with backoff. Only ``httpx`` is needed::

    >>> from cli.client import Client
    >>> with Client("http://127.0.0.1:8000", api_key="...") as sr:
    ...     png = sr.upscale("photo.jpg", format="png", progress=lambda p: print(f"{p:.0%}"))

``srgan upscale --server URL`` is this client on the command line.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

__all__ = ["Client", "ClientError", "JobFailed"]

RETRY_STATUSES = frozenset({429, 502, 503, 504})
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})


class ClientError(Exception):
    """The service refused a request: ``status``, the error's ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class JobFailed(Exception):
    """The job ended without a result (``failed``, ``canceled`` or ``aborted``); ``job`` is its record."""

    def __init__(self, job: dict[str, Any]) -> None:
        error = job.get("error") or {}
        super().__init__(f"job {job['id']} {job['status']}: {error.get('message') or 'no result'}")
        self.job = job


class Client:
    """One service at ``url``. ``retries``: tries after the first for a failed request (backoff from 0.5 s)."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout_s: float = 60.0, retries: int = 4,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport)
        self.retries = retries

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # --- requests with retries ---------------------------------------------------------
    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.TransportError:
                if last:
                    raise
                time.sleep(0.5 * 2**attempt)
                continue
            if response.status_code in RETRY_STATUSES and not last:
                time.sleep(_retry_after(response, 0.5 * 2**attempt))
                continue
            if response.status_code == 409 and _code(response) == "idempotency_in_progress" and not last:
                time.sleep(_retry_after(response, 1.0))
                continue
            if response.is_error:
                raise ClientError(response.status_code, _code(response), _message(response))
            return response
        raise AssertionError("unreachable")

    # --- the steps -----------------------------------------------------------------------
    def submit(self, image: str | Path | bytes | None, *, filename: str | None = None, wait_s: float = 0,
               idempotency_key: str | None = None, **params: Any) -> dict[str, Any]:
        """Upload an image (a path or bytes; or ``url=...`` with no image) and return the job.

        ``params``: the form fields (``scale`` or ``width``/``height``/``max_side``, ``model``, ``detail``,
        ``format``, ``quality``, ``deadline``, ``webhook``...).
        ``wait_s``: ask the server to answer when the job ends, if within that many seconds.
        """
        data = {k: str(v) for k, v in params.items() if v is not None}
        files: dict[str, tuple[str | None, Any] | tuple[str, bytes, str]] | None = None
        if image is not None:
            content = image if isinstance(image, bytes) else Path(image).read_bytes()
            name = filename or (Path(image).name if not isinstance(image, bytes) else "image")
            files = {"file": (name, content, "application/octet-stream")}
        else:
            files = {k: (None, v) for k, v in data.items()}
            data = {}
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        if wait_s:
            headers["Prefer"] = f"wait={wait_s:g}"
        return self._request("POST", "/v1/jobs", data=data, files=files, headers=headers).json()

    def get(self, job_id: str, *, wait_s: float = 0) -> dict[str, Any]:
        params = {"wait": wait_s} if wait_s else None
        return self._request("GET", f"/v1/jobs/{job_id}", params=params).json()

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job's events (``{"seq", "type", "status", "progress", ...}``) until its final state; a dropped
        stream is resumed with ``Last-Event-ID``."""
        last = 0
        for attempt in range(self.retries + 1):
            headers = {"Last-Event-ID": str(last)} if last else {}
            try:
                with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                      timeout=httpx.Timeout(self.http.timeout.connect, read=60.0)) as response:
                    if response.is_error:
                        response.read()
                        raise ClientError(response.status_code, _code(response), _message(response))
                    for event in _parse_sse(response.iter_lines()):
                        last = int(event["seq"])
                        yield event
                        if event["type"] == "status" and event["status"] in TERMINAL:
                            return
                return  # the server ended the stream: the job had ended before
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                time.sleep(0.5 * 2**attempt)

    def wait(self, job: dict[str, Any], *, progress: Callable[[float], None] | None = None,
             timeout_s: float = 3600) -> dict[str, Any]:
        """The job once it has ended: follows its events when ``progress`` wants them, else long-polls."""
        if job["status"] in TERMINAL:
            return job
        if progress is not None:
            for event in self.events(job["id"]):
                progress(float(event.get("progress") or 0))
            return self.get(job["id"])
        deadline = time.monotonic() + timeout_s
        while job["status"] not in TERMINAL:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job['id']} did not end in {timeout_s:g} s")
            job = self.get(job["id"], wait_s=min(30.0, max(1.0, deadline - time.monotonic())))
        return job

    def result(self, job: dict[str, Any]) -> bytes:
        """The result's bytes; JobFailed for a job that ended without one."""
        if job["status"] != "succeeded":
            raise JobFailed(job)
        return self._request("GET", job["links"]["result"]).content

    def upscale(self, image: str | Path | bytes | None, *, progress: Callable[[float], None] | None = None,
                **params: Any) -> bytes:
        """Upload, wait (or follow progress), download: the upscaled image's bytes."""
        return self.upscale_job(image, progress=progress, **params)[1]

    def upscale_job(self, image: str | Path | bytes | None, *, progress: Callable[[float], None] | None = None,
                    **params: Any) -> tuple[dict[str, Any], bytes]:
        """Like :meth:`upscale`, also returning the finished job (sizes, output file name, model)."""
        job = self.submit(image, wait_s=0 if progress else 10, **params)
        job = self.wait(job, progress=progress)
        return job, self.result(job)


def _parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield json.loads("\n".join(data))
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))


def _retry_after(response: httpx.Response, default: float) -> float:
    value = response.headers.get("retry-after", "")
    return min(30.0, float(value)) if value.replace(".", "", 1).isdigit() else default


def _error(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body.get("error", {}) if isinstance(body, dict) else {}


def _code(response: httpx.Response) -> str:
    return str(_error(response).get("code") or "error")


def _message(response: httpx.Response) -> str:
    return str(_error(response).get("message") or response.reason_phrase)
