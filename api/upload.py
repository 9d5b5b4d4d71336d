"""Receive a ``multipart/form-data`` upload as a stream, with limits, straight into a file.

Nothing is held in memory but small form fields: the image part is written to
a temporary file in the storage folder as it arrives. A declared
``Content-Length`` over the limit is refused before any byte is read; an
undeclared (chunked) body is refused as soon as it passes the limit. A client
that stalls (nothing for ``idle_timeout_s``) or trickles (on average under
``min_rate`` bytes/s once ``grace_s`` has passed) is cut with ``408``, so slow
connections cannot hold temp files and sockets open.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from api.errors import ApiError
from core.settings import Settings
from core.storage import Storage

FILE_FIELD = "file"
MAX_FIELD_BYTES = 1024
MAX_HEADER_BYTES = 8192
ENVELOPE_BYTES = 64 * 1024
"""Room for boundaries, part headers and small fields on top of the image's own limit."""


@dataclass
class Upload:
    path: Path
    filename: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "upload_too_large", f"the upload is larger than the limit of {limit} bytes")


@dataclass(frozen=True)
class Pace:
    """How slow an upload may be: see ``Settings.upload_idle_timeout_s`` and its neighbours."""

    idle_timeout_s: float = 30.0
    min_rate: int = 4096
    grace_s: float = 10.0

    @classmethod
    def of(cls, settings: Settings) -> Pace:
        return cls(settings.upload_idle_timeout_s, settings.upload_min_rate_bytes_s, settings.upload_rate_grace_s)


def _too_slow(message: str) -> ApiError:
    return ApiError(408, "upload_timeout", message, headers={"Connection": "close"})


async def _paced(chunks: AsyncIterator[bytes], pace: Pace) -> AsyncIterator[bytes]:
    """``chunks`` as they come, cut with 408 when the client stalls or trickles."""
    start = time.monotonic()
    received = 0
    while True:
        waited = time.monotonic() - start
        wait = pace.idle_timeout_s
        if pace.min_rate:  # the moment the average rate would fall below the minimum
            wait = min(wait, max(0.0, pace.grace_s + received / pace.min_rate - waited))
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), timeout=wait)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            elapsed = time.monotonic() - start
            if wait >= pace.idle_timeout_s:
                raise _too_slow(f"the upload sent nothing for {pace.idle_timeout_s:g} s "
                                f"({received} bytes in {elapsed:.0f} s); it was cut") from None
            raise _too_slow(f"the upload is too slow: {received} bytes in {elapsed:.0f} s, under the minimum of "
                            f"{pace.min_rate} bytes/s; it was cut") from None
        received += len(chunk)
        yield chunk


def safe_filename(name: str) -> str:
    """The client's file name, reduced to something harmless to show and to reuse in a download name."""
    base = re.split(r"[\\/]", name)[-1]
    base = re.sub(r"[^\w.\- ]", "_", base).strip(" .")
    return base[:120] or "image"


