"""Rendering one image: the use-case the worker, ``srgan upscale`` and the benchmarks share.

:func:`render` is the whole of it: decode (input pixel limit, EXIF
orientation, modes), check the output pixel limit before any tile runs, run
the engine (progress and cancellation between tiles), resample the model's
output to the asked size when it differs (``core.sizing``: a scale from 1 to 8,
or a width, height or longer side; ``model.images.resample``), encode. It takes bytes or a path and
gives encoded bytes with what they are (:class:`Rendered`); where the bytes
go is the caller's business (a job's storage, a file beside the input) and
:func:`write_file` is the atomic write of a local file.

The engine comes in already built (``core.catalog.load.build_upscaler``, or a
worker's cache of them), so a job and a local run of the same model, options
and image give the same bytes; or as a :data:`PickEngine` called with the
decoded image, when which network runs depends on the upload (``denoise
auto`` reads its JPEG tables and noise).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from core.settings import Settings
from core.sizing import OutputSize
from model.engine import Progress, Upscaler
from model.images import (
    DEEP_OUTPUTS,
    RESAMPLE_FILTER,
    WARNINGS_KEY,
    bit_depth,
    check_encodable,
    check_output_pixels,
    encode_image,
    output_format,
    read_image,
    resample,
    upscale_image,
)

PickEngine = Callable[[Image.Image], tuple[Upscaler, Mapping[str, Any]]]
"""Chooses the engine for a decoded upload; returns it and the provenance its result's metadata records."""

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/avif": "avif"}
FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp", "image/avif": "avif"}


@dataclass(frozen=True)
class RenderOptions:
    """What is asked of one render: ``size`` (a scale or a size to fit; nothing: the model's own scale),
    ``format`` (None: the input's), ``quality``."""

    size: OutputSize = OutputSize()
    format: str | None = None
    quality: int = 95

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RenderOptions:
        """The options of a job record's ``params``."""
        return cls(size=OutputSize.from_params(params), format=params.get("format") or None,
                   quality=int(params.get("quality") or 95))


@dataclass(frozen=True)
class PixelLimits:
    """Pixel limits (width x height) of the input and of the result."""

    max_input_pixels: int
    max_output_pixels: int

    @classmethod
    def from_settings(cls, settings: Settings) -> PixelLimits:
        return cls(settings.max_input_pixels, settings.max_output_pixels)


@dataclass
class Rendered:
    """An encoded result and what it is."""

    data: bytes
    media_type: str
    width: int
    height: int
    mode: str
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    bit_depth: int = 8
    """Bits per channel of the encoded result (16: a 16-bit input written as PNG)."""
    resample: dict[str, Any] | None = None
    """How the model's output was resized to the asked size (:func:`resampled`); None: it is the result."""

    @property
    def ext(self) -> str:
        """File extension without the dot (``png``, ``jpg``, ``webp``, ``avif``)."""
        return EXTENSIONS[self.media_type]

    @property
    def format(self) -> str:
        """Format key (``png``, ``jpeg``, ``webp``, ``avif``)."""
        return FORMATS[self.media_type]

    def describe(self) -> dict[str, Any]:
        """The job record's ``output`` object."""
        return {"format": self.format, "width": self.width, "height": self.height, "mode": self.mode,
                "media_type": self.media_type, "ext": self.ext, "bytes": len(self.data), "bit_depth": self.bit_depth}


def render(
    engine: Upscaler | PickEngine,
    source: bytes | Path,
    options: RenderOptions,
    limits: PixelLimits,
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Rendered:
    """Decode ``source``, upscale it, resample the model's output to ``options.size`` if it differs, encode.

    ``engine`` is an upscaler, or a :data:`PickEngine` that chooses one for the decoded image (its provenance
    then replaces ``provenance``). ``provenance`` (model, detail, denoise) goes into the result's metadata, with
    the resample when there is one. Raises the typed errors of ``model.errors``: ``ImageTooLarge`` for either
    limit (the output one before any tile runs), ``InvalidParameter`` for a size needing a scale outside 1..8,
    ``Canceled`` when ``should_stop`` said so.
    """
    t0 = time.perf_counter()
    img = read_image(source, max_pixels=limits.max_input_pixels)
    if callable(engine):
        upscaler, provenance = engine(img)
    else:
        upscaler = engine
    out_w, out_h = options.size.result_size(img.width, img.height, upscaler.scale)
    check_output_pixels(out_w, out_h, limits.max_output_pixels)
    fmt = output_format(img, options.format)  # an unknown format, or alpha into JPEG, is refused before the engine
    check_encodable(img.mode, fmt)
    t1 = time.perf_counter()
    hr = upscale_image(upscaler, img, progress=progress, should_stop=should_stop)
    how = resampled(hr.size, (out_w, out_h), upscaler.scale)
    if how is not None:
        hr = resample(hr, out_w, out_h)
    t2 = time.perf_counter()
    meta = {**provenance, **({"resample": how} if how else {})} if provenance else None
    data, media_type = encode_image(hr, fmt, options.quality, meta)
    t3 = time.perf_counter()
    timings = {"decode_s": t1 - t0, "engine_s": t2 - t1, "encode_s": t3 - t2}
    written = 16 if bit_depth(hr) == 16 and fmt in DEEP_OUTPUTS else 8
    return Rendered(data, media_type, hr.width, hr.height, hr.mode, {k: round(v, 6) for k, v in timings.items()},
                    [*img.info.get(WARNINGS_KEY, []), *hr.info.get(WARNINGS_KEY, [])], written, how)


def resampled(model_size: tuple[int, int], size: tuple[int, int], model_scale: int) -> dict[str, Any] | None:
    """The record of resizing a model's ``model_size`` output to ``size`` (None when they are the same):
    ``{"model_scale": 4, "size": [w, h], "filter": "lanczos"}``."""
    if model_size == size:
        return None
    return {"model_scale": model_scale, "size": list(size), "filter": RESAMPLE_FILTER}


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file beside it, then a rename.

    Missing parent folders are made. A failure leaves no temporary file, and
    its ``OSError`` names ``path``, not the temporary file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as to any new file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
