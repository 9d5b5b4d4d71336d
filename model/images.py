"""Image decode and encode around the engine: formats, limits, modes, alpha, metadata.

- Formats are sniffed from the bytes (PNG, JPEG, WebP, BMP, TIFF, AVIF, and
  HEIC/HEIF with the ``pillow-heif`` package); names and content types are
  never trusted.
- The pixel limit is checked on the header, before any pixel is decoded, so a
  decompression bomb costs nothing. Animations and multi-page files (APNG,
  animated WebP, TIFF with several full-size pages) are refused with
  ``MultiFrame``: keeping only the first frame would be a silent loss.
- ``check_intact`` decodes the whole file to prove it is not truncated or
  damaged (JPEG strictly, where libjpeg's warnings count as errors, at 1/8
  scale), in time and memory bounded by the pixel limit.
- EXIF orientation is applied on read (``read_header`` already gives the
  size as displayed, and the orientation); the ICC profile and the EXIF block
  (orientation reset to 1) are carried to the output. EXIF that cannot be
  read or written back is dropped with a warning in ``info[WARNINGS_KEY]``.
- Modes: RGB stays RGB, L stays L; RGBA and LA keep their alpha, upscaled
  separately by the model (a constant alpha is passed through untouched);
  palette images are converted first (to RGBA when they have transparency),
  and an RGB or L image with a ``tRNS`` colour key gets a real alpha channel.
- 16 bits per channel: a 16-bit PNG or TIFF (grey, grey+alpha, RGB, RGBA) is
  decoded by imagecodecs (libpng, libtiff) into ``info[DEEP_KEY]``, a uint16
  array, beside the 8-bit image Pillow works with (rounded to 8 bits); the engine
  runs it in float and PNG output is written with 16 bits. An output format that
  holds 8 bits (JPEG, WebP, AVIF) gets the 8-bit image and a warning says so.
- Output PNG, JPEG, WebP or AVIF. An image with alpha is never flattened into JPEG:
  asking for it raises ``InvalidParameter``.
"""

from __future__ import annotations

import functools
import io
import json
import struct
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import simplejpeg
from PIL import Image, ImageCms, ImageOps, PngImagePlugin

from model.errors import ImageTooLarge, InvalidImage, InvalidParameter, MultiFrame, UnsupportedFormat
from model.strength import jpeg_quality

INPUT_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "AVIF", "HEIF")  # JPEG includes MPO (phone cameras')
OUTPUT_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp"),
                  "avif": ("AVIF", "image/avif")}
FORMAT_ALIASES = {"jpg": "jpeg"}
SOURCE_FORMAT_KEY = "srgan_source_format"
WARNINGS_KEY = "srgan_warnings"
JPEG_QUALITY_KEY = "srgan_jpeg_quality"
"""``info`` key of a decoded JPEG: the quality its quantization tables say (``model.strength``), for denoise auto."""
"""``info`` key of a decoded image: what was dropped or changed on reading (a list of sentences)."""
DEEP_KEY = "srgan_deep"
"""``info`` key of an image read with 16 bits per channel: its pixels, an ``(H, W, C)`` uint16 array (C = the
mode's bands); the image itself holds them rounded to 8 bits."""
DEEP_FORMATS = ("PNG", "TIFF")
"""Inputs whose 16 bits per channel are kept (decoded by imagecodecs)."""
DEEP_OUTPUTS = ("png",)
"""Output formats written with 16 bits per channel when the image has them."""
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
EXIF_ORIENTATION = 0x0112
QUARTER_TURNS = 5
"""EXIF orientations from 5 to 8 turn the image a quarter (its width and height swap)."""
TIFF_SUBFILE_TYPE = 254
"""NewSubfileType; bit 0 marks a reduced-resolution page (a thumbnail), not a page of its own."""
JPEG_FORMATS = ("JPEG", "MPO")  # MPO: the multi-picture JPEG of phone cameras; its first picture is the photo

