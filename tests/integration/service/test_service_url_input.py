"""`url` inputs: the server fetches the image with an upload's limits and the outbound address guard."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from PIL import Image

from tests.utils.receiver import Receiver, Reply
from tests.utils.service import LiveApi, image_bytes, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PNG = image_bytes(30, 20, seed=9)
JPEG = image_bytes(64, 64, fmt="JPEG", seed=9)


def _apng() -> bytes:
    first, second = (Image.open(io.BytesIO(image_bytes(16, 16, seed=s))) for s in (1, 2))
    buf = io.BytesIO()
    first.save(buf, "PNG", save_all=True, append_images=[second])
    return buf.getvalue()


def serve(request):
    path = request.path
    if path == "/cat.png":
        return Reply(200, PNG, {"Content-Type": "image/png"})
    if path == "/text":
        return Reply(200, b"hello, not an image", {"Content-Type": "image/png"})
    if path == "/big.png":
        return Reply(200, b"\x00" * (300 * 1024))
    if path == "/cut.jpg":
        return Reply(200, JPEG[: len(JPEG) * 9 // 10], {"Content-Type": "image/jpeg"})
    if path == "/anim.png":
        return Reply(200, _apng(), {"Content-Type": "image/png"})
    if path == "/slow.png":
        return Reply(200, PNG, delay_s=2.5)
    if path == "/hop":
        return Reply(302, b"", {"Location": "/cat.png"})
    if path == "/loop":
        return Reply(302, b"", {"Location": "/loop"})
    if path == "/to-private":
        return Reply(302, b"", {"Location": "http://127.0.0.2:9/secret"})
    if path == "/to-metadata":
        return Reply(307, b"", {"Location": "http://169.254.169.254/latest/meta-data/"})
    return Reply(404, b"no")


@pytest.fixture(scope="module")
def files() -> Iterator[Receiver]:
    with Receiver(serve) as receiver:
        yield receiver


@pytest.fixture(scope="module")
def allowed_api(service, make_settings) -> Iterator[LiveApi]:
    """An API on the service's Redis and storage that may fetch from 127.0.0.1 (and only that loopback address)."""
    settings = make_settings(service.settings.redis_url, data_dir=service.settings.data_dir,
                             max_upload_bytes=256 * 1024, outbound_allow=["127.0.0.1"], fetch_timeout_s=1.0)
    api = LiveApi(settings).start()
    yield api
    api.stop()


def post_form(client, **fields):
    # multipart without a file part: httpx sends multipart only with files, so add the fields as parts
    return client.post("/v1/jobs", files={name: (None, str(value)) for name, value in fields.items()})


def test_an_image_fetched_from_a_url_is_upscaled(allowed_api, files):
    with allowed_api.client() as c:
        response = post_form(c, url=files.url + "/cat.png", format="png")
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["source"] == {"url": files.url + "/cat.png"}
        assert job["input"]["filename"] == "cat.png" and job["input"]["width"] == 30
        done = wait_for(c, job["links"]["self"])
        assert done["status"] == "succeeded" and done["output"]["width"] == 120
        assert c.get(done["links"]["result"]).headers["content-type"] == "image/png"
        hopped = post_form(c, url=files.url + "/hop")
        assert hopped.status_code == 202 and hopped.json()["input"]["width"] == 30
        keyed = c.post("/v1/jobs", files={"url": (None, files.url + "/cat.png")}, headers={"Idempotency-Key": "u1"})
        again = c.post("/v1/jobs", files={"url": (None, files.url + "/cat.png")}, headers={"Idempotency-Key": "u1"})
        assert again.headers["idempotent-replayed"] == "true" and again.json()["id"] == keyed.json()["id"]


def test_a_url_to_a_refused_address_is_never_requested(client, files):
    before = len(files.received)
    for url in (files.url + "/cat.png",          # loopback: the shared service allows nothing
                "http://10.11.12.13/cat.png", "http://169.254.169.254/latest/meta-data/",
                "http://[::1]/x.png", "file:///etc/passwd", "http://localhost/x.png"):
        response = post_form(client, url=url)
        assert response.status_code == 422, (url, response.text)
        assert response.json()["error"]["code"] == "url_refused", url
    assert len(files.received) == before, "no request reached the refused address"


def test_redirects_are_checked_again_and_limited(allowed_api, files):
    with allowed_api.client() as c:
        for path in ("/to-private", "/to-metadata"):
            response = post_form(c, url=files.url + path)
            assert (response.status_code, response.json()["error"]["code"]) == (422, "url_refused"), path
        looped = post_form(c, url=files.url + "/loop")
        assert (looped.status_code, looped.json()["error"]["code"]) == (422, "url_fetch_failed")
        assert "redirects" in looped.json()["error"]["message"]


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/big.png", 413, "upload_too_large"),
    ("/text", 415, None),
    ("/cut.jpg", 415, "invalid_image"),  # the upload's integrity check: a cut JPEG is refused, not a grey job
    ("/anim.png", 422, "multi_frame"),
    ("/missing.png", 422, "url_fetch_failed"),
    ("/slow.png", 422, "url_fetch_failed"),
])
def test_an_upload_s_limits_hold_for_urls(allowed_api, files, path, status, code):
    with allowed_api.client() as c:
        response = post_form(c, url=files.url + path)
        assert response.status_code == status, response.text
        if code:
            assert response.json()["error"]["code"] == code


def test_file_and_url_together_or_neither(allowed_api, files):
    with allowed_api.client() as c:
        both = c.post("/v1/jobs", data={"url": files.url + "/cat.png"}, files={"file": ("a.png", PNG, "image/png")})
        assert both.status_code == 422 and "not both" in both.json()["error"]["message"]
        neither = post_form(c, scale=2)
        assert neither.status_code == 422 and "url" in neither.json()["error"]["message"]
        assert post_form(c, url="x" * 1001).status_code == 422
