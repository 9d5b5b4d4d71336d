"""16 bits per channel kept end to end (PNG, TIFF), and the phone formats: HEIC and AVIF in, AVIF out."""

from __future__ import annotations

import io

import imagecodecs
import numpy as np
import pytest
from PIL import Image, ImageCms

from core.render import PixelLimits, RenderOptions, render
from model.engine import Upscaler
from model.errors import UnsupportedFormat
from model.images import deep_pixels, heif_available, read_header, read_image, resample

pytestmark = pytest.mark.unit
LIMITS = PixelLimits(10_000_000, 1_000_000_000)


@pytest.fixture(scope="module")
def up(nearest_path):
    return Upscaler.from_file(nearest_path, backend="onnxruntime", tile=16, overlap=4)


def gradient16(h: int = 20, w: int = 36) -> np.ndarray:
    """An RGB gradient with more than 256 distinct levels in every channel."""
    x = np.linspace(0, 65535, w * h).reshape(h, w)
    return np.stack([x, x[::-1], 65535 - x], -1).astype(np.uint16)


def png16(arr: np.ndarray) -> bytes:
    return bytes(imagecodecs.png_encode(np.ascontiguousarray(arr)))


def levels(arr: np.ndarray) -> list[int]:
    return [len(np.unique(arr[..., c])) for c in range(arr.shape[-1])]


def test_a_16_bit_png_comes_back_16_bit_with_its_levels(up):
    src = gradient16()
    assert read_header(png16(src), max_pixels=10**7).bits == 16
    result = render(up, png16(src), RenderOptions(), LIMITS, provenance={"model": "nearest"})
    assert (result.format, result.bit_depth, result.describe()["bit_depth"]) == ("png", 16, 16)
    out = imagecodecs.png_decode(result.data)
    assert out.dtype == np.uint16 and min(levels(out)) > 256
    np.testing.assert_array_equal(out[::4, ::4], src)  # the nearest model is exact: every 16-bit level kept
    reread = Image.open(io.BytesIO(result.data))
    assert "nearest" in reread.info["srgan"]  # the provenance chunk is written beside the 16-bit pixels
    assert result.warnings == []


def test_icc_and_exif_travel_with_16_bit_pixels(up):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    png = png16(gradient16())
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    img = read_image(png, max_pixels=10**7)
    img.info.update(icc_profile=icc, exif=exif.tobytes())
    from model.images import encode_image, upscale_image

    data, _ = encode_image(upscale_image(up, img), "png")
    back = Image.open(io.BytesIO(data))
    assert back.info["icc_profile"] == icc
    assert back.getexif()[0x010F] == "PhoneMaker"
    assert imagecodecs.png_decode(data).dtype == np.uint16


@pytest.mark.parametrize("bands", [1, 2, 4])
def test_grey_grey_alpha_and_rgba_16_bit(up, bands):
    src = gradient16()
    src = np.ascontiguousarray(np.dstack([src, src[..., :1]])[..., :bands] if bands == 4 else src[..., :bands])
    result = render(up, png16(src[..., 0] if bands == 1 else src), RenderOptions(), LIMITS)
    out = imagecodecs.png_decode(result.data).reshape(80, 144, bands)
    assert result.bit_depth == 16 and result.mode == {1: "L", 2: "LA", 4: "RGBA"}[bands]
    np.testing.assert_array_equal(out[::4, ::4], src)


def test_a_16_bit_tiff_keeps_its_orientation_and_bits(up):
    grey = gradient16()[..., 0]
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="TIFF", tiffinfo={274: 6})  # I;16, turned a quarter when displayed
    result = render(up, buf.getvalue(), RenderOptions(), LIMITS)
    out = imagecodecs.png_decode(result.data)
    assert (result.width, result.height, result.bit_depth) == (80, 144, 16)
    np.testing.assert_array_equal(out[::4, ::4], np.rot90(grey, -1))


def test_an_8_bit_output_format_says_the_bits_were_reduced(up):
    result = render(up, png16(gradient16()), RenderOptions(format="jpeg"), LIMITS)
    assert result.bit_depth == 8
    assert any("8 bits per channel" in w and "png" in w for w in result.warnings)


def test_a_16_bit_resample_stays_16_bit(up):
    img = read_image(png16(gradient16()), max_pixels=10**7)
    out = resample(img, 90, 50)
    deep = deep_pixels(out)
    assert deep is not None and deep.shape == (50, 90, 3) and min(levels(deep)) > 256


def test_the_engine_runs_uint16_in_float(up):
    src = gradient16()
    out = up.upscale(src)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out[::4, ::4], src)


def photo(h: int = 24, w: int = 40) -> Image.Image:
    """A photo-like picture whose top-left corner is white, so its orientation shows."""
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 3, y * 4, (x + y) * 2], -1).clip(0, 255).astype(np.uint8)
    arr[:6, :10] = 255
    return Image.fromarray(arr)


@pytest.mark.parametrize("fmt", ["AVIF", "HEIF"])
def test_phone_formats_are_read_turned_with_icc(up, fmt):
    assert heif_available()
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # shot with the phone held upright
    buf = io.BytesIO()
    photo().save(buf, format=fmt, exif=exif.tobytes(), icc_profile=icc, quality=95)
    info = read_header(buf.getvalue(), max_pixels=10**7)
    assert (info.format, info.width, info.height) == (fmt, 24, 40)
    result = render(up, buf.getvalue(), RenderOptions(format="png"), LIMITS)
    out = Image.open(io.BytesIO(result.data))
    assert out.size == (96, 160) and out.info["icc_profile"] == icc
    arr = np.asarray(out.convert("RGB")).astype(int)
    assert arr[:8, -8:].mean() > 240 and arr[-8:, :8].mean() < 160  # the white corner is at the top right


def test_avif_is_an_output_format(up):
    buf = io.BytesIO()
    photo().save(buf, format="PNG")
    result = render(up, buf.getvalue(), RenderOptions(format="avif", quality=80), LIMITS)
    assert (result.media_type, result.ext) == ("image/avif", "avif")
    assert Image.open(io.BytesIO(result.data)).size == (160, 96)


def test_heic_without_its_plugin_is_refused_with_the_reason(monkeypatch):
    buf = io.BytesIO()
    photo().save(buf, format="HEIF")
    data = buf.getvalue()
    from PIL import Image as PILImage

    import model.images as images

    monkeypatch.setattr(images, "heif_available", lambda: False)
    monkeypatch.setattr(PILImage, "OPEN", {k: v for k, v in PILImage.OPEN.items() if k != "HEIF"})
    with pytest.raises(UnsupportedFormat, match="pillow-heif"):
        read_header(data, max_pixels=10**7)
