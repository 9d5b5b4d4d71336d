"""The quality protocol: the one degradation and the one pair of metrics.

Training makes its low-resolution inputs with :func:`bicubic_downscale` and
evaluation measures with :func:`psnr_y` and :func:`ssim_y`, so a number
measured anywhere in the project means the same thing (docs/training.md,
"Evaluation", describes the protocol for users). numpy and Pillow only.

- LR = Pillow bicubic downscale of the HR image cropped to a multiple of the
  scale (:func:`crop_to_multiple`).
- PSNR and SSIM on the ITU-R BT.601 luma (Y in 16..235, as a float, not
  rounded), with ``scale`` pixels cropped from each border.
- SSIM is Wang et al. 2004 as in their MATLAB ``ssim.m``: 11x11 Gaussian
  window with sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, valid filtering.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "bicubic_downscale",
    "bicubic_upscale",
    "color_shift",
    "crop_to_multiple",
    "flat_region_error",
    "metric_tag",
    "psnr_y",
    "rgb_to_y",
    "ssim_y",
]


def crop_to_multiple(hr_hwc: np.ndarray, scale: int) -> np.ndarray:
    """``hr_hwc`` with its bottom and right edges cut to multiples of ``scale``."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    h, w = hr_hwc.shape[:2]
    h, w = h - h % scale, w - w % scale
    if h == 0 or w == 0:
        raise ValueError(f"image of {hr_hwc.shape[1]}x{hr_hwc.shape[0]} is smaller than the scale {scale}")
    return hr_hwc[:h, :w]


def _resize_u8(img_hwc_u8: np.ndarray, width: int, height: int) -> np.ndarray:
    if img_hwc_u8.dtype != np.uint8 or img_hwc_u8.ndim != 3 or img_hwc_u8.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {img_hwc_u8.shape} {img_hwc_u8.dtype}")
    pil = Image.fromarray(np.ascontiguousarray(img_hwc_u8))
    return np.asarray(pil.resize((width, height), Image.Resampling.BICUBIC), dtype=np.uint8)


def bicubic_downscale(hr_hwc_u8: np.ndarray, scale: int) -> np.ndarray:
    """The degradation: Pillow bicubic downscale of the HR cropped to a multiple of ``scale``.

    Returns the (H // scale, W // scale, 3) uint8 low-resolution image. Use
    :func:`crop_to_multiple` on the HR to get the matching target.
    """
    hr = crop_to_multiple(hr_hwc_u8, scale)
    h, w = hr.shape[:2]
    return _resize_u8(hr, w // scale, h // scale)


def bicubic_upscale(lr_hwc_u8: np.ndarray, scale: int) -> np.ndarray:
    """Pillow bicubic upscale by ``scale``: the baseline printed beside every model."""
    h, w = lr_hwc_u8.shape[:2]
    return _resize_u8(lr_hwc_u8, w * scale, h * scale)


def rgb_to_y(img_hwc: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an RGB image with values 0..255: float64 Y in 16..235."""
    rgb = np.asarray(img_hwc, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {rgb.shape}")
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def _y_pair(a: np.ndarray, b: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    ya, yb = rgb_to_y(a), rgb_to_y(b)
    if crop > 0:
        if min(ya.shape) <= 2 * crop:
            raise ValueError(f"image of shape {a.shape} is too small for a border crop of {crop}")
        ya, yb = ya[crop:-crop, crop:-crop], yb[crop:-crop, crop:-crop]
    return ya, yb


def psnr_y(a_hwc: np.ndarray, b_hwc: np.ndarray, crop: int = 0) -> float:
    """PSNR in dB between two RGB images (0..255) on Y, ``crop`` border pixels removed.

    Pass ``crop=scale`` for the protocol. Identical images give ``inf``.
    """
    ya, yb = _y_pair(a_hwc, b_hwc, crop)
    mse = float(np.mean((ya - yb) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D float image with the 1-D kernel ``g`` (both axes)."""
    k = g.size
    rows = np.lib.stride_tricks.sliding_window_view(img, k, axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=1) @ g


def ssim_y(a_hwc: np.ndarray, b_hwc: np.ndarray, crop: int = 0) -> float:
    """Mean SSIM (Wang et al. 2004, MATLAB reference) on Y, ``crop`` border pixels removed."""
    ya, yb = _y_pair(a_hwc, b_hwc, crop)
    if min(ya.shape) < 11:
        raise ValueError(f"images of shape {a_hwc.shape} are too small for an 11x11 SSIM window after cropping")
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    g = _gaussian_window()
    mu_a, mu_b = _filter_valid(ya, g), _filter_valid(yb, g)
    var_a = _filter_valid(ya * ya, g) - mu_a**2
    var_b = _filter_valid(yb * yb, g) - mu_b**2
    cov = _filter_valid(ya * yb, g) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def color_shift(sr_hwc: np.ndarray, hr_hwc: np.ndarray) -> float:
    """Largest difference of a channel's mean between ``sr_hwc`` and ``hr_hwc`` (0..255 levels)."""
    sr = sr_hwc.reshape(-1, 3).astype(np.float64).mean(axis=0)
    hr = hr_hwc.reshape(-1, 3).astype(np.float64).mean(axis=0)
    return float(np.abs(sr - hr).max())


FLAT_WINDOW = 7
FLAT_MAX_STD = 3.0
"""A pixel is flat when the HR's Y varies by less than this (standard deviation, levels) in the
FLAT_WINDOW x FLAT_WINDOW box around it: sky, walls, skin, where a model must not paint texture or keep noise."""


def _box_mean(img: np.ndarray, k: int) -> np.ndarray:
    """Mean of every ``k`` x ``k`` box of ``img`` that fits inside it (an integral image)."""
    c = np.pad(img, ((1, 0), (1, 0))).cumsum(axis=0).cumsum(axis=1)
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def flat_region_error(sr_hwc: np.ndarray, hr_hwc: np.ndarray, crop: int = 0) -> float:
    """Standard deviation of the Y error of ``sr_hwc`` on the HR's flat pixels (see FLAT_MAX_STD); nan when none
    is flat.

    Amplified JPEG blocks, noise and invented crackle show here, where PSNR averages them away and NIQE can
    reward them; a mean offset is ``color_shift``'s business (it does not count).
    """
    ya, yb = _y_pair(sr_hwc, hr_hwc, crop)
    k = FLAT_WINDOW
    if min(yb.shape) < k:
        return math.nan
    mean = _box_mean(yb, k)
    var = _box_mean(yb * yb, k) - mean * mean
    flat = var < FLAT_MAX_STD**2
    h = k // 2
    err = (ya - yb)[h:h + flat.shape[0], h:h + flat.shape[1]]
    return float(err[flat].std()) if flat.any() else math.nan


def metric_tag(folder: str | Path) -> str:
    """The prefix of the metrics measured on ``folder`` (``Set5`` gives ``set5_psnr_y``, ``set5_ssim_y``)."""
    return re.sub(r"[^a-z0-9]+", "_", Path(folder).name.lower()).strip("_") or "eval"
