import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from model.engine import Upscaler
from model.errors import ImageTooLarge, InvalidImage, InvalidParameter, UnsupportedFormat
from model.images import encode_image, output_format, read_header, read_image, upscale_image

pytestmark = pytest.mark.unit
LIMIT = 10_000_000


@pytest.fixture(scope="module")
def up(nearest_path):
    return Upscaler.from_file(nearest_path, backend="onnxruntime", tile=32, overlap=4)


def to_bytes(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def srgb_icc():
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF"])
def test_every_input_format_is_sniffed_from_bytes(fmt, rng):
    img = Image.fromarray(rng.integers(0, 256, (21, 34, 3), dtype=np.uint8))
    info = read_header(to_bytes(img, fmt), max_pixels=LIMIT)
    assert (info.format, info.width, info.height) == (fmt, 34, 21)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P", "PA_T"])
def test_modes_round_trip_with_right_size_mode_and_alpha(up, rng, mode):
    rgb = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (23, 31), dtype=np.uint8)
    src = {
        "RGB": lambda: Image.fromarray(rgb),
        "L": lambda: Image.fromarray(rgb[:, :, 0]),
        "RGBA": lambda: Image.fromarray(np.dstack([rgb, alpha])),
        "LA": lambda: Image.fromarray(np.dstack([rgb[:, :, 0], alpha]), "LA"),
        "P": lambda: Image.fromarray(rgb).quantize(16),
        "PA_T": lambda: _palette_with_transparency(rgb),
    }[mode]()
    img = read_image(to_bytes(src, "PNG"), max_pixels=LIMIT)
    out = read_image(encode_image(upscale_image(up, img), "png")[0], max_pixels=LIMIT)
    assert out.size == (31 * 4, 23 * 4)
    expected_mode = {"P": "RGB", "PA_T": "RGBA"}.get(mode, mode)
    assert out.mode == expected_mode
    src_arr = np.asarray(src.convert(expected_mode))
    # the nearest model is exact: colour and alpha come back pixel for pixel
    np.testing.assert_array_equal(np.asarray(out), src_arr.repeat(4, 0).repeat(4, 1))


def _palette_with_transparency(rgb):
    img = Image.fromarray(rgb).quantize(8)
    img.info["transparency"] = 0
    return img


def test_constant_alpha_is_passed_through_untouched(up, rng):
    rgba = np.dstack([rng.integers(0, 256, (20, 20, 3), dtype=np.uint8), np.full((20, 20), 77, np.uint8)])
    calls = []
    out = upscale_image(up, Image.fromarray(rgba), progress=lambda d, t: calls.append((d, t)))
    assert (np.asarray(out.getchannel("A")) == 77).all()
    assert calls[-1] == (1, 1)  # one pass only: alpha was not run through the model


def test_varying_alpha_is_upscaled_with_progress_over_both_passes(up, rng):
    rgba = rng.integers(0, 256, (40, 70, 4), dtype=np.uint8)
    calls = []
    upscale_image(up, Image.fromarray(rgba), progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] and len({t for _, t in calls}) == 1
    assert calls[-1][1] == 2 * 2 * 3


def test_exif_orientation_applied_and_reset_icc_kept(up, rng):
    arr = rng.integers(0, 256, (10, 30, 3), dtype=np.uint8)  # 30 wide, 10 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    exif[0x010F] = "TestCam"
    data = to_bytes(Image.fromarray(arr), "JPEG", exif=exif.tobytes(), icc_profile=srgb_icc(), quality=95)
    img = read_image(data, max_pixels=LIMIT)
    assert img.size == (10, 30)
    out_bytes, media = encode_image(upscale_image(up, img), "jpeg", quality=90)
    assert media == "image/jpeg"
    out = Image.open(io.BytesIO(out_bytes))
    assert out.size == (40, 120)
    assert out.info.get("icc_profile") == srgb_icc()
    assert out.getexif()[0x0112] == 1 and out.getexif()[0x010F] == "TestCam"


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "TIFF", "PNG"])
@pytest.mark.parametrize("orientation,size", [(1, (30, 10)), (3, (30, 10)), (6, (10, 30)), (8, (10, 30)),
                                              (5, (10, 30)), (2, (30, 10))])
