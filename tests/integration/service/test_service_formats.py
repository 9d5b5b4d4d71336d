"""Formats through the service (real HTTP, Redis and a worker running the exact nearest model): a 16-bit PNG
comes back 16-bit; HEIC and AVIF photos (made here with the plugins' encoders) are accepted and turned by their
EXIF orientation; AVIF is an output format; an 8-bit output of a 16-bit input says so in the job record."""

from __future__ import annotations

import io

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from tests.utils.service import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def submit(client, data: bytes, name: str, **fields):
    response = client.post("/v1/jobs", files={"file": (name, data, "application/octet-stream")},
                           data={k: str(v) for k, v in fields.items()})
    assert response.status_code == 202, response.text
    return response.json(), wait_for(client, response.headers["location"])


def gradient16() -> np.ndarray:
    x = np.linspace(0, 65535, 24 * 40).reshape(24, 40)
    return np.stack([x, x[::-1], 65535 - x], -1).astype(np.uint16)


def test_a_16_bit_png_comes_back_16_bit(client):
    src = gradient16()
    queued, done = submit(client, bytes(imagecodecs.png_encode(src)), "scan.png")
    assert queued["input"]["bit_depth"] == 16
    assert done["status"] == "succeeded", done
    assert done["output"]["bit_depth"] == 16 and done["warnings"] == []
    out = imagecodecs.png_decode(client.get(done["links"]["result"]).content)
    assert out.dtype == np.uint16
    assert min(len(np.unique(out[..., c])) for c in range(3)) > 256
    np.testing.assert_array_equal(out[::4, ::4], src)


def test_a_16_bit_png_asked_as_jpeg_says_it_holds_8_bits(client):
    _, done = submit(client, bytes(imagecodecs.png_encode(gradient16())), "scan.png", format="jpeg")
    assert done["status"] == "succeeded", done
    assert done["output"]["bit_depth"] == 8
    assert any("8 bits per channel" in w for w in done["warnings"])


def photo() -> Image.Image:
    y, x = np.mgrid[0:24, 0:40]
    arr = np.stack([x * 3, y * 4, (x + y) * 2], -1).astype(np.uint8)
    arr[:6, :10] = 255  # a white top-left corner, so the orientation shows
    return Image.fromarray(arr)


@pytest.mark.parametrize(("fmt", "name", "media_type"), [("HEIF", "IMG_0001.HEIC", "image/jpeg"),
                                                         ("AVIF", "IMG_0002.avif", "image/avif")])
def test_phone_photos_upscale_turned_upright(client, fmt, name, media_type):
    exif = Image.Exif()
    exif[0x0112] = 6  # the phone was held upright
    buf = io.BytesIO()
    photo().save(buf, format=fmt, exif=exif.tobytes(), quality=95)
    queued, done = submit(client, buf.getvalue(), name)
    assert queued["input"]["format"] == fmt.lower()
    assert (queued["input"]["width"], queued["input"]["height"]) == (24, 40)
    assert done["status"] == "succeeded", done
    result = client.get(done["links"]["result"])
    assert result.headers["content-type"] == media_type
    out = Image.open(io.BytesIO(result.content))
    assert out.size == (96, 160)
    arr = np.asarray(out.convert("RGB")).astype(int)
    assert arr[:8, -8:].mean() > 240 and arr[-8:, :8].mean() < 160  # the white corner is at the top right


def test_avif_is_offered_as_an_output_format(client):
    buf = io.BytesIO()
    photo().save(buf, format="PNG")
    _, done = submit(client, buf.getvalue(), "cat.png", format="avif", quality=80)
    assert done["status"] == "succeeded", done
    result = client.get(done["links"]["result"])
    assert result.headers["content-type"] == "image/avif"
    assert 'filename="cat_x4.avif"' in result.headers["content-disposition"]
    assert Image.open(io.BytesIO(result.content)).format == "AVIF"


def test_a_running_job_says_how_long_it_has_left(client):
    """``eta_s`` from the worker's measured speed on the job's own tiles: there while running, on its progress
    events too, gone once it ended; a tile delay of 20 ms on 25 tiles leaves it between 0 and the whole run."""
    import time

    from tests.utils.service import image_bytes

    response = client.post("/v1/jobs", files={"file": ("big.png", image_bytes(160, 160), "image/png")})
    location = response.headers["location"]
    etas: list[float] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = client.get(location).json()
        if job["status"] == "running" and job["progress"] > 0:
            etas.append(job["eta_s"])
        if job["status"] == "succeeded":
            break
        time.sleep(0.05)
    assert job["status"] == "succeeded" and job["eta_s"] is None
    assert etas and all(eta is not None and 0 <= eta < 30 for eta in etas), etas
    events = client.get(location + "/events").text
    progress = [line for line in events.splitlines() if line.startswith("data:") and '"progress"' in line
                and '"type":"progress"' in line.replace(" ", "")]
    assert progress and all('"eta_s"' in line for line in progress), progress[:3]