if TYPE_CHECKING:  # the engine is not needed to decode or encode
    from PIL import TiffImagePlugin

    from model.engine import Progress, Upscaler


@dataclass(frozen=True)
class ImageInfo:
    """What the header says; no pixels were decoded to learn it."""

    format: str
    width: int
    height: int
    mode: str
    transparency: bool = False
    """A ``tRNS``-style colour key or palette transparency (the mode itself has no alpha)."""
    orientation: int = 1
    """The EXIF orientation (1..8) that :func:`read_image` applies; ``width`` and ``height`` are after it
    (as the image is displayed), so 5..8, a quarter turn, swap the stored size."""
    bits: int = 8
    """Bits per channel as stored (16 for a 16-bit PNG or TIFF)."""

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def has_alpha(self) -> bool:
        return self.mode in ("RGBA", "LA", "PA", "RGBa", "La") or self.transparency


@functools.cache
def heif_available() -> bool:
    """Whether HEIC/HEIF images can be read (the ``pillow-heif`` package registers Pillow's opener for them)."""
    try:
        from pillow_heif import register_heif_opener  # start-up: loaded on the first HEIF question
    except ImportError:
        return False
    register_heif_opener()
    return True


def _heif_brand(source: io.BufferedIOBase | io.BytesIO) -> bool:
    """Whether the file is an ISO base media file of a HEIF brand (``ftyp`` box)."""
    source.seek(0)
    head = source.read(12)
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


