"""A corpus of bad uploads: each is answered with the right 4xx JSON before anything is queued,
and the API and the worker stay healthy after all of them."""

from __future__ import annotations

import io
import os

import httpx
import pytest
from PIL import Image

from tests.utils.service import flat_image_bytes, image_bytes, png_header_only, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LIMIT = 256 * 1024  # the service fixture's max_upload_bytes


def post(client: httpx.Client, data: bytes | None = None, name: str = "x.png", **fields: str) -> httpx.Response:
    files = {"file": (name, data, "image/png")} if data is not None else None
    return client.post("/v1/jobs", files=files, data=fields or None)


def _truncated_png() -> bytes:
    whole = image_bytes(64, 64)
    return whole[: len(whole) // 2]


def _truncated_jpeg() -> bytes:
    whole = image_bytes(64, 64, fmt="JPEG")
    return whole[: len(whole) // 2]


def _truncated(fmt: str) -> bytes:
    whole = image_bytes(64, 64, fmt=fmt)
    return whole[: len(whole) * 9 // 10]


def _jpeg_last_tenth_zeroed() -> bytes:
    whole = image_bytes(64, 64, fmt="JPEG")
    n = len(whole) // 10
    return whole[:-n] + b"\0" * n


def _frames(fmt: str) -> bytes:
    first, second = (Image.open(io.BytesIO(image_bytes(16, 16, seed=s))) for s in (1, 2))
    buf = io.BytesIO()
    first.save(buf, fmt, save_all=True, append_images=[second])
    return buf.getvalue()


def _palette_with_trns() -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(image_bytes(16, 16))).quantize(8).save(buf, "PNG", transparency=0)
    return buf.getvalue()


CORPUS = [
    # (case, file bytes, form fields, status, error code)
    ("zero bytes", b"", {}, 415, "invalid_image"),
    ("text named .png", b"hello, I am not an image\n" * 10, {}, 415, "unsupported_format"),
    ("truncated PNG", _truncated_png(), {}, 415, "invalid_image"),
    ("truncated JPEG", _truncated_jpeg(), {}, 415, "invalid_image"),
    ("JPEG with its last tenth zeroed", _jpeg_last_tenth_zeroed(), {}, 415, "invalid_image"),
    ("truncated TIFF", _truncated("TIFF"), {}, 415, "invalid_image"),
    ("truncated BMP", _truncated("BMP"), {}, 415, "invalid_image"),
    ("truncated WebP", _truncated("WEBP"), {}, 415, "invalid_image"),
    ("APNG", _frames("PNG"), {}, 422, "multi_frame"),
    ("animated WebP", _frames("WEBP"), {}, 422, "multi_frame"),
    ("multi-page TIFF", _frames("TIFF"), {}, 422, "multi_frame"),
    ("JPEG asked for a palette PNG with tRNS", _palette_with_trns(), {"format": "jpeg"}, 422, "invalid_parameter"),
    ("PNG header declaring 50000x50000", png_header_only(50000, 50000), {}, 422, "image_too_large"),
    ("result over max_output_pixels", flat_image_bytes(400, 400), {}, 422, "image_too_large"),
    ("scale 0", image_bytes(8, 8), {"scale": "0"}, 422, "invalid_parameter"),
    ("scale -1", image_bytes(8, 8), {"scale": "-1"}, 422, "invalid_parameter"),
    ("scale 8.5", image_bytes(8, 8), {"scale": "8.5"}, 422, "invalid_parameter"),
    ("scale with width", image_bytes(8, 8), {"scale": "2", "width": "16"}, 422, "invalid_parameter"),
    ("width shrinking", image_bytes(8, 8), {"width": "4"}, 422, "invalid_parameter"),
    ("scale abc", image_bytes(8, 8), {"scale": "abc"}, 422, "invalid_parameter"),
    ("scale 100", image_bytes(8, 8), {"scale": "100"}, 422, "invalid_parameter"),
    ("format gif", image_bytes(8, 8), {"format": "gif"}, 422, "invalid_parameter"),
    ("quality 0", image_bytes(8, 8), {"quality": "0"}, 422, "invalid_parameter"),
    ("unknown model", image_bytes(8, 8), {"model": "nope"}, 422, "invalid_parameter"),
    ("JPEG asked for an image with alpha", image_bytes(8, 8, "RGBA"), {"format": "jpeg"}, 422, "invalid_parameter"),
    ("misspelt field", image_bytes(8, 8), {"fromat": "png"}, 422, "invalid_parameter"),
]


@pytest.mark.parametrize(("case", "data", "fields", "status", "code"), CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_upload_is_refused_before_queueing(client, service, case, data, fields, status, code):
    before = service.redis.hget("srgan:stats", "jobs_total:queued")
    response = post(client, data, **fields)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error
    assert service.redis.hget("srgan:stats", "jobs_total:queued") == before, "nothing was queued"


def test_upload_over_the_limit_is_413_with_content_length(client):
    response = post(client, os.urandom(LIMIT + 100_000))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "upload_too_large"


def test_upload_over_the_limit_is_413_when_streamed_without_length(client):
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()

    def body():
        yield head
        for _ in range(40):  # 40 x 16 KiB = 640 KiB, no Content-Length: chunked
            yield os.urandom(16 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post("/v1/jobs", content=body(),
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "upload_too_large"


def test_thousands_of_fields_are_refused(client):
    fields = {f"f{i}": "x" for i in range(3000)}  # under the byte limit, far over the part limit
    response = client.post("/v1/jobs", data=fields, files={"file": ("x.png", image_bytes(8, 8), "image/png")})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "too_many_fields"


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (image_bytes(8, 8), "image/png", 415, "unsupported_media_type"),
        (b"--x\r\nContent-Disposition: form-data; name=\"scale\"\r\n\r\n4\r\n--x--\r\n",
         "multipart/form-data; boundary=x", 422, "invalid_parameter"),
        (b"--x\r\nthis is not a part header at all\r\n\r\n", "multipart/form-data; boundary=x", 400, "bad_multipart"),
        (b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n" + image_bytes(8, 8)
         + b"\r\n", "multipart/form-data; boundary=x", 400, "bad_multipart"),
    ],
    ids=["not multipart", "no file part", "malformed multipart", "no closing boundary"],
)
def test_malformed_requests(client, content, content_type, status, code):
    response = client.post("/v1/jobs", content=content, headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_service_is_healthy_after_the_corpus(client, service):
    worker_pid = service.worker.pid
    for _, data, fields, _, _ in CORPUS:
        post(client, data, **fields)
    assert client.get("/readyz").status_code == 200
    done = wait_for(client, post(client, image_bytes(12, 12)).headers["location"])
    assert done["status"] == "succeeded"
    assert service.worker.alive() and service.worker.pid == worker_pid
    leftovers = list((service.storage_dir / ".incoming").iterdir())
    assert leftovers == [], "refused uploads leave no files"


@pytest.mark.parametrize(
    ("method", "path", "query"),
    [
        ("POST", "/v1/jobs", {"scale": "99", "model": "nope"}),
        ("GET", "/v1/jobs/{id}", {"colour": "red"}),
        ("GET", "/v1/jobs/{id}/result", {"format": "png"}),
        ("DELETE", "/v1/jobs/{id}", {"force": "1"}),
        ("GET", "/v1/models", {"name": "x"}),
        ("GET", "/v1/jobs", {"limit": "5", "page": "2"}),
        ("GET", "/v1/jobs/{id}/events", {"after": "3"}),
        ("POST", "/v1/batches", {"scale": "2"}),
        ("GET", "/v1/batches/{id}", {"wait": "1"}),
        ("GET", "/v1/batches/{id}/archive", {"format": "tar"}),
        ("GET", "/v1/links/{id}", {"expires": "1", "signature": "x", "download": "1"}),
    ],
)
def test_unknown_query_parameters_are_refused(client, service, method, path, query):
    job_id = "00000000-0000-4000-8000-000000000000"  # the query is checked before the job is looked up
    before = service.redis.hget("srgan:stats", "jobs_total:queued")
    files = {"file": ("x.png", image_bytes(8, 8), "image/png")} if method == "POST" else None
    response = client.request(method, path.format(id=job_id), params=query, files=files)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter" and "unknown query parameter" in error["message"], error
    assert service.redis.hget("srgan:stats", "jobs_total:queued") == before


def test_declared_query_parameters_still_work(client):
    response = post(client, image_bytes(8, 8))
    assert response.status_code == 202
    assert client.get(response.headers["location"], params={"wait": "0"}).status_code == 200
    listed = client.get("/v1/jobs", params={"limit": "1", "offset": "0"})
    assert listed.status_code == 200 and len(listed.json()["jobs"]) == 1
    done = wait_for(client, response.headers["location"])
    share = done["links"]["share"]  # ?expires=&signature= are the route's own parameters
    assert done["status"] == "succeeded" and client.get(share).status_code == 200
