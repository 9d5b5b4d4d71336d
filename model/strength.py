"""How degraded an upload is: the JPEG quality it was saved at and its noise level, and the `denoise` strength
``auto`` picks from them (numpy and Pillow only).

- JPEG quality: the file's luminance quantization table compared with libjpeg's standard table scaled for each
  quality 1..100 (the IJG formula every common encoder uses); the closest is the estimate. Files with custom
  tables get the nearest standard quality; formats with no tables (PNG, WebP, ...) have none.
- Noise: Immerkaer's fast noise variance estimator (J. Immerkaer, "Fast Noise Variance Estimation", Computer Vision
  and Image Understanding 64(2), 1996) on the luma: sigma = sqrt(pi/2) / (6 N) * sum |I * L| with L the 3x3
  Laplacian difference mask, per block, keeping the flat blocks (as block-based estimators do, e.g. S.-C. Tai and
  S.-M. Yang, ISCCSP 2008, leave edges out): texture reads as noise otherwise.

:func:`auto_denoise` maps the two to a strength in 0..1 with :data:`AUTO`'s thresholds (calibrated on the training
split by ``srgan bench realworld --calibrate``; bench/README.md has the run). A clean image gets 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

# libjpeg's standard luminance table (ITU-T T.81 Annex K), natural (row-major) order, as Pillow reports tables
_STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.float64)

_NOISE_MAX_SIDE = 1024
"""The noise estimate reads at most the central 1024x1024 pixels (a few ms on any upload)."""
_BLOCK = 8
_FLATTEST = 0.05
_PERCENTILE_BIAS = 0.75
"""Immerkaer's estimate is taken per 8x8 block, and the 5th percentile of the blocks, divided by 0.75, is the
image's: texture and edges raise a block's estimate, noise raises every block's (the flattest blocks of a photo
are noise alone). On pure Gaussian noise that percentile is 0.74-0.76 of sigma (256x256, sigma 2-20, measured).
Small blocks and a low percentile find the few flat places of a textured photo: on the 16 held-out training images
downscaled without noise, 16x16 blocks at the 20th percentile read up to 6.8 levels (as much as noise of sigma 6
on the others), these up to 2.5."""


def standard_table(quality: int) -> np.ndarray:
    """libjpeg's luminance table for ``quality`` (1..100): jpeg_quality_scaling then clamped to 1..255."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q  # integer arithmetic, as jcparam.c
    return np.clip(np.floor((_STD_LUMA * scale + 50) / 100), 1, 255)


def jpeg_quality(img: Image.Image) -> int | None:
    """The quality a JPEG was saved at, from its luminance table; None for an image with no JPEG tables."""
    tables = getattr(img, "quantization", None)
    if not tables or 0 not in tables or len(tables[0]) != 64:
        return None
    luma = np.asarray(tables[0], dtype=np.float64)
    errors = [float(np.abs(np.log(luma) - np.log(standard_table(q))).sum()) for q in range(1, 101)]
    return int(np.argmin(errors)) + 1


