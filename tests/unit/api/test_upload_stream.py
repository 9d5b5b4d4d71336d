"""The streaming multipart receiver, driven by an in-memory ASGI request (no server)."""

from __future__ import annotations

import asyncio
import time

import pytest
from starlette.requests import Request

from api.errors import ApiError
from api.upload import Pace, receive_upload, safe_filename
from core.storage import FolderStorage

pytestmark = pytest.mark.unit

BOUNDARY = "XyZ"
FIELDS = {"scale", "format", "quality", "model"}


def part(name: str, body: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + body + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def request(data: bytes, *, declare_length: bool = True, chunk: int = 1000,
            content_type: str = f"multipart/form-data; boundary={BOUNDARY}") -> tuple[Request, list[int]]:
    """A request whose body arrives in chunks; the list counts the chunks the app pulled."""
    headers = [(b"content-type", content_type.encode())]
    if declare_length:
        headers.append((b"content-length", str(len(data)).encode()))
    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)] or [b""]
    pulled: list[int] = []

    async def receive():
        pulled.append(1)
        piece = chunks[len(pulled) - 1]
        return {"type": "http.request", "body": piece, "more_body": len(pulled) < len(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/v1/jobs", "headers": headers, "query_string": b""}
    return Request(scope, receive), pulled


def receive(req: Request, storage: FolderStorage, max_bytes: int = 10_000, max_parts: int = 8):
    return asyncio.run(receive_upload(req, storage, allowed_fields=FIELDS, max_bytes=max_bytes, max_parts=max_parts))


def test_file_goes_to_disk_and_fields_are_kept(tmp_path):
    storage = FolderStorage(tmp_path)
    image = bytes(range(256)) * 20
    req, _ = request(body(part("scale", b"4"), part("file", image, "../../cat photo.png"), part("format", b" webp ")))
    upload = receive(req, storage)
    assert upload.path.read_bytes() == image and upload.size == len(image)
    assert upload.fields == {"scale": "4", "format": "webp"}
    assert upload.filename == "cat photo.png"
    assert upload.path.parent == storage.incoming_dir


def test_declared_length_over_the_limit_is_refused_before_reading(tmp_path):
    req, pulled = request(body(part("file", b"x" * 200_000, "a.png")))
    with pytest.raises(ApiError) as err:
        receive(req, FolderStorage(tmp_path), max_bytes=1000)
    assert err.value.status == 413 and pulled == []


def test_undeclared_length_is_cut_off_as_soon_as_it_passes_the_limit(tmp_path):
    storage = FolderStorage(tmp_path)
    req, pulled = request(body(part("file", b"x" * 500_000, "a.png")), declare_length=False, chunk=10_000)
    with pytest.raises(ApiError) as err:
        receive(req, storage, max_bytes=20_000)
    assert err.value.status == 413
    assert len(pulled) <= 3, "stopped reading right after the limit"
    assert list(storage.incoming_dir.iterdir()) == [], "the partial file is removed"


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (body(*[part(f"f{i}", b"1") for i in range(50)], part("file", b"img", "a.png")), 422, "too_many_fields"),
        (body(part("file", b"img", "a.png"), part("colour", b"red")), 422, "invalid_parameter"),
        (body(part("scale", b"4")), 422, "invalid_parameter"),
        (body(part("file", b"", "a.png")), 415, "invalid_image"),
        (body(part("file", b"a", "a.png"), part("file", b"b", "b.png")), 422, "invalid_parameter"),
        (body(part("file", b"img", "a.png"), part("scale", b"9" * 5000)), 422, "invalid_parameter"),
        (b"--XyZ\r\ngarbage without headers\r\n\r\n", 400, "bad_multipart"),
    ],
    ids=["too many parts", "unknown field", "no file", "empty file", "two files", "huge field", "garbage"],
)
def test_bad_forms(tmp_path, data, status, code):
    storage = FolderStorage(tmp_path)
    req, _ = request(data)
    with pytest.raises(ApiError) as err:
        receive(req, storage)
    assert (err.value.status, err.value.code) == (status, code)
    assert list(storage.incoming_dir.iterdir()) == []


