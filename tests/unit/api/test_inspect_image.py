"""Uploads are checked before queueing: header limits, bombs, truncation, output size, alpha vs JPEG."""

from __future__ import annotations

import pytest

from api.inspect import check_output, inspect_image
from model.errors import ImageTooLarge, InvalidImage, InvalidParameter, UnsupportedFormat
from tests.utils.service import flat_image_bytes, image_bytes, png_header_only

pytestmark = pytest.mark.unit


def write(tmp_path, data: bytes):
    path = tmp_path / "upload"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF"])
def test_whole_images_pass(tmp_path, fmt):
    info = inspect_image(write(tmp_path, image_bytes(30, 20, fmt=fmt)), max_input_pixels=10_000)
    assert (info.width, info.height, info.format) == (30, 20, fmt)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_images_are_refused(tmp_path, fmt):
    whole = image_bytes(64, 64, fmt=fmt)
    with pytest.raises(InvalidImage):
        inspect_image(write(tmp_path, whole[: len(whole) * 2 // 3]), max_input_pixels=10**6)


def test_too_many_pixels_and_bombs_are_refused_from_the_header(tmp_path):
    with pytest.raises(ImageTooLarge):
        inspect_image(write(tmp_path, flat_image_bytes(200, 100)), max_input_pixels=19_999)
    with pytest.raises(ImageTooLarge):
        inspect_image(write(tmp_path, png_header_only(50_000, 50_000)), max_input_pixels=10**9)


def test_text_is_not_an_image(tmp_path):
    with pytest.raises(UnsupportedFormat):
        inspect_image(write(tmp_path, b"just text"), max_input_pixels=100)


def test_output_limits_and_alpha(tmp_path):
    info = inspect_image(write(tmp_path, image_bytes(10, 10, "RGBA")), max_input_pixels=100)
    check_output(info, size=(40, 40), max_output_pixels=1600, fmt="png")
    with pytest.raises(ImageTooLarge):
        check_output(info, size=(40, 40), max_output_pixels=1599, fmt="png")
    with pytest.raises(InvalidParameter):
        check_output(info, size=(40, 40), max_output_pixels=1600, fmt="jpeg")
