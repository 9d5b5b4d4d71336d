"""Receive a form with several ``file`` parts (a batch), each streamed into its own file."""

from __future__ import annotations

from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from api.errors import ApiError
from api.upload import ENVELOPE_BYTES, FILE_FIELD, Pace, Upload, _Receiver, stream_form, too_large
from core.storage import Storage


class _BatchReceiver(_Receiver):
    """Like the single upload's receiver, but each ``file`` part opens a new incoming file."""

    def __init__(self, storage: Storage, *, allowed: set[str], max_file: int, max_parts: int, max_files: int) -> None:
        super().__init__(None, allowed=allowed, max_file=max_file, max_parts=max_parts)  # type: ignore[arg-type]
        self.storage, self.max_files = storage, max_files
        self.files: list[Upload] = []

    def on_headers_finished(self) -> None:
        self.filename = None  # several file parts are the point here
        super().on_headers_finished()
        if self._is_file:
            if len(self.files) >= self.max_files:
                raise ApiError(422, "too_many_files", f"a batch holds at most {self.max_files} files")
            path, self.out = self.storage.open_incoming()
            self.files.append(Upload(path, self.filename or "image", 0))
            self.file_size = 0

    def on_part_end(self) -> None:
        if self._is_file:
            self.out.close()
            self.files[-1].size = self.file_size
        super().on_part_end()

    def discard(self) -> None:
        if self._is_file and self.out is not None and not self.out.closed:
            self.out.close()
        for upload in self.files:
            upload.discard()


async def receive_batch(request: Request, storage: Storage, *, allowed_fields: set[str], max_bytes: int,
                        max_total_bytes: int, max_parts: int, max_files: int,
                        pace: Pace | None = None) -> tuple[list[Upload], dict[str, str]]:
    """The uploaded files (in order) and the form's other fields; ApiError (400/408/413/415/422) otherwise."""
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(415, "unsupported_media_type", "send the images as multipart/form-data with 'file' parts")
    body_limit = max_total_bytes + ENVELOPE_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > body_limit:
        raise too_large(max_total_bytes)
    receiver = _BatchReceiver(storage, allowed=allowed_fields | {FILE_FIELD}, max_file=max_bytes,
                              max_parts=max_parts, max_files=max_files)
    callbacks = {name: getattr(receiver, name) for name in (
        "on_part_begin", "on_part_data", "on_part_end", "on_header_field", "on_header_value",
        "on_header_end", "on_headers_finished", "on_end")}
    parser = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
    try:
        await stream_form(request, parser, receiver, body_limit=body_limit, max_bytes=max_total_bytes, pace=pace)
    except BaseException:
        receiver.discard()
        raise
    if receiver.unknown:
        receiver.discard()
        raise ApiError(422, "invalid_parameter", f"unknown form field {receiver.unknown[0][:40]!r}; accepted: "
                       f"{', '.join(sorted(receiver.allowed))}")
    if not receiver.files:
        raise ApiError(422, "invalid_parameter", "the form has no 'file' parts")
    return receiver.files, receiver.fields


def discard_all(files: list[Upload]) -> None:
    for upload in files:
        Path(upload.path).unlink(missing_ok=True)