class _Receiver:
    """python-multipart callbacks that route the file part to disk and keep small fields."""

    def __init__(self, out: BinaryIO, *, allowed: set[str], max_file: int, max_parts: int) -> None:
        self.out, self.allowed, self.max_file, self.max_parts = out, allowed, max_file, max_parts
        self.fields: dict[str, str] = {}
        self.unknown: list[str] = []
        self.filename: str | None = None
        self.file_size = 0
        self.parts = 0
        self.ended = False
        self._header_name = b""
        self._header_value = b""
        self._headers_bytes = 0
        self._disposition = b""
        self._name: str | None = None
        self._is_file = False
        self._value = bytearray()

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            raise ApiError(422, "too_many_fields", f"the form has more than {self.max_parts} parts")
        self._disposition, self._headers_bytes, self._name, self._is_file = b"", 0, None, False
        self._value = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._grow_headers(end - start)
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._grow_headers(end - start)
        self._header_value += data[start:end]

    def _grow_headers(self, n: int) -> None:
        self._headers_bytes += n
        if self._headers_bytes > MAX_HEADER_BYTES:
            raise ApiError(400, "bad_multipart", "a form part's headers are too long")

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise ApiError(400, "bad_multipart", "a form part has no name")
        name = options[b"name"].decode("utf-8", "replace")
        if name not in self.allowed:
            self.unknown.append(name)
        if name in self.fields or (name == FILE_FIELD and self.filename is not None):
            hint = " (several images make a batch: POST /v1/batches)" if name == FILE_FIELD else ""
            raise ApiError(422, "invalid_parameter", f"form field {name!r} is given more than once{hint}")
        self._name = name
        self._is_file = name == FILE_FIELD
        if self._is_file:
            self.filename = safe_filename(options.get(b"filename", b"image").decode("utf-8", "replace"))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        n = end - start
        if self._is_file:
            self.file_size += n
            if self.file_size > self.max_file:
                raise too_large(self.max_file)
            self.out.write(data[start:end])
        else:
            if len(self._value) + n > MAX_FIELD_BYTES:
                raise ApiError(422, "invalid_parameter", f"form field {self._name!r} is too long")
            self._value += data[start:end]

    def on_part_end(self) -> None:
        if self._name is not None and not self._is_file:
            self.fields[self._name] = self._value.decode("utf-8", "replace").strip()

    def on_end(self) -> None:
        self.ended = True


async def stream_form(request: Request, parser: MultipartParser, receiver: _Receiver, *, body_limit: int,
                      max_bytes: int, pace: Pace | None = None) -> None:
    """Feed the request body to ``parser``: 413 past ``body_limit``, 408 when the client stalls or trickles
    (``pace``), 400 for a malformed, unfinished (no closing boundary) or interrupted body."""
    received = 0
    try:
        async for chunk in _paced(request.stream(), pace or Pace()):
            received += len(chunk)
            if received > body_limit:
                raise too_large(max_bytes)
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise ApiError(400, "bad_multipart", f"the multipart body is malformed: {exc}") from exc
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the upload was interrupted") from None
    if not receiver.ended:
        raise ApiError(400, "bad_multipart", "the multipart body ends without its closing boundary "
                       "(the upload was cut short, or the client did not finish the form)")


async def receive_upload(
    request: Request, storage: Storage, *, allowed_fields: set[str], max_bytes: int, max_parts: int,
    require_file: bool = True, pace: Pace | None = None,
) -> Upload:
    """Stream the request's form into a file; raise ApiError (413/415/422/400/408) on anything wrong.

    ``require_file=False``: a form without a ``file`` part is fine (the image comes another way, a
    ``url`` field); its Upload has ``size`` 0 and an empty ``filename``.
    """
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(415, "unsupported_media_type",
                       "send the image as multipart/form-data with a 'file' part")
    body_limit = max_bytes + ENVELOPE_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > body_limit:
        raise too_large(max_bytes)

    path, out = storage.open_incoming()
    receiver = _Receiver(out, allowed=allowed_fields | {FILE_FIELD}, max_file=max_bytes, max_parts=max_parts)
    callbacks = {name: getattr(receiver, name) for name in (
        "on_part_begin", "on_part_data", "on_part_end", "on_header_field", "on_header_value",
        "on_header_end", "on_headers_finished", "on_end")}
    parser = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
    try:
        with out:
            await stream_form(request, parser, receiver, body_limit=body_limit, max_bytes=max_bytes, pace=pace)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if receiver.unknown:
        path.unlink(missing_ok=True)
        listed = ", ".join(sorted(receiver.allowed))
        raise ApiError(422, "invalid_parameter",
                       f"unknown form field {receiver.unknown[0][:40]!r}; accepted: {listed}")
    if receiver.filename is None:
        path.unlink(missing_ok=True)
        if not require_file:
            return Upload(path, "", 0, receiver.fields)
        raise ApiError(422, "invalid_parameter", "the form has no 'file' part with the image")
    if receiver.file_size == 0:
        path.unlink(missing_ok=True)
        raise ApiError(415, "invalid_image", "the uploaded file is empty")
    return Upload(path, receiver.filename, receiver.file_size, receiver.fields)