def noise_sigma(rgb_hwc_u8: np.ndarray) -> float:
    """Standard deviation of the noise of an image (0..255 levels, on BT.601 luma), edges left out."""
    h, w = rgb_hwc_u8.shape[:2]
    y0, x0 = max(0, (h - _NOISE_MAX_SIDE) // 2), max(0, (w - _NOISE_MAX_SIDE) // 2)
    img = rgb_hwc_u8[y0 : y0 + _NOISE_MAX_SIDE, x0 : x0 + _NOISE_MAX_SIDE].astype(np.float64)
    luma = img @ np.array([0.299, 0.587, 0.114]) if img.ndim == 3 else img
    if min(luma.shape) < 3:
        return 0.0
    c = luma[1:-1, 1:-1]
    n, s, e, wst = luma[:-2, 1:-1], luma[2:, 1:-1], luma[1:-1, 2:], luma[1:-1, :-2]
    ne, nw, se, sw = luma[:-2, 2:], luma[:-2, :-2], luma[2:, 2:], luma[2:, :-2]
    response = np.abs(4 * c - 2 * (n + s + e + wst) + (ne + nw + se + sw))
    bh, bw = response.shape[0] // _BLOCK, response.shape[1] // _BLOCK
    if bh * bw < 4:
        return float(math.sqrt(math.pi / 2) / 6 * response.mean())
    blocks = response[: bh * _BLOCK, : bw * _BLOCK].reshape(bh, _BLOCK, bw, _BLOCK).mean(axis=(1, 3))
    return float(math.sqrt(math.pi / 2) / 6 * np.percentile(blocks, _FLATTEST * 100) / _PERCENTILE_BIAS)


@dataclass(frozen=True)
class AutoThresholds:
    """``auto``'s mapping: a quality at or above ``jpeg_clean`` or a noise under ``noise_clean`` adds nothing;
    strength grows linearly to 1 at ``jpeg_strong`` / ``noise_strong``; the larger of the two is taken.

    All four were fitted by ``srgan bench realworld --calibrate`` on the 16 held-out training images and all five
    conditions for the finished ``realworld_x4`` (step 10,000 of its 15,000; 2026-12-07, at ``auto`` precision:
    int8 on an AVX512-VNNI EPYC): 0.120 dB below each image's best denoise on average. Every clean image gets 0
    with a margin (``bench.realworld.CLEAN_NOISE_MARGIN``): the estimator reads up to 2.52 on them and 2.8 on a
    64x64 crop of one, so ``noise_clean`` is 3.0 (2.5 without the margin: 0.119 dB). The fit at step 5,555 was
    95 / 40 / 2.5 / 16: the finished model wants more strength for the same JPEG quality and noise. A model's card
    may carry its own fit (``denoise_auto``, :func:`thresholds_of`; ``realworld_x2``'s does)."""

    jpeg_clean: float = 98.0
    jpeg_strong: float = 50.0
    noise_clean: float = 3.0
    noise_strong: float = 8.0


AUTO = AutoThresholds()
"""The thresholds of a model whose card has none (``denoise_auto``, written by ``srgan bench realworld --calibrate
--write-card``): those fitted on ``realworld_x4``."""


def thresholds_of(card_entry: object) -> AutoThresholds:
    """A card's ``denoise_auto`` entry (``{"thresholds": {...}, ...}``) as thresholds; :data:`AUTO` without one."""
    if not isinstance(card_entry, dict) or not isinstance(card_entry.get("thresholds"), dict):
        return AUTO
    values = card_entry["thresholds"]
    return AutoThresholds(**{k: float(values[k]) for k in AutoThresholds.__dataclass_fields__ if k in values})


@dataclass(frozen=True)
class Strength:
    """A denoise strength and why: ``{"value": 0.62, "from": "jpeg q58, noise 3.1"}`` in a job record."""

    value: float
    reason: str

    def to_json(self) -> dict[str, float | str]:
        return {"value": self.value, "from": self.reason}


def auto_denoise(quality: int | None, sigma: float, thresholds: AutoThresholds = AUTO) -> Strength:
    """The strength ``auto`` picks for an upload of JPEG ``quality`` (None: not a JPEG) and noise ``sigma``."""
    t = thresholds
    from_jpeg = 0.0 if quality is None else (t.jpeg_clean - quality) / (t.jpeg_clean - t.jpeg_strong)
    from_noise = (sigma - t.noise_clean) / (t.noise_strong - t.noise_clean)
    value = round(min(1.0, max(0.0, from_jpeg, from_noise)), 2)
    reason = (f"jpeg q{quality}, " if quality is not None else "no jpeg tables, ") + f"noise {sigma:.1f}"
    return Strength(value, reason)


def estimate(img: Image.Image, rgb_hwc_u8: np.ndarray) -> Strength:
    """``auto``'s strength for a decoded upload (``img`` for its JPEG tables, ``rgb_hwc_u8`` its pixels)."""
    return auto_denoise(jpeg_quality(img), noise_sigma(rgb_hwc_u8))
