"""Damaged, truncated and multi-frame inputs are refused, never cut or decoded into garbage; tRNS is alpha."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from model.errors import InvalidImage, MultiFrame
from model.images import check_intact, read_header, read_image

pytestmark = pytest.mark.unit
LIMIT = 10_000_000


def photo(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    """Smooth gradients plus noise: compresses like a photo (a JPEG of pure noise is all entropy data)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([x * 255 / width, y * 255 / height, (x + y) % 256], -1)
    return Image.fromarray(np.clip(arr + rng.integers(-20, 20, arr.shape), 0, 255).astype(np.uint8))


def to_bytes(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def zero_last_tenth(data: bytes) -> bytes:
    n = len(data) // 10
    return data[:-n] + b"\0" * n


SAVE: dict[str, dict[str, Any]] = {
    "JPEG": {"quality": 90}, "PROGRESSIVE": {"quality": 90, "progressive": True}, "PNG": {},
    "WEBP": {"quality": 90}, "BMP": {}, "TIFF": {}, "TIFF_LZW": {"compression": "tiff_lzw"}}


def encoded(kind: str) -> tuple[bytes, str]:
    fmt = {"PROGRESSIVE": "JPEG", "TIFF_LZW": "TIFF"}.get(kind, kind)
    return to_bytes(photo(), fmt, **SAVE[kind]), fmt


@pytest.mark.parametrize("kind", list(SAVE))
def test_whole_files_are_intact(kind):
    data, fmt = encoded(kind)
    assert read_header(data, max_pixels=LIMIT).format == fmt
    check_intact(data, fmt)


@pytest.mark.parametrize("kind", list(SAVE))
@pytest.mark.parametrize("cut", [0.5, 0.9, 0.99])
def test_truncated_files_are_refused(kind, cut):
    data, fmt = encoded(kind)
    with pytest.raises(InvalidImage):
        check_intact(data[: int(len(data) * cut)], fmt)


@pytest.mark.parametrize("kind", ["JPEG", "PROGRESSIVE"])
def test_jpeg_with_its_last_tenth_zeroed_is_refused_and_never_read(kind):
    data, fmt = encoded(kind)
    broken = zero_last_tenth(data)
    with pytest.raises(InvalidImage):
        check_intact(broken, fmt)
    with pytest.raises(InvalidImage):  # the worker's reader refuses it too (Pillow alone decodes it into grey)
        read_image(broken, max_pixels=LIMIT)


def test_corrupt_jpeg_entropy_data_is_refused():
    data, fmt = encoded("JPEG")
    middle = len(data) * 2 // 3
    broken = data[:middle] + bytes(b ^ 0x5A for b in data[middle : middle + 8]) + data[middle + 8 :]
    Image.open(io.BytesIO(broken)).load()  # Pillow decodes it without a word...
    with pytest.raises(InvalidImage):  # ...the strict check does not
        check_intact(broken, fmt)


@pytest.mark.parametrize("kind", ["PNG", "TIFF_LZW"])  # WebP has no checksums: only a cut is visible
def test_damaged_compressed_data_is_refused(kind):
    data, fmt = encoded(kind)
    middle = len(data) // 2
    broken = data[:middle] + bytes(255 - b for b in data[middle : middle + 64]) + data[middle + 64 :]
    with pytest.raises(InvalidImage):
        check_intact(broken, fmt)


def test_phone_camera_mpo_is_intact():
    data = to_bytes(photo(), "MPO", save_all=True, append_images=[photo(seed=1)])
    info = read_header(data, max_pixels=LIMIT)
    check_intact(data, info.format)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_animations_and_multi_page_files_are_refused(fmt):
    data = to_bytes(photo(), fmt, save_all=True, append_images=[photo(seed=1), photo(seed=2)])
    with pytest.raises(MultiFrame) as err:
        read_header(data, max_pixels=LIMIT)
    assert err.value.code == "multi_frame"
    with pytest.raises(MultiFrame):
        read_image(data, max_pixels=LIMIT)


def test_tiff_with_a_thumbnail_page_is_one_image():
    """A reduced-resolution page (NewSubfileType bit 0), as cameras and scanners add, is not a second image."""
    two_pages = to_bytes(photo(), "TIFF", save_all=True, append_images=[photo(24, 16)])
    with pytest.raises(MultiFrame):
        read_header(two_pages, max_pixels=LIMIT)
    # Pillow cannot give each page its own tags on save, so the second page's first tag is rewritten
    info = read_header(_with_thumbnail_flag(two_pages), max_pixels=LIMIT)
    assert (info.width, info.height) == (96, 64)


def _with_thumbnail_flag(tiff: bytes) -> bytes:
    """Set NewSubfileType=1 on the second page of a little-endian TIFF, in place of its last tag."""
    import struct

    assert tiff[:2] == b"II"
    first = struct.unpack_from("<I", tiff, 4)[0]
    count = struct.unpack_from("<H", tiff, first)[0]
    second = struct.unpack_from("<I", tiff, first + 2 + 12 * count)[0]
    entry = second + 2 + 12 * (struct.unpack_from("<H", tiff, second)[0] - 1)
    tag = struct.unpack_from("<H", tiff, entry)[0]
    assert tag == 284, tag  # PlanarConfiguration, whose default (contiguous) is what Pillow wrote
    patched = bytearray(tiff)
    struct.pack_into("<HHII", patched, entry, 254, 4, 1, 1)  # LONG, count 1, value 1: reduced resolution
    return bytes(patched)


def test_palette_png_with_trns_has_alpha():
    pal = photo().quantize(16)
    data = to_bytes(pal, "PNG", transparency=0)
    assert read_header(data, max_pixels=LIMIT).has_alpha
    opaque = to_bytes(pal, "PNG")
    assert not read_header(opaque, max_pixels=LIMIT).has_alpha


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_colour_key_trns_becomes_alpha(mode):
    img = photo().convert(mode)
    key = img.getpixel((5, 5))
    data = to_bytes(img, "PNG", transparency=key)
    assert read_header(data, max_pixels=LIMIT).has_alpha
    out = read_image(data, max_pixels=LIMIT)
    assert out.mode == {"RGB": "RGBA", "L": "LA"}[mode]
    alpha = np.asarray(out.getchannel("A"))
    keyed = np.all(np.asarray(img).reshape(64, 96, -1) == np.reshape(np.asarray(key), (1, 1, -1)), axis=2)
    assert alpha[5, 5] == 0
    np.testing.assert_array_equal(alpha == 0, keyed)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_that_cannot_be_written_back_is_dropped_with_a_warning(fmt):
    from model.images import WARNINGS_KEY, encode_image
    from tests.utils.service import exif_make_as_rational

    exif = exif_make_as_rational()
    data = to_bytes(photo(), fmt, exif=(b"Exif\0\0" if fmt == "JPEG" else b"") + exif)
    img = read_image(data, max_pixels=LIMIT)
    assert "exif" not in img.info
    (warning,) = img.info[WARNINGS_KEY]
    assert "EXIF" in warning and "dropped" in warning
    encode_image(img, fmt.lower())  # the output is written without it


def test_good_exif_is_carried_without_warnings():
    from model.images import WARNINGS_KEY

    exif = Image.Exif()
    exif[0x010F] = "Canon"
    img = read_image(to_bytes(photo(), "JPEG", exif=exif.tobytes()), max_pixels=LIMIT)
    carried = Image.Exif()
    carried.load(img.info["exif"])
    assert carried[0x010F] == "Canon"
    assert WARNINGS_KEY not in img.info


def test_exif_too_long_for_jpeg_is_dropped_from_the_jpeg_with_a_warning():
    from model.images import WARNINGS_KEY, encode_image

    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x927C] = b"m" * 70_000  # a 70 KB maker note: PNG holds it, a JPEG segment cannot
    img = read_image(to_bytes(photo(), "PNG", exif=exif.tobytes()), max_pixels=LIMIT)
    data, media_type = encode_image(img, "jpeg")
    assert media_type == "image/jpeg" and Image.open(io.BytesIO(data)).size == (96, 64)
    (warning,) = img.info[WARNINGS_KEY]
    assert "EXIF" in warning and "JPEG" in warning
    encode_image(img, "png")  # PNG still carries it
