"""``worker.pipeline.render``: decode, upscale, resample, encode, with no Redis."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bench.tiny_models import make_nearest_model
from core.settings import Settings
from model.engine import Upscaler
from model.errors import Canceled, ImageTooLarge, InvalidImage
from tests.utils.service import image_bytes
from worker.pipeline import render

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory):
    path = make_nearest_model(tmp_path_factory.mktemp("m") / "n.onnx")
    return Upscaler.from_file(path, backend="onnxruntime", threads=1, tile=16, overlap=2)


@pytest.fixture
def settings():
    return Settings(_env_file=None, max_output_pixels=100_000)


def source(tmp_path, data: bytes):
    path = tmp_path / "input"
    path.write_bytes(data)
    return path


def test_render_gives_the_encoded_upscaled_image_and_timings(tmp_path, upscaler, settings):
    calls = []
    out = render(upscaler, source(tmp_path, image_bytes(40, 20, "RGBA")), {"format": "webp", "quality": 100},
                 settings, progress=lambda d, t: calls.append((d, t)))
    assert (out.media_type, out.ext, out.width, out.height, out.mode) == ("image/webp", "webp", 160, 80, "RGBA")
    img = Image.open(io.BytesIO(out.data))
    assert img.size == (160, 80)
    assert calls[-1][0] == calls[-1][1], "progress ends at done == total"
    assert set(out.timings) == {"decode_s", "engine_s", "encode_s"}


def test_requested_scale_resamples(tmp_path, upscaler, settings):
    out = render(upscaler, source(tmp_path, image_bytes(30, 10)), {"scale": 2}, settings)
    assert (out.width, out.height, out.media_type) == (60, 20, "image/png")


def test_output_limit_is_checked_before_running(tmp_path, upscaler, settings):
    ran = []
    with pytest.raises(ImageTooLarge):
        render(upscaler, source(tmp_path, image_bytes(100, 100)), {}, settings, progress=lambda d, t: ran.append(d))
    assert ran == []


def test_should_stop_cancels_between_tiles(tmp_path, upscaler, settings):
    done = []
    with pytest.raises(Canceled):
        render(upscaler, source(tmp_path, image_bytes(64, 64)), {}, settings,
               progress=lambda d, t: done.append(d), should_stop=lambda: len(done) >= 2)
    assert len(done) == 2


def test_damaged_input_is_a_typed_error(tmp_path, upscaler, settings):
    whole = image_bytes(64, 64, fmt="JPEG")
    with pytest.raises(InvalidImage):
        render(upscaler, source(tmp_path, whole[: len(whole) // 2]), {}, settings)


def test_nearest_model_output_is_exact(tmp_path, upscaler, settings):
    data = image_bytes(13, 7)
    out = render(upscaler, source(tmp_path, data), {}, settings)
    lr = np.asarray(Image.open(io.BytesIO(data)))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(out.data))), lr.repeat(4, 0).repeat(4, 1))
