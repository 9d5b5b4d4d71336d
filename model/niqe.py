"""NIQE, the no-reference naturalness score of the quality protocol (lower is more natural).

Mittal, Soundararajan and Bovik, "Making a 'completely blind' image quality
analyzer", IEEE Signal Processing Letters 20(3), 2013, computed as the
authors' MATLAB release (and BasicSR's port of it) does: Y channel on 0..255
(BT.601 as MATLAB's ``rgb2ycbcr``), no border crop, whole 96x96 blocks, two
scales (the second made by MATLAB's antialiased bicubic ``imresize`` by 0.5),
36 natural-scene-statistics features per block, and the distance of their
multivariate Gaussian to the pristine model's. numpy only; the pristine model
(``niqe_pris_params.npz``, from the MATLAB release as redistributed by
BasicSR, Apache-2.0) ships beside the model weights.

PSNR rewards blur; NIQE does not, so a perceptual (GAN) model is measured
with both (``srgan eval``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from model.quality import rgb_to_y

__all__ = ["NiqeModel", "niqe", "niqe_y", "matlab_imresize_half"]

PRISTINE = Path(__file__).with_name("weights") / "niqe_pris_params.npz"
BLOCK = 96


@dataclass(frozen=True)
class NiqeModel:
    """The pristine images' Gaussian (36 means, 36x36 covariance) and the 7x7 local window."""

    mu: np.ndarray
    cov: np.ndarray
    window: np.ndarray

    @classmethod
    def load(cls, path: Path | None = None) -> NiqeModel:
        path = Path(path) if path is not None else PRISTINE
        if not path.is_file():
            raise FileNotFoundError(f"NIQE pristine model not found at {path}")
        with np.load(path) as npz:
            return cls(
                mu=np.asarray(npz["mu_pris_param"], dtype=np.float64).reshape(-1),
                cov=np.asarray(npz["cov_pris_param"], dtype=np.float64),
                window=np.asarray(npz["gaussian_window"], dtype=np.float64),
            )


@lru_cache(maxsize=4)
def _default_model(path: str) -> NiqeModel:
    return NiqeModel.load(Path(path))


def niqe(img_hwc: np.ndarray, model: NiqeModel | None = None) -> float:
    """NIQE of an RGB image (H, W, 3) on 0..255 (or a 2-D grey image, taken as Y)."""
    img = np.asarray(img_hwc)
    y = img.astype(np.float64) if img.ndim == 2 else np.round(rgb_to_y(img))
    return niqe_y(y, model)


def niqe_y(y: np.ndarray, model: NiqeModel | None = None) -> float:
    """NIQE of a luma image (float, 16..235 scale as ``rgb_to_y`` gives)."""
    model = model or _default_model(str(PRISTINE))
    y = np.asarray(y, dtype=np.float32)  # the reference computes in float32; it matters on small images
    rows, cols = y.shape[0] // BLOCK, y.shape[1] // BLOCK
    if rows == 0 or cols == 0:
        raise ValueError(f"NIQE needs at least one {BLOCK}x{BLOCK} block, got an image of {y.shape[1]}x{y.shape[0]}")
    y = y[: rows * BLOCK, : cols * BLOCK]
    feats = []
    for scale in (1, 2):
        mu = _filter(y, model.window)
        sigma = np.sqrt(np.abs(_filter(y * y, model.window) - mu * mu))
        norm = (y - mu) / (sigma + 1.0)
        size = BLOCK // scale
        feats.append(
            np.array(
                [
                    _block_features(norm[r * size : (r + 1) * size, c * size : (c + 1) * size])
                    for c in range(cols)
                    for r in range(rows)
                ]
            )
        )
        if scale == 1:
            y = (matlab_imresize_half(y / np.float32(255.0)) * np.float32(255.0)).astype(np.float32)
    dist = np.concatenate(feats, axis=1)
    mu_d = np.nanmean(dist, axis=0)
    clean = dist[~np.isnan(dist).any(axis=1)]
    cov_d = np.cov(clean, rowvar=False) if len(clean) > 1 else np.zeros_like(model.cov)
    diff = model.mu - mu_d
    score = diff @ np.linalg.pinv((model.cov + cov_d) / 2.0) @ diff
    return float(np.sqrt(score))


def _filter(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.convolve(img, window, mode='nearest')`` for a small odd window.

    Like scipy, it sums in float64 and returns the input's dtype.
    """
    kh, kw = window.shape
    ph, pw = kh // 2, kw // 2
    padded = np.pad(img, ((ph, ph), (pw, pw)), mode="edge")
    flipped = window[::-1, ::-1].astype(np.float64)
    out = np.zeros(img.shape, dtype=np.float64)
    h, w = img.shape
    for i in range(kh):
        for j in range(kw):
            out += flipped[i, j] * padded[i : i + h, j : j + w]
    return out.astype(img.dtype)


_GAMMAS = np.arange(0.2, 10.001, 0.001)


@lru_cache(maxsize=1)
def _r_gam() -> np.ndarray:
    g = np.array([math.lgamma(2.0 / a) * 2 - math.lgamma(1.0 / a) - math.lgamma(3.0 / a) for a in _GAMMAS])
    return np.exp(g)


def _aggd(block: np.ndarray) -> tuple[float, float, float]:
    """Asymmetric generalised Gaussian fit: shape, left scale, right scale (moment matching)."""
    v = block.reshape(-1)
    left = np.sqrt(np.mean(v[v < 0] ** 2)) if np.any(v < 0) else np.nan
    right = np.sqrt(np.mean(v[v > 0] ** 2)) if np.any(v > 0) else np.nan
    gammahat = left / right
    rhat = np.mean(np.abs(v)) ** 2 / np.mean(v**2)
    rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / ((gammahat**2 + 1) ** 2)
    alpha = float(_GAMMAS[np.argmin((_r_gam() - rhatnorm) ** 2)])
    ratio = math.sqrt(math.gamma(1.0 / alpha) / math.gamma(3.0 / alpha))
    return alpha, left * ratio, right * ratio


def _block_features(block: np.ndarray) -> list[float]:
    alpha, bl, br = _aggd(block)
    feat = [alpha, (bl + br) / 2.0]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        alpha, bl, br = _aggd(block * np.roll(block, shift, axis=(0, 1)))
        mean = (br - bl) * math.gamma(2.0 / alpha) / math.gamma(1.0 / alpha)
        feat.extend([alpha, mean, bl, br])
    return feat


def _cubic(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return (1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1) + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2))


@lru_cache(maxsize=16)
def _half_weights(n: int) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB ``imresize`` weights and (0-based, symmetric-padded) source indices for n -> ceil(n/2)."""
    scale, width = 0.5, 4.0 / 0.5
    out = math.ceil(n * scale)
    x = np.arange(1, out + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    weights = scale * _cubic((u[:, None] - idx) * scale)
    weights /= weights.sum(axis=1, keepdims=True)
    zero_based = idx.astype(np.int64) - 1
    period = 2 * n
    m = np.mod(zero_based, period)
    src = np.where(m < n, m, period - 1 - m)  # MATLAB's 'symmetric' padding
    return weights, src


def matlab_imresize_half(img: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(img, 0.5)`` (bicubic, antialiased) of a 2-D float image."""
    wh, sh = _half_weights(img.shape[0])
    tmp = np.einsum("ok,okw->ow", wh.astype(img.dtype), img[sh])
    ww, sw = _half_weights(img.shape[1])
    return np.einsum("ok,hok->ho", ww.astype(img.dtype), tmp[:, sw])