def test_probe_gives_the_size_as_displayed_and_the_orientation(rng, fmt, orientation, size):
    """The job record said ``195x130`` in and ``520x780`` out: the header's size, before the EXIF turn."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = to_bytes(Image.fromarray(rng.integers(0, 256, (10, 30, 3), dtype=np.uint8)), fmt, exif=exif.tobytes())
    info = read_header(data, max_pixels=LIMIT)
    assert ((info.width, info.height), info.orientation) == (size, orientation)
    assert read_image(data, max_pixels=LIMIT).size == size


def test_probe_without_exif_or_with_a_broken_one_is_upright(rng):
    arr = rng.integers(0, 256, (10, 30, 3), dtype=np.uint8)
    assert read_header(to_bytes(Image.fromarray(arr), "JPEG"), max_pixels=LIMIT).orientation == 1
    bad = to_bytes(Image.fromarray(arr), "JPEG", exif=b"Exif\x00\x00MM\x00*garbage")
    info = read_header(bad, max_pixels=LIMIT)
    assert (info.width, info.height, info.orientation) == (30, 10, 1)


@pytest.mark.parametrize("fmt,media", [("png", "image/png"), ("jpeg", "image/jpeg"), ("webp", "image/webp")])
def test_output_formats(up, rng, fmt, media):
    img = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    data, got = encode_image(upscale_image(up, img), fmt, quality=80)
    assert got == media and Image.open(io.BytesIO(data)).format == fmt.upper()


def test_rgba_is_never_flattened_into_jpeg(up, rng):
    img = Image.fromarray(rng.integers(0, 256, (8, 8, 4), dtype=np.uint8))
    with pytest.raises(InvalidParameter, match="alpha"):
        encode_image(img, "jpeg")
    assert output_format(img, None) == "png"


def test_default_output_follows_input_family(rng):
    rgb = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    for fmt, expected in [("JPEG", "jpeg"), ("WEBP", "webp"), ("BMP", "png"), ("TIFF", "png")]:
        assert output_format(read_image(to_bytes(rgb, fmt), max_pixels=LIMIT), None) == expected


@pytest.mark.parametrize("quality", [0, 101])
def test_bad_quality_or_format_refused(rng, quality):
    img = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    with pytest.raises(InvalidParameter):
        encode_image(img, "jpeg", quality=quality)
    with pytest.raises(InvalidParameter):
        encode_image(img, "gif")


def test_text_named_png_and_empty_bytes_are_unsupported():
    with pytest.raises(UnsupportedFormat):
        read_header(b"hello, I am not an image", max_pixels=LIMIT)
    with pytest.raises(UnsupportedFormat):
        read_header(b"", max_pixels=LIMIT)
    gif = to_bytes(Image.new("RGB", (4, 4)), "GIF")
    with pytest.raises(UnsupportedFormat):
        read_header(gif, max_pixels=LIMIT)


def test_truncated_png_is_invalid(rng):
    data = to_bytes(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "PNG")
    with pytest.raises(InvalidImage):
        read_image(data[: len(data) // 2], max_pixels=LIMIT)


def png_header_only(width, height):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [5000, 50000])
def test_decompression_bomb_refused_before_decoding(side):
    with pytest.raises(ImageTooLarge):
        read_header(png_header_only(side, side), max_pixels=LIMIT)
    with pytest.raises(ImageTooLarge):
        read_image(png_header_only(side, side), max_pixels=LIMIT)


def test_sixteen_bit_grayscale_keeps_sixteen_bits_beside_an_eight_bit_view(up):
    arr = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    img = read_image(to_bytes(Image.fromarray(arr), "PNG"), max_pixels=LIMIT)
    assert img.mode == "L"
    np.testing.assert_array_equal(np.asarray(img), np.rint(arr / 257.0).astype(np.uint8))
    np.testing.assert_array_equal(img.info["srgan_deep"][:, :, 0], arr)


def test_phone_camera_mpo_jpeg_is_read_as_jpeg(rng):
    first = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    second = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    data = to_bytes(first, "MPO", save_all=True, append_images=[second])
    img = read_image(data, max_pixels=LIMIT)
    assert img.size == (30, 20) and output_format(img, None) == "jpeg"


def test_cmyk_with_profile_is_colour_managed_to_srgb(rng):
    cmyk = Image.fromarray(rng.integers(0, 256, (12, 12, 4), dtype=np.uint8), "CMYK")
    # any valid profile stands in for a CMYK one: what matters is that it is not passed on with RGB pixels
    foreign = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    img = read_image(to_bytes(cmyk, "JPEG", icc_profile=foreign), max_pixels=LIMIT)
    assert img.mode == "RGB"
    assert img.info["icc_profile"] == srgb_icc()


def _idat_zlib_header(png: bytes) -> bytes:
    at = 8
    while at < len(png):
        length, kind = struct.unpack(">I4s", png[at : at + 8])
        if kind == b"IDAT":
            return png[at + 8 : at + 10]
        at += 12 + length
    raise AssertionError("no IDAT chunk")


@pytest.mark.parametrize("deep", [False, True])
def test_pngs_are_written_at_zlib_level_1_and_decode_to_the_same_pixels(rng, deep):
    """Level 1 (OpenCV's default; a quarter of level 6's time on a 2048x1536 result): the zlib stream's header
    says "fastest" (FLEVEL, the top two bits of its second byte, 0; level 6 writes 2), for 8-bit (Pillow) and
    16-bit (imagecodecs) PNGs alike."""
    if deep:
        import imagecodecs

        src = (rng.random((40, 56, 3)) * 65535).astype(np.uint16)
        img = read_image(bytes(imagecodecs.png_encode(src)), max_pixels=LIMIT)
        want = src
    else:
        want = (rng.random((40, 56, 3)) * 255).astype(np.uint8)
        img = Image.fromarray(want)
    data, media = encode_image(img, "png")
    assert media == "image/png" and _idat_zlib_header(data)[1] >> 6 == 0
    back = imagecodecs.png_decode(data) if deep else np.asarray(Image.open(io.BytesIO(data)))
    assert np.array_equal(back, want)