def _open(data: bytes | Path) -> Image.Image:
    formats = INPUT_FORMATS if heif_available() else tuple(f for f in INPUT_FORMATS if f != "HEIF")
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else open(data, "rb")  # noqa: SIM115
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(source, formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        source.close()
        raise ImageTooLarge(f"image refused as a decompression bomb: {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        heif = not heif_available() and _heif_brand(source)
        source.close()
        if heif:
            raise UnsupportedFormat("HEIC/HEIF images need the pillow-heif package, which is not installed "
                                    "here; send PNG, JPEG, WebP or AVIF, or install it (README, 'Formats')") from exc
        raise UnsupportedFormat(
            f"not an image in a supported format ({', '.join(f.lower() for f in INPUT_FORMATS)})"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        source.close()
        raise InvalidImage(f"cannot read the image header: {exc}") from exc


def _has_transparency(img: Image.Image) -> bool:
    key = img.info.get("transparency")
    if key is None:
        return False
    if img.mode == "P" and isinstance(key, (bytes, bytearray)):
        return any(a < 255 for a in key)  # per-entry alpha; all 255 is opaque
    return True


def _frame_count(img: Image.Image) -> int:
    """Frames or pages that would be lost by keeping the first; at most 2 are counted (bounded time)."""
    if img.format in JPEG_FORMATS:
        return 1
    try:
        if img.format != "TIFF":
            return int(getattr(img, "n_frames", 1))
        pages = 0
        for index in range(int(getattr(img, "n_frames", 1))):
            img.seek(index)
            tags = cast("TiffImagePlugin.TiffImageFile", img).tag_v2  # img.format == "TIFF"
            if not int(tags.get(TIFF_SUBFILE_TYPE, 0)) & 1:
                pages += 1
                if pages > 1:
                    break
        img.seek(0)
        return pages
    except Exception as exc:  # noqa: BLE001 - a malformed file breaks Pillow's parsers in many ways
        raise InvalidImage(f"cannot read the image's frames: {exc}") from exc


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation from the header, 1 when there is none or it cannot be read (as ``_apply_exif``)."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1  # Pillow would decode the pixels to look for an eXIf chunk after them
    try:
        value = int(img.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - malformed EXIF breaks Pillow's parser in many ways
        return 1
    return value if 1 <= value <= 8 else 1


def read_header(data: bytes | Path, *, max_pixels: int) -> ImageInfo:
    """Sniff the format and size from the header; refuse too many pixels, and animations, before decoding."""
    with _open(data) as img:
        orientation = _orientation(img)
        turned = orientation >= QUARTER_TURNS and img.format != "TIFF"  # Pillow gives a TIFF's turned size
        width, height = (img.height, img.width) if turned else (img.width, img.height)
        info = ImageInfo(img.format or "", width, height, img.mode, _has_transparency(img), orientation,
                         _bits(img))
        if info.width <= 0 or info.height <= 0:
            raise InvalidImage(f"image has no pixels ({info.width}x{info.height})")
        if info.pixels > max_pixels:
            raise ImageTooLarge(
                f"image is {info.width}x{info.height} = {info.pixels} pixels; the limit is {max_pixels}"
            )
        frames = _frame_count(img)
    if frames > 1:
        kind = {"PNG": "an animated PNG (APNG)", "WEBP": "an animated WebP", "TIFF": "a multi-page TIFF"}
        raise MultiFrame(f"the image is {kind.get(info.format, 'a multi-frame image')}; "
                         "send a single image (one frame or page)")
    return info


def _bits(img: Image.Image) -> int:
    """Bits per channel as stored, from the decoder's raw mode (``RGB;16B``, ``I;16``...): 16 or 8."""
    if img.mode.startswith("I;16"):
        return 16
    tiles = getattr(img, "tile", None)  # an ImageFile's decoder tiles
    tile = tiles[0] if tiles else None
    args = tile.args if tile is not None else None
    raw = args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args else ""
    return 16 if isinstance(raw, str) and ";16" in raw else 8


def check_intact(data: bytes | Path, fmt: str) -> None:
    """Decode the whole file and raise ``InvalidImage`` if it is truncated or damaged.

    JPEG is decoded by libjpeg-turbo at 1/8 scale with warnings as errors (every
    entropy-coded byte is still read, so a cut or zeroed tail is found; Pillow
    would fill it with grey). The others are decoded by Pillow, which fails on
    truncated data and bad checksums. Time and memory are bounded by the pixel
    limit ``read_header`` has already checked.
    """
    if fmt in JPEG_FORMATS:
        raw = data if isinstance(data, (bytes, bytearray, memoryview)) else Path(data).read_bytes()
        try:
            simplejpeg.decode_jpeg(bytes(raw), colorspace="RGB", min_factor=8, strict=True)
        except ValueError as exc:
            raise InvalidImage(f"the JPEG data is damaged or truncated: {exc}") from exc
        return
    with _open(data) as img:
        try:
            if fmt == "PNG":
                img.verify()  # chunk checksums (CRC) and the IEND chunk; the image must be reopened after it
        except Exception as exc:  # noqa: BLE001 - a malformed file breaks Pillow's parsers in many ways
            raise InvalidImage(f"the image is damaged or truncated: {exc}") from exc
    with _open(data) as img:
        try:
            img.load()
        except Exception as exc:  # noqa: BLE001 - a malformed file breaks Pillow's decoders in many ways
            raise InvalidImage(f"the image data is damaged or truncated: {exc}") from exc


def read_image(data: bytes | Path, *, max_pixels: int) -> Image.Image:
    """Decode an image: limits checked first, EXIF orientation applied, ICC/EXIF kept in ``info``."""
    info = read_header(data, max_pixels=max_pixels)
    if info.format in JPEG_FORMATS:
        check_intact(data, info.format)  # Pillow decodes a damaged JPEG without a word
    with _open(data) as img:
        source_format = img.format
        try:
            img.load()
        except Exception as exc:  # noqa: BLE001 - a malformed file breaks Pillow's decoders in many ways
            raise InvalidImage(f"the image data is damaged or truncated: {exc}") from exc
        quality = jpeg_quality(img)
        oriented, notes = _apply_exif(img)
    icc = img.info.get("icc_profile")
    if icc:
        oriented.info["icc_profile"] = icc
    if oriented.mode == "CMYK" and icc:
        oriented = _cmyk_to_srgb(oriented, icc)
    out = _normalise_mode(oriented)
    out.info.update({k: v for k, v in oriented.info.items() if k in ("icc_profile", "exif")})
    if info.bits == 16:
        out, why = _with_deep(out, data, info, img.mode)
        if why:
            notes.append(why)
    out.info[SOURCE_FORMAT_KEY] = source_format
    if quality is not None:
        out.info[JPEG_QUALITY_KEY] = quality
    if notes:
        out.info[WARNINGS_KEY] = notes
    return out


_DEEP_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_TRANSPOSE: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).swapaxes(0, 1), 8: lambda a: np.rot90(a, 1),
}
"""An ``(H, W, C)`` array turned as ``ImageOps.exif_transpose`` turns an image of that EXIF orientation."""


def _with_deep(img: Image.Image, data: bytes | Path, info: ImageInfo, source_mode: str) -> tuple[Image.Image, str]:
    """``img`` (8 bits, oriented) remade from the file's 16-bit pixels, kept in ``info[DEEP_KEY]``; or
    ``img`` as it is and the sentence that says why the 16 bits could not be kept."""
    reduced = f"the {info.format} image has 16 bits per channel"
    if info.format not in DEEP_FORMATS:
        return img, f"{reduced}; it was read with 8 bits per channel (16 bits are kept for PNG and TIFF)"
    if info.transparency:
        return img, f"{reduced} and a transparent colour key; it was read with 8 bits per channel"
    import imagecodecs  # start-up: loaded only for 16-bit images

    raw = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else Path(data).read_bytes()
    try:
        arr = imagecodecs.png_decode(raw) if info.format == "PNG" else imagecodecs.tiff_decode(raw)
    except Exception as exc:  # noqa: BLE001 - libpng/libtiff errors come as several exception types
        raise InvalidImage(f"the 16-bit image data is damaged or truncated: {exc}") from exc
    arr = arr.reshape(*arr.shape[:2], -1)
    arr = np.ascontiguousarray(_TRANSPOSE.get(info.orientation, lambda a: a)(arr))
    channels = arr.shape[2]
    pillow_bands = 1 if source_mode.startswith("I") else {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}.get(source_mode)
    same_bands = info.format == "PNG" or channels == pillow_bands
    if arr.dtype != np.uint16 or channels not in _DEEP_MODES or not same_bands or arr.shape[1::-1] != img.size:
        return img, f"{reduced} in a layout kept with 8 bits ({source_mode}, {channels} samples)"
    top = _to_8_bits(arr)
    out = Image.fromarray(top[:, :, 0] if channels == 1 else top)
    out.info.update(img.info)
    out.info[DEEP_KEY] = arr
    return out, ""


def _to_8_bits(deep: np.ndarray) -> np.ndarray:
    """16-bit levels rounded to the nearest 8-bit ones (``rint(x / 257)``)."""
    return ((deep.astype(np.uint32) + 128) // 257).astype(np.uint8)


def deep_pixels(img: Image.Image) -> np.ndarray | None:
    """The 16-bit pixels of an image read or made with them (``(H, W, C)`` uint16), else None."""
    deep = img.info.get(DEEP_KEY)
    return deep if isinstance(deep, np.ndarray) else None


def bit_depth(img: Image.Image) -> int:
    """Bits per channel the image holds: 16 with :func:`deep_pixels`, else 8."""
    return 16 if deep_pixels(img) is not None else 8


def _apply_exif(img: Image.Image) -> tuple[Image.Image, list[str]]:
    """The image turned by its EXIF orientation, with the EXIF block to carry (orientation reset to 1).

    EXIF that Pillow cannot read or write back is dropped, with a warning for
    the job record, rather than failing the image: metadata is not the picture.
    """
    try:
        exif = img.getexif()
        oriented = ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001 - malformed EXIF breaks Pillow's parser in many ways
        oriented = img.copy()
        oriented.info.pop("exif", None)
        return oriented, [f"the EXIF metadata cannot be read and was dropped (orientation not applied): {exc}"]
    if not exif:
        oriented.info.pop("exif", None)
        return oriented, []
    try:
        exif[EXIF_ORIENTATION] = 1
        oriented.info["exif"] = exif.tobytes()
    except Exception as exc:  # noqa: BLE001 - a tag Pillow read but cannot write back
        oriented.info.pop("exif", None)
        return oriented, [f"the EXIF metadata cannot be written back and was dropped: {exc}"]
    return oriented, []


def _cmyk_to_srgb(img: Image.Image, icc: bytes) -> Image.Image:
    """Colour-manage a CMYK image into sRGB: its CMYK profile cannot travel with RGB pixels."""
    srgb = ImageCms.createProfile("sRGB")
    try:
        managed = ImageCms.profileToProfile(img, ImageCms.ImageCmsProfile(io.BytesIO(icc)), srgb, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError):
        managed = None
    out = managed if managed is not None else img.convert("RGB")  # (None only comes from inPlace=True)
    out.info.update({k: v for k, v in img.info.items() if k == "exif"})
    out.info["icc_profile"] = ImageCms.ImageCmsProfile(srgb).tobytes()
    return out


def _normalise_mode(img: Image.Image) -> Image.Image:
    """One of L, LA, RGB, RGBA, 8 bits per channel."""
    mode = img.mode
    if mode in ("L", "RGB") and img.info.get("transparency") is not None:  # a tRNS colour key
        rgba = img.convert("RGBA")  # Pillow applies the key here (not in L -> LA)
        return rgba if mode == "RGB" else rgba.convert("LA")
    if mode in ("L", "LA", "RGB", "RGBA"):
        return img
    if mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if mode == "PA":
        return img.convert("RGBA")
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(np.rint(arr * 255.0 / peak), 0, 255).astype(np.uint8), "L")
    if mode == "1":
        return img.convert("L")
    if mode == "La":
        return img.convert("LA")
    if mode == "RGBa":
        return img.convert("RGBA")
    if mode in ("RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        return img.convert("RGB")
    raise UnsupportedFormat(f"image mode {mode} is not supported")


def upscale_image(
    upscaler: Upscaler,
    img: Image.Image,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Image.Image:
    """Upscale a decoded image, keeping its mode, alpha, bit depth and metadata."""
    if deep_pixels(img) is not None:
        return _upscale_deep(upscaler, img, tile=tile, overlap=overlap, progress=progress, should_stop=should_stop)
    img = _normalise_mode(img)
    colour_mode = "L" if img.mode in ("L", "LA") else "RGB"
    alpha = np.asarray(img.getchannel("A")) if img.mode in ("LA", "RGBA") else None
    alpha_varies = alpha is not None and alpha.min() != alpha.max()
    report = _pass_progress(progress, 2 if alpha_varies else 1)

    colour = np.asarray(img.convert("RGB"))
    run: dict[str, Any] = dict(tile=tile, overlap=overlap, should_stop=should_stop)
    hr = Image.fromarray(upscaler.upscale(colour, progress=report(0), **run), "RGB")
    if colour_mode == "L":
        hr = hr.convert("L")
    if alpha is not None:
        if alpha_varies:
            alpha_rgb = np.repeat(alpha[:, :, None], 3, axis=2)
            hr_alpha = Image.fromarray(upscaler.upscale(alpha_rgb, progress=report(1), **run), "RGB").convert("L")
        else:
            hr_alpha = Image.new("L", hr.size, int(alpha.flat[0]))
        hr.putalpha(hr_alpha)
    for key in ("icc_profile", "exif", SOURCE_FORMAT_KEY):
        if img.info.get(key):
            hr.info[key] = img.info[key]
    return hr


def _pass_progress(progress: Progress | None, passes: int) -> Callable[[int], Progress | None]:
    """``report(k)``: the progress callback of pass ``k`` of ``passes`` (colour, then alpha), over the whole job."""

    def report(offset: int) -> Progress | None:
        if progress is None:
            return None
        return lambda done, total: progress(offset * total + done, passes * total)

    return report


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an ``(H, W, 3)`` uint16 image, as Pillow's ``convert("L")`` weighs it."""
    weighted = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(weighted), 0, 65535).astype(np.uint16)


def _upscale_deep(
    upscaler: Upscaler, img: Image.Image, *, progress: Progress | None, **run: Any,
) -> Image.Image:
    """:func:`upscale_image` of an image with 16-bit pixels: the engine runs them (in float) as uint16."""
    deep = cast(np.ndarray, deep_pixels(img))
    has_alpha = img.mode in ("LA", "RGBA")
    colour = deep[:, :, :-1] if has_alpha else deep
    colour = np.repeat(colour, 3, axis=2) if colour.shape[2] == 1 else np.ascontiguousarray(colour)
    alpha = deep[:, :, -1] if has_alpha else None
    alpha_varies = alpha is not None and alpha.min() != alpha.max()
    report = _pass_progress(progress, 2 if alpha_varies else 1)

    hr = upscaler.upscale(colour, progress=report(0), **run)
    bands = [_luma(hr)[:, :, None]] if img.mode in ("L", "LA") else [hr]
    if alpha is not None:
        if alpha_varies:
            bands.append(_luma(upscaler.upscale(np.repeat(alpha[:, :, None], 3, axis=2), progress=report(1),
                                                **run))[:, :, None])
        else:
            bands.append(np.full((*hr.shape[:2], 1), alpha.flat[0], np.uint16))
    return _from_deep(np.concatenate(bands, axis=2) if len(bands) > 1 else bands[0], img.info)


def _from_deep(deep: np.ndarray, info: Mapping[Any, Any]) -> Image.Image:
    """An image holding ``deep`` in 8 bits, with ``deep`` itself and ``info``'s metadata."""
    top = _to_8_bits(deep)
    out = Image.fromarray(top[:, :, 0] if top.shape[2] == 1 else top)
    for key in ("icc_profile", "exif", SOURCE_FORMAT_KEY):
        if info.get(key):
            out.info[key] = info[key]
    out.info[DEEP_KEY] = deep
    return out


def check_output_pixels(width: int, height: int, max_pixels: int) -> None:
    """Refuse a result of ``width`` x ``height`` with more than ``max_pixels`` pixels."""
    if width * height > max_pixels:
        raise ImageTooLarge(f"the result would be {width}x{height} = {width * height} pixels; "
                            f"the limit is {max_pixels}")


RESAMPLE_FILTER = "lanczos"
"""The filter :func:`resample` uses, as the job record names it."""


def resample(img: Image.Image, width: int, height: int) -> Image.Image:
    """Resize a model's output to ``width x height`` with Lanczos (a = 3), keeping ``info`` (ICC, EXIF, source format).

    Down (an x4 model's output to x2, x2.5 or x3) Pillow widens the filter's support by the ratio, so the
    Lanczos kernel is also the antialiasing low-pass: no blur or ``reduce`` step before it (unlike OpenCV's
    ``INTER_LANCZOS4``, which does not widen it and aliases). Measured on 8 BSD200 training images (LR: Pillow
    bicubic; the x4 model, then resized to the asked scale; PSNR-Y against the HR; docs/service.md "Any output
    size"): Lanczos and bicubic tie (32.32/32.32 dB at x2, 30.50/30.52 at x2.5, 29.33/29.35 at x3, 26.48/26.48
    up to x6), both at or above Hamming, box, bilinear and ``reduce(2)``, and 0.9-2.1 dB above a bicubic upscale
    of the input; each costs under 0.07 us per output pixel, nothing beside the model. On a tie Lanczos stays:
    it is what the service used before (results asked at another scale do not change) and what Real-ESRGAN's
    ``--outscale`` uses.
    """
    if img.size == (width, height):
        return img
    deep = deep_pixels(img)
    if deep is not None:  # band by band in float: Pillow has no 16-bit RGB mode
        bands = [np.asarray(Image.fromarray(deep[:, :, i].astype(np.float32), "F").resize(
            (width, height), Image.Resampling.LANCZOS)) for i in range(deep.shape[2])]
        return _from_deep(np.clip(np.rint(np.stack(bands, axis=2)), 0, 65535).astype(np.uint16), img.info)
    out = img.resize((width, height), Image.Resampling.LANCZOS)
    out.info.update(img.info)
    return out


def check_encodable(mode: str, fmt: str) -> None:
    """Refuse to flatten an image with alpha (``mode``) into JPEG (``fmt``, a format key)."""
    if fmt == "jpeg" and mode in ("RGBA", "LA"):
        raise InvalidParameter("JPEG cannot hold the alpha channel of this image; ask for png, webp or avif")


def output_format(img: Image.Image, requested: str | None) -> str:
    """The output format key (png, jpeg, webp, avif): the request, else the input's family."""
    if requested:
        key = FORMAT_ALIASES.get(requested.lower(), requested.lower())
        if key not in OUTPUT_FORMATS:
            raise InvalidParameter(f"unknown output format {requested!r}; use png, jpeg, webp or avif")
        return key
    return default_output_format(str(img.info.get(SOURCE_FORMAT_KEY) or "PNG"), img.mode in ("RGBA", "LA"))


def default_output_format(source_format: str, has_alpha: bool) -> str:
    """The output format of an input in ``source_format`` when none is asked: its family (a HEIC photo: JPEG;
    png for the rest)."""
    source = source_format.upper()
    if source in (*JPEG_FORMATS, "HEIF") and not has_alpha:
        return "jpeg"
    if source == "WEBP":
        return "webp"
    if source == "AVIF":
        return "avif"
    return "png"


PROVENANCE_KEY = "srgan"
"""PNG text chunk holding the result's provenance (JSON); JPEG and WebP carry it as the EXIF Software tag."""
_EXIF_SOFTWARE = 0x0131


# zlib level of the PNGs written: 1 is OpenCV's default (what Real-ESRGAN's scripts write). On a 2048x1536
# result (AMD EPYC, 2 vCPU) level 6, zlib's default, took 1.06 s and 4.93 MB, level 1 0.24 s and 5.53 MB: 12 %
# more bytes for a quarter of the time, which a small image's whole `srgan upscale` felt as 15 %.
PNG_LEVEL = 1


def encode_image(
    img: Image.Image, fmt: str | None = None, quality: int = 95, provenance: dict[str, object] | None = None
) -> tuple[bytes, str]:
    """Encode to PNG, JPEG, WebP or AVIF; returns the bytes and their media type.

    ``quality`` (1..100) applies to JPEG, WebP and AVIF; WebP at 100 is lossless.
    An image with 16-bit pixels (:func:`deep_pixels`) is written with 16 bits per
    channel as PNG; another format gets its top 8 bits, with a warning in
    ``img.info[WARNINGS_KEY]``.
    ``provenance`` (which model, which ``detail``) is stored in the file's
    metadata: a PNG ``srgan`` text chunk, or the EXIF Software tag. EXIF the format
    cannot take (over JPEG's 64 KB segment, say) is dropped, the provenance kept,
    with a warning in ``img.info[WARNINGS_KEY]``.
    """
    key = output_format(img, fmt)
    if not 1 <= quality <= 100:
        raise InvalidParameter(f"quality must be between 1 and 100, got {quality}")
    pil_format, media_type = OUTPUT_FORMATS[key]
    check_encodable(img.mode, key)
    deep = deep_pixels(img)
    if deep is not None and key in DEEP_OUTPUTS:
        return _encode_png16(deep, img.info, provenance), media_type
    if deep is not None:
        img.info.setdefault(WARNINGS_KEY, []).append(
            f"{key.upper()} holds 8 bits per channel: the 16-bit image was written with 8 (ask for png to keep 16)")
    options: dict[str, object] = {}
    for meta in ("icc_profile", "exif"):
        if img.info.get(meta):
            options[meta] = img.info[meta]
    provenance_only: bytes | None = None  # the EXIF to fall back on when the source's cannot be written
    if provenance:
        text = json.dumps(provenance, sort_keys=True, separators=(",", ":"))
        if key == "png":
            info = PngImagePlugin.PngInfo()
            info.add_text(PROVENANCE_KEY, text)
            options["pnginfo"] = info
        else:
            exif = Image.Exif()
            if options.get("exif"):
                try:
                    exif.load(options["exif"])  # type: ignore[arg-type]
                except Exception:  # noqa: BLE001 - unreadable EXIF: keep the provenance alone
                    exif = Image.Exif()
            exif[_EXIF_SOFTWARE] = f"{PROVENANCE_KEY} {text}"
            options["exif"] = exif.tobytes()
            alone = Image.Exif()
            alone[_EXIF_SOFTWARE] = f"{PROVENANCE_KEY} {text}"
            provenance_only = alone.tobytes()
    if key == "jpeg":
        options.update(quality=quality, subsampling=0 if quality >= 90 else 2, optimize=False)
    elif key == "webp":
        options.update(quality=quality, lossless=quality >= 100, method=4)
    elif key == "avif":
        options.update(quality=quality, subsampling="4:4:4" if quality >= 90 else "4:2:0", speed=6)
    else:
        options.update(compress_level=PNG_LEVEL)
    buf = io.BytesIO()
    try:
        img.save(buf, format=pil_format, **options)
    except Exception as exc:  # noqa: BLE001 - e.g. EXIF over JPEG's 64 KB segment; retried without it below
        if "exif" not in options or options["exif"] == provenance_only:
            raise
        if provenance_only is not None:
            options["exif"] = provenance_only
        else:
            del options["exif"]
        buf = io.BytesIO()
        img.save(buf, format=pil_format, **options)
        img.info.setdefault(WARNINGS_KEY, []).append(
            f"the EXIF metadata could not be written to {key.upper()} and was dropped: {exc}")
    return buf.getvalue(), media_type


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _encode_png16(deep: np.ndarray, info: Mapping[Any, Any], provenance: dict[str, object] | None) -> bytes:
    """A 16-bit PNG of ``deep`` (libpng through imagecodecs) with the ICC profile (``iCCP``), the EXIF
    (``eXIf``) and the provenance (``tEXt``) Pillow would write, inserted after ``IHDR``."""
    import imagecodecs  # start-up: loaded only for 16-bit images

    pixels = deep[:, :, 0] if deep.shape[2] == 1 else deep
    png = bytes(imagecodecs.png_encode(np.ascontiguousarray(pixels), level=PNG_LEVEL))
    chunks = b""
    icc = info.get("icc_profile")
    if icc:
        chunks += _png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc))
    exif = info.get("exif")
    if exif:
        chunks += _png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif)
    if provenance:
        text = json.dumps(provenance, sort_keys=True, separators=(",", ":"))
        chunks += _png_chunk(b"tEXt", PROVENANCE_KEY.encode() + b"\0" + text.encode("latin-1", "replace"))
    ihdr_end = 8 + 4 + 4 + 13 + 4  # signature, then IHDR's length, type, body and CRC
    return png[:ihdr_end] + chunks + png[ihdr_end:]


def extension_for(fmt: str) -> str:
    return {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "avif": ".avif"}[fmt]
