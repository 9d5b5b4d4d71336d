"""Check an uploaded image before it is queued: format, size, pixel limits, and that it is whole.

``probe_image`` reads only the header (format sniffed from the bytes,
decompression bombs refused before decoding). Then the file's structure is
verified without decoding it at full size: PNG and WebP by their chunk
checksums, JPEG by decoding at 1/8 scale (cheap, but reads every byte), so a
truncated upload is refused here rather than failing later in a worker.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from model.errors import InvalidImage, InvalidParameter
from model.images import INPUT_FORMATS, ImageInfo, check_output_pixels, probe_image


def inspect_image(path: Path, *, max_input_pixels: int) -> ImageInfo:
    info = probe_image(path, max_pixels=max_input_pixels)
    try:
        with Image.open(path, formats=INPUT_FORMATS) as img:
            if img.format in ("JPEG", "MPO"):  # MPO: multi-picture JPEG of phone cameras
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
            else:
                img.verify()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImage(f"the image is damaged or truncated: {exc}") from exc
    return info


def check_output(info: ImageInfo, *, scale: int, max_output_pixels: int, fmt: str | None) -> None:
    check_output_pixels(info.width, info.height, scale, max_output_pixels)
    if fmt == "jpeg" and info.has_alpha:
        raise InvalidParameter("JPEG cannot hold this image's transparency; ask for png or webp")