def test_not_multipart_is_415(tmp_path):
    req, _ = request(b"\x89PNG...", content_type="image/png")
    with pytest.raises(ApiError) as err:
        receive(req, FolderStorage(tmp_path))
    assert err.value.status == 415


@pytest.mark.parametrize(("given", "safe"), [("C:\\Users\\me\\pic.jpg", "pic.jpg"), ("../../etc/passwd", "passwd"),
                                             ("a<b>\"c\".png", "a_b__c_.png"), ("", "image"), ("...", "image")])
def test_safe_filename(given, safe):
    assert safe_filename(given) == safe


@pytest.mark.parametrize(
    "data",
    [
        body(part("file", b"img", "a.png"))[: -len(f"--{BOUNDARY}--\r\n")],  # no closing boundary at all
        body(part("file", b"img" * 100, "a.png"))[:150],  # cut inside the file's data
        body(part("file", b"img", "a.png"))[:-4],  # cut inside the closing boundary
    ],
    ids=["no closing boundary", "cut in the data", "cut in the boundary"],
)
def test_a_body_without_its_closing_boundary_is_bad_multipart(tmp_path, data):
    storage = FolderStorage(tmp_path)
    req, _ = request(data)
    with pytest.raises(ApiError) as err:
        receive(req, storage)
    assert (err.value.status, err.value.code) == (400, "bad_multipart")
    assert "closing boundary" in err.value.message
    assert list(storage.incoming_dir.iterdir()) == []


def slow_request(data: bytes, delays: list[float]) -> Request:
    """A request whose body arrives in ``len(delays)`` pieces, each after its delay."""
    size = -(-len(data) // len(delays))
    pieces = [data[i * size:(i + 1) * size] for i in range(len(delays))]
    sent: list[int] = []

    async def receive():
        index = len(sent)
        sent.append(1)
        await asyncio.sleep(delays[index])
        return {"type": "http.request", "body": pieces[index], "more_body": index < len(pieces) - 1}

    headers = [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())]
    return Request({"type": "http", "method": "POST", "path": "/v1/jobs", "headers": headers, "query_string": b""},
                   receive)


def receive_paced(req: Request, storage: FolderStorage, pace: Pace):
    return asyncio.run(receive_upload(req, storage, allowed_fields=FIELDS, max_bytes=10**6, max_parts=8, pace=pace))


def test_an_idle_upload_is_cut_with_408_and_its_file_removed(tmp_path):
    storage = FolderStorage(tmp_path)
    data = body(part("file", b"x" * 3000, "a.png"))
    started = time.monotonic()
    with pytest.raises(ApiError) as err:
        receive_paced(slow_request(data, [0, 0, 5.0, 0]), storage, Pace(idle_timeout_s=0.3, min_rate=0, grace_s=0))
    assert (err.value.status, err.value.code) == (408, "upload_timeout")
    assert "sent nothing" in err.value.message
    assert time.monotonic() - started < 2, "cut at the idle timeout, not when the client finally sends"
    assert list(storage.incoming_dir.iterdir()) == []


def test_a_trickling_upload_is_cut_with_408_once_under_the_minimum_rate(tmp_path):
    storage = FolderStorage(tmp_path)
    data = body(part("file", b"x" * 1000, "a.png"))  # ~1.1 KB in 20 pieces of ~55 bytes every 0.1 s: ~550 B/s
    pace = Pace(idle_timeout_s=10, min_rate=2000, grace_s=0.3)
    started = time.monotonic()
    with pytest.raises(ApiError) as err:
        receive_paced(slow_request(data, [0.1] * 20), storage, pace)
    assert (err.value.status, err.value.code) == (408, "upload_timeout")
    assert "too slow" in err.value.message
    assert time.monotonic() - started < 1.5
    assert list(storage.incoming_dir.iterdir()) == []


def test_an_upload_at_a_good_pace_with_pauses_passes(tmp_path):
    data = body(part("file", b"x" * 50_000, "a.png"))
    pace = Pace(idle_timeout_s=0.5, min_rate=10_000, grace_s=0.5)
    upload = receive_paced(slow_request(data, [0.2, 0.3, 0.2, 0.1]), FolderStorage(tmp_path), pace)
    assert upload.size == 50_000
