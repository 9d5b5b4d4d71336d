"""``core.render``: decode, upscale, resample, encode (the worker's and the CLI's use-case), and the atomic write."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from bench.tiny_models import make_nearest_model
from core.render import PixelLimits, RenderOptions, render, write_file
from core.sizing import OutputSize
from model.engine import Upscaler
from model.errors import Canceled, ImageTooLarge, InvalidImage, InvalidParameter
from tests.utils.service import image_bytes

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory):
    path = make_nearest_model(tmp_path_factory.mktemp("m") / "n.onnx")
    return Upscaler.from_file(path, backend="onnxruntime", threads=1, tile=16, overlap=2)


@pytest.fixture
def limits():
    return PixelLimits(max_input_pixels=10**6, max_output_pixels=100_000)


def source(tmp_path, data: bytes):
    path = tmp_path / "input"
    path.write_bytes(data)
    return path


def test_render_gives_the_encoded_upscaled_image_and_timings(tmp_path, upscaler, limits):
    calls = []
    out = render(upscaler, source(tmp_path, image_bytes(40, 20, "RGBA")), RenderOptions(format="webp", quality=100),
                 limits, progress=lambda d, t: calls.append((d, t)))
    assert (out.media_type, out.ext, out.width, out.height, out.mode) == ("image/webp", "webp", 160, 80, "RGBA")
    img = Image.open(io.BytesIO(out.data))
    assert img.size == (160, 80)
    assert calls[-1][0] == calls[-1][1], "progress ends at done == total"
    assert set(out.timings) == {"decode_s", "engine_s", "encode_s"}


def test_requested_scale_resamples(tmp_path, upscaler, limits):
    out = render(upscaler, source(tmp_path, image_bytes(30, 10)), RenderOptions(OutputSize.checked(scale=2)), limits)
    assert (out.width, out.height, out.media_type) == (60, 20, "image/png")
    assert out.resample == {"model_scale": 4, "size": [60, 20], "filter": "lanczos"}


@pytest.mark.parametrize(("asked", "size"), [({"scale": 2.5}, (75, 25)), ({"scale": 1.5}, (45, 15)),
                                             ({"width": 200}, (200, 67)), ({"height": 64}, (192, 64)),
                                             ({"width": 100, "height": 100}, (100, 33)),
                                             ({"max_side": 240}, (240, 80))])
def test_any_size_is_exact_and_recorded(tmp_path, upscaler, limits, asked, size):
    """A fractional scale, a width, a height, a box or a longer side: exactly that size, resampled from the x4
    output (a scale over 4 is resampled up), and the resample is in the file's metadata too."""
    out = render(upscaler, source(tmp_path, image_bytes(30, 10)), RenderOptions(OutputSize.checked(**asked)), limits,
                 provenance={"model": "nearest:1"})
    assert (out.width, out.height) == size == Image.open(io.BytesIO(out.data)).size
    assert out.resample == {"model_scale": 4, "size": list(size), "filter": "lanczos"}
    assert json.loads(Image.open(io.BytesIO(out.data)).info["srgan"])["resample"] == out.resample


def test_the_model_output_is_the_result_when_the_size_is_its_own(tmp_path, upscaler, limits):
    for size in (OutputSize(), OutputSize.checked(scale=4), OutputSize.checked(width=120)):
        out = render(upscaler, source(tmp_path, image_bytes(30, 10)), RenderOptions(size), limits)
        assert (out.width, out.height, out.resample) == (120, 40, None)


def test_a_size_beyond_8x_is_refused_before_the_engine(upscaler, limits):
    ran = []
    with pytest.raises(InvalidParameter, match="width=300: .*scale of 10"):
        render(upscaler, image_bytes(30, 10), RenderOptions(OutputSize.checked(width=300)), limits,
               progress=lambda d, t: ran.append(d))
    assert ran == []


def test_output_limit_is_checked_before_running(tmp_path, upscaler, limits):
    ran = []
    with pytest.raises(ImageTooLarge):
        render(upscaler, source(tmp_path, image_bytes(100, 100)), RenderOptions(), limits,
               progress=lambda d, t: ran.append(d))
    assert ran == []


def test_should_stop_cancels_between_tiles(tmp_path, upscaler, limits):
    done = []
    with pytest.raises(Canceled):
        render(upscaler, source(tmp_path, image_bytes(64, 64)), RenderOptions(), limits,
               progress=lambda d, t: done.append(d), should_stop=lambda: len(done) >= 2)
    assert len(done) == 2


def test_damaged_input_is_a_typed_error(tmp_path, upscaler, limits):
    whole = image_bytes(64, 64, fmt="JPEG")
    with pytest.raises(InvalidImage):
        render(upscaler, source(tmp_path, whole[: len(whole) // 2]), RenderOptions(), limits)


def test_nearest_model_output_is_exact(tmp_path, upscaler, limits):
    data = image_bytes(13, 7)
    out = render(upscaler, source(tmp_path, data), RenderOptions(), limits)
    lr = np.asarray(Image.open(io.BytesIO(data)))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(out.data))), lr.repeat(4, 0).repeat(4, 1))


def test_bytes_in_and_the_record_of_the_output(upscaler, limits):
    out = render(upscaler, image_bytes(10, 6, fmt="JPEG"), RenderOptions(), limits)
    assert out.describe() == {"format": "jpeg", "width": 40, "height": 24, "mode": "RGB", "media_type": "image/jpeg",
                              "ext": "jpg", "bytes": len(out.data), "bit_depth": 8}


def test_alpha_into_jpeg_is_refused_before_the_engine_runs(upscaler, limits):
    ran = []
    with pytest.raises(InvalidParameter, match="alpha"):
        render(upscaler, image_bytes(20, 20, "RGBA"), RenderOptions(format="jpeg"), limits,
               progress=lambda d, t: ran.append(d))
    assert ran == []


def test_write_file_makes_the_folder_and_leaves_no_temporary_file(tmp_path):
    dst = tmp_path / "new" / "deeper" / "x.png"
    write_file(dst, b"one")
    write_file(dst, b"two")
    assert dst.read_bytes() == b"two"
    assert [p.name for p in dst.parent.iterdir()] == ["x.png"]


def test_write_file_error_names_the_destination_not_a_temporary_file(tmp_path):
    blocked = tmp_path / "ro"
    blocked.mkdir()
    (blocked / "x.png").mkdir()  # a folder where the file should go: the rename fails
    with pytest.raises(OSError) as info:
        write_file(blocked / "x.png", b"data")
    assert info.value.filename == str(blocked / "x.png") and ".tmp" not in str(info.value)
    assert [p.name for p in blocked.iterdir()] == ["x.png"]
