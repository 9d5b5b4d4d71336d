"""Check an uploaded image before it is queued: format, size, pixel limits, frames, and that it is whole.

``read_header`` reads only the header (format sniffed from the bytes,
decompression bombs refused before decoding, animations and multi-page files
refused). Then ``check_intact`` decodes the file once to prove it whole
(JPEG strictly at 1/8 scale; PNG by its chunk checksums and a decode; WebP,
BMP and TIFF by a decode), bounded in time and memory by the pixel limit, so a
truncated or damaged upload is refused here rather than failing later in a worker.
"""

from __future__ import annotations

from pathlib import Path

from model.errors import InvalidParameter
from model.images import ImageInfo, check_intact, check_output_pixels, read_header


def inspect_image(path: Path, *, max_input_pixels: int) -> ImageInfo:
    info = read_header(path, max_pixels=max_input_pixels)
    check_intact(path, info.format)
    return info


def check_output(info: ImageInfo, *, size: tuple[int, int], max_output_pixels: int, fmt: str | None) -> None:
    """Refuse a result of ``size`` (width, height) over the pixel limit, or ``fmt`` JPEG for an image with alpha."""
    check_output_pixels(*size, max_output_pixels)
    if fmt == "jpeg" and info.has_alpha:
        raise InvalidParameter("JPEG cannot hold this image's transparency; ask for png, webp or avif")
