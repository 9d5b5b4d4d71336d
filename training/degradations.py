"""Real-world degradations: what turns a clean photo into the images people upload (numpy and Pillow; no TensorFlow).

The high-order model of Real-ESRGAN (Wang et al. 2021, arXiv 2107.10833,
``realesrgan/data/realesrgan_dataset.py`` and ``models/realesrgan_model.py``)
with BSRGAN's shuffled order (Zhang et al. 2021, arXiv 2103.14006): two passes of
blur, resize and noise in a random order, each pass ending with a real libjpeg
round trip, then a resize to the LR size and a sinc (ringing) filter and JPEG
in either order. Each stage is a small pure function with its parameters named;
:func:`degrade` draws every parameter from one ``numpy.random.Generator``, so a
crop's degradation is a pure function of its seed (``training.data`` seeds it
with the run's seed and the crop's index: a resumed run sees the same crops).

Images are float32 HWC in 0..1 between stages; JPEG quantises to uint8 (as a real
file would). The ranges are :class:`training.config.DegradeConfig` (documented
in docs/training.md); their defaults are Real-ESRGAN's ``train_realesrnet_x4plus.yml``.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from model.quality import bicubic_downscale, crop_to_multiple
from training.config import DegradeConfig
from training.sources import read_rgb

KERNEL_SIZE = 21
"""Blur and sinc kernels are drawn on a 21x21 grid (Real-ESRGAN's largest size); smaller sizes are zero outside."""

KERNEL_KINDS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")

RESIZE_FILTERS = {"area": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR,
                  "bicubic": Image.Resampling.BICUBIC}


# --- kernels ----------------------------------------------------------------------------


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    return np.meshgrid(r, r, indexing="xy")


def _quadratic_form(sigma_x: float, sigma_y: float, theta: float, size: int) -> np.ndarray:
    """x^T S^-1 x on the grid, for the covariance S of a Gaussian with these axes turned by ``theta``."""
    x, y = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * x + s * y, -s * x + c * y
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def gaussian_kernel(sigma_x: float, sigma_y: float, theta: float, size: int = KERNEL_SIZE) -> np.ndarray:
    """An (an)isotropic Gaussian, normalised to sum 1."""
    k = np.exp(-0.5 * _quadratic_form(sigma_x, sigma_y, theta, size))
    return (k / k.sum()).astype(np.float32)


def generalized_gaussian_kernel(sigma_x: float, sigma_y: float, theta: float, beta: float,
                                size: int = KERNEL_SIZE) -> np.ndarray:
    """exp(-0.5 (x^T S^-1 x)^beta): flatter top (beta > 1) or heavier tails (beta < 1) than a Gaussian."""
    k = np.exp(-0.5 * _quadratic_form(sigma_x, sigma_y, theta, size) ** beta)
    return (k / k.sum()).astype(np.float32)


def plateau_kernel(sigma_x: float, sigma_y: float, theta: float, beta: float, size: int = KERNEL_SIZE) -> np.ndarray:
    """1 / (1 + (x^T S^-1 x)^beta): a flat top and slow fall (out-of-focus blur)."""
    k = 1.0 / (1.0 + _quadratic_form(sigma_x, sigma_y, theta, size) ** beta)
    return (k / k.sum()).astype(np.float32)


def sinc_kernel(omega_c: float, size: int = KERNEL_SIZE) -> np.ndarray:
    """A circular low-pass filter of cut-off ``omega_c`` (radians per pixel): ringing and overshoot at edges.

    omega_c J1(omega_c r) / (2 pi r), with its limit omega_c^2 / (4 pi) at r = 0, normalised to sum 1.
    """
    x, y = _grid(size)
    radii, where = np.unique(np.hypot(x, y), return_inverse=True)  # 66 distinct radii on a 21x21 grid
    with np.errstate(invalid="ignore", divide="ignore"):
        values = omega_c * _bessel_j1(omega_c * radii) / (2 * np.pi * radii)
    values[radii == 0] = omega_c**2 / (4 * np.pi)
    k = values[where].reshape(x.shape)
    return (k / k.sum()).astype(np.float32)


def _bessel_j1(x: np.ndarray) -> np.ndarray:
    """J1 by its integral form (1/pi) int_0^pi cos(t - x sin t) dt, on 256 midpoints: accurate to 1e-9 for x < 60."""
    t = (np.arange(256) + 0.5) * (np.pi / 256)
    return np.cos(t[None, :] - x.reshape(-1, 1) * np.sin(t)[None, :]).mean(axis=1).reshape(x.shape)


def _crop_kernel(k: np.ndarray, size: int) -> np.ndarray:
    """The kernel cut to its central ``size`` x ``size`` (zero outside), normalised again."""
    pad = (k.shape[0] - size) // 2
    out = np.zeros_like(k)
    out[pad : pad + size, pad : pad + size] = k[pad : pad + size, pad : pad + size]
    return (out / out.sum()).astype(np.float32)


def random_kernel(rng: np.random.Generator, sigma: tuple[float, float], betag: tuple[float, float],
                  betap: tuple[float, float], sinc_prob: float) -> np.ndarray:
    """A blur kernel drawn as Real-ESRGAN draws one: odd size 7..21, then sinc (``sinc_prob``) or one of the
    six kinds with probabilities 0.45, 0.25, 0.12, 0.03, 0.12, 0.03."""
    size = int(rng.choice(np.arange(7, KERNEL_SIZE + 1, 2)))
    if rng.uniform() < sinc_prob:
        omega_c = rng.uniform(np.pi / 3, np.pi) if size < 13 else rng.uniform(np.pi / 5, np.pi)
        return _crop_kernel(sinc_kernel(omega_c), size)
    kind = KERNEL_KINDS[int(rng.choice(6, p=[0.45, 0.25, 0.12, 0.03, 0.12, 0.03]))]
    sx = rng.uniform(*sigma)
    iso = kind.endswith("iso") and not kind.endswith("aniso")
    sy, theta = (sx, 0.0) if iso else (rng.uniform(*sigma), rng.uniform(-np.pi, np.pi))
    if kind.startswith("generalized"):
        k = generalized_gaussian_kernel(sx, sy, theta, _draw_beta(rng, betag))
    elif kind.startswith("plateau"):
        k = plateau_kernel(sx, sy, theta, _draw_beta(rng, betap))
    else:
        k = gaussian_kernel(sx, sy, theta)
    return _crop_kernel(k, size)


def _draw_beta(rng: np.random.Generator, beta: tuple[float, float]) -> float:
    """Real-ESRGAN's draw: half the time below 1 (heavy tails), half above."""
    lo, hi = beta
    return float(rng.uniform(lo, 1.0) if rng.uniform() < 0.5 and lo < 1 else rng.uniform(1.0, hi))


# --- stages -------------------------------------------------------------------------------


def blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each channel with ``kernel`` (reflected borders), through the FFT."""
    pad = kernel.shape[0] // 2
    h, w = img.shape[:2]
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    ph, pw = padded.shape[:2]
    spectrum = np.fft.rfft2(padded, axes=(0, 1)) * np.fft.rfft2(kernel, s=(ph, pw))[:, :, None]
    out = np.fft.irfft2(spectrum, s=(ph, pw), axes=(0, 1))
    # the product is a circular convolution whose output is shifted by the kernel's centre
    return out[2 * pad : 2 * pad + h, 2 * pad : 2 * pad + w].astype(np.float32)


def resize(img: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Resize to ``size`` = (height, width) with ``mode`` (area, bilinear or bicubic), in float."""
    h, w = size
    if (h, w) == img.shape[:2]:
        return img
    channels = [Image.fromarray(np.ascontiguousarray(img[:, :, c])).resize((w, h), RESIZE_FILTERS[mode])
                for c in range(img.shape[2])]
    return np.stack([np.asarray(c, dtype=np.float32) for c in channels], axis=2)


def gaussian_noise(img: np.ndarray, rng: np.random.Generator, sigma: float, gray: bool) -> np.ndarray:
    """Add Gaussian noise of standard deviation ``sigma`` (0..255 levels); ``gray``: the same in every channel.

    Limited near black and white (:func:`_within_range`), so that the clip to 0..1 does not shift colours.
    """
    shape = img.shape[:2] + ((1,) if gray else (img.shape[2],))
    noise = rng.normal(0.0, sigma / 255.0, shape).astype(np.float32)
    return img + _within_range(img, noise, np.float32(sigma / 255.0))


def poisson_noise(img: np.ndarray, rng: np.random.Generator, scale: float, gray: bool) -> np.ndarray:
    """Add shot noise (Real-ESRGAN's ``add_poisson_noise``): Poisson counts of the image at 255 levels' worth of
    photons, minus the image, times ``scale``; ``gray``: drawn on the luma and added to every channel.
    Limited near black and white like :func:`gaussian_noise`."""
    src = np.clip(img, 0, 1)
    if gray:
        src = (src @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None]
    vals = 2.0 ** math.ceil(math.log2(max(len(np.unique(np.round(src * 255))), 2)))
    noise = rng.poisson(src * vals).astype(np.float32) / vals - src
    std = (scale * np.sqrt(np.maximum(src, 1.0 / vals) / vals)).astype(np.float32)
    return img + _within_range(img, scale * noise, std)


def _within_range(img: np.ndarray, noise: np.ndarray, std: np.ndarray | np.float32) -> np.ndarray:
    """``noise`` scaled down where the image is within two standard deviations of 0 or 1.

    Real-ESRGAN adds the noise and clips: that brightens blacks, darkens whites and desaturates strong colours
    by up to tens of levels (a white of 235 loses about 10 under its noise ranges), and a model trained on it
    shifts the colours of clean inputs the other way (its colour shift). Noise that shrinks at the ends of the
    range, as a saturated sensor's does, keeps every colour's mean (a 0.5-level shift at most).
    """
    room = np.minimum(img, 1.0 - img).clip(0, None)
    return noise * np.minimum(1.0, room / (2.0 * std + 1e-12)).astype(np.float32)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """A real JPEG round trip through libjpeg (Pillow) at ``quality``, 4:2:0 as most cameras and sites save."""
    return jpeg_decode(jpeg_encode(img, quality))


def jpeg_encode(img: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(to_uint8(img)).save(buf, format="JPEG", quality=int(quality), subsampling=2)
    return buf.getvalue()


def jpeg_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


# --- the pipeline -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pass:
    """The ranges of one pass of the high-order model (the first or the second)."""

    blur_prob: float
    sigma: tuple[float, float]
    betag: tuple[float, float]
    betap: tuple[float, float]
    sinc_prob: float
    resize_up_prob: float
    resize_down_prob: float
    resize_range: tuple[float, float]
    gaussian_noise_prob: float
    noise_sigma: tuple[float, float]
    poisson_scale: tuple[float, float]
    gray_noise_prob: float
    jpeg_quality: tuple[int, int]


def passes(cfg: DegradeConfig) -> tuple[Pass, Pass]:
    """The two passes a :class:`DegradeConfig` describes."""
    first = Pass(1.0, cfg.blur_sigma, cfg.betag, cfg.betap, cfg.sinc_prob, cfg.resize_up_prob,
                 cfg.resize_down_prob, cfg.resize_range, cfg.gaussian_noise_prob, cfg.noise_sigma,
                 cfg.poisson_scale, cfg.gray_noise_prob, cfg.jpeg_range)
    second = Pass(cfg.second_blur_prob, cfg.blur_sigma2, cfg.betag, cfg.betap, cfg.sinc_prob2, cfg.resize_up_prob2,
                  cfg.resize_down_prob2, cfg.resize_range2, cfg.gaussian_noise_prob2, cfg.noise_sigma2,
                  cfg.poisson_scale2, cfg.gray_noise_prob2, cfg.jpeg_range2)
    return first, second


def _random_blur(img: np.ndarray, rng: np.random.Generator, p: Pass, trace: list[str]) -> np.ndarray:
    if rng.uniform() >= p.blur_prob:
        return img
    kernel = random_kernel(rng, p.sigma, p.betag, p.betap, p.sinc_prob)
    trace.append(f"blur {int((kernel.sum(axis=0) > 0).sum())}px")
    return blur(img, kernel)


def _random_resize(img: np.ndarray, rng: np.random.Generator, p: Pass, base: tuple[int, int],
                   trace: list[str]) -> np.ndarray:
    """Up (factor above 1), down (below 1) or keep, relative to ``base`` (height, width), by a random filter.

    Real-ESRGAN's first pass resizes relative to the current image, its second relative to the LR size.
    """
    r = rng.uniform()
    lo, hi = p.resize_range
    if r < p.resize_up_prob:
        factor = rng.uniform(1.0, hi)
    elif r < p.resize_up_prob + p.resize_down_prob:
        factor = rng.uniform(lo, 1.0)
    else:
        factor = 1.0
    mode = str(rng.choice(list(RESIZE_FILTERS)))
    size = (max(8, round(base[0] * factor)), max(8, round(base[1] * factor)))
    trace.append(f"resize {mode} to {size[1]}x{size[0]}")
    return resize(img, size, mode)


def _random_noise(img: np.ndarray, rng: np.random.Generator, p: Pass, trace: list[str]) -> np.ndarray:
    gray = rng.uniform() < p.gray_noise_prob
    kind = "gray" if gray else "colour"
    if rng.uniform() < p.gaussian_noise_prob:
        sigma = rng.uniform(*p.noise_sigma)
        trace.append(f"{kind} gaussian noise {sigma:.1f}")
        return gaussian_noise(img, rng, sigma, gray)
    scale = rng.uniform(*p.poisson_scale)
    trace.append(f"{kind} poisson noise x{scale:.2f}")
    return poisson_noise(img, rng, scale, gray)


def _random_jpeg(img: np.ndarray, rng: np.random.Generator, p: Pass, trace: list[str]) -> np.ndarray:
    lo, hi = p.jpeg_quality
    quality = int(rng.integers(lo, hi + 1))
    trace.append(f"jpeg q{quality}")
    return jpeg(np.clip(img, 0, 1), quality)


def _one_pass(img: np.ndarray, rng: np.random.Generator, p: Pass, shuffle: bool,
              resize_base: tuple[int, int] | None, trace: list[str]) -> np.ndarray:
    """Blur, resize and noise (in a random order when ``shuffle``: BSRGAN), then JPEG.

    ``resize_base``: the size resize factors apply to (None: the image's size when the resize comes).
    """
    order = rng.permutation(3) if shuffle else np.arange(3)
    for stage in order:
        if stage == 0:
            img = _random_blur(img, rng, p, trace)
        elif stage == 1:
            img = _random_resize(img, rng, p, resize_base or (img.shape[0], img.shape[1]), trace)
        else:
            img = np.clip(_random_noise(img, rng, p, trace), 0, 1)
    return _random_jpeg(img, rng, p, trace)


def degrade(hr: np.ndarray, rng: np.random.Generator, scale: int, cfg: DegradeConfig,
            trace: list[str] | None = None) -> np.ndarray:
    """The LR image of ``hr`` (uint8 or float 0..1 HWC, sides multiples of ``scale``): float32 0..1 HWC,
    exactly ``scale`` times smaller, every parameter drawn from ``rng``. ``trace`` collects what was applied."""
    return _degrade(hr, rng, scale, cfg, [] if trace is None else trace)[0]


def _degrade(hr: np.ndarray, rng: np.random.Generator, scale: int, cfg: DegradeConfig,
             trace: list[str]) -> tuple[np.ndarray, bytes | None]:
    """:func:`degrade`, and the final JPEG file when JPEG was the last stage (what a user would upload)."""
    img = hr.astype(np.float32) / 255.0 if hr.dtype == np.uint8 else hr.astype(np.float32)
    h, w = img.shape[:2]
    out_size = (h // scale, w // scale)
    if cfg.light_prob and rng.uniform() < cfg.light_prob:  # no draw without it: older runs keep their crops
        return _light(img, rng, out_size, cfg, trace)
    first, second = passes(cfg)
    img = _one_pass(img, rng, first, cfg.shuffle_order, None, trace)
    img = _one_pass(img, rng, second, cfg.shuffle_order, out_size, trace)
    mode = str(rng.choice(list(RESIZE_FILTERS)))
    trace.append(f"resize {mode} to {out_size[1]}x{out_size[0]}")
    img = np.clip(resize(img, out_size, mode), 0, 1)
    omega_c, size = rng.uniform(np.pi / 3, np.pi), int(rng.choice(np.arange(7, KERNEL_SIZE + 1, 2)))
    sinc = rng.uniform() < cfg.final_sinc_prob
    kernel = _crop_kernel(sinc_kernel(omega_c), size) if sinc else None
    quality = int(rng.integers(cfg.jpeg_range2[0], cfg.jpeg_range2[1] + 1))
    sinc_step = [f"sinc {size}px cut-off {omega_c:.2f}"] if sinc else []
    if rng.uniform() < 0.5:  # resize, sinc, JPEG
        trace.extend([*sinc_step, f"jpeg q{quality}"])
        img = blur(img, kernel) if kernel is not None else img
        data = jpeg_encode(np.clip(img, 0, 1), quality)
        return jpeg_decode(data), data
    trace.extend([f"jpeg q{quality}", *sinc_step])  # resize, JPEG, sinc
    img = blur(jpeg(img, quality), kernel) if kernel is not None else jpeg(img, quality)
    return np.clip(img, 0, 1).astype(np.float32), None


def _light(img: np.ndarray, rng: np.random.Generator, out_size: tuple[int, int], cfg: DegradeConfig,
           trace: list[str]) -> tuple[np.ndarray, bytes | None]:
    """The light model (``DegradeConfig.light_prob``): an optional mild isotropic Gaussian blur, one resize to
    ``out_size`` by a random filter, optional Gaussian noise (gray or colour), optional JPEG."""
    trace.append("light")
    if rng.uniform() < cfg.light_blur_prob:
        sigma = rng.uniform(*cfg.light_blur_sigma)
        trace.append(f"blur sigma {sigma:.2f}")
        img = blur(img, gaussian_kernel(sigma, sigma, 0.0))
    mode = str(rng.choice(list(RESIZE_FILTERS)))
    trace.append(f"resize {mode} to {out_size[1]}x{out_size[0]}")
    img = np.clip(resize(img, out_size, mode), 0, 1)
    if rng.uniform() < cfg.light_noise_prob:
        sigma, gray = rng.uniform(*cfg.light_noise_sigma), rng.uniform() < cfg.gray_noise_prob2
        trace.append(f"{'gray' if gray else 'colour'} gaussian noise {sigma:.1f}")
        img = np.clip(gaussian_noise(img, rng, sigma, gray), 0, 1)
    if rng.uniform() < cfg.light_jpeg_prob:
        quality = int(rng.integers(cfg.jpeg_range2[0], cfg.jpeg_range2[1] + 1))
        trace.append(f"jpeg q{quality}")
        data = jpeg_encode(img, quality)
        return jpeg_decode(data), data
    return to_uint8(img).astype(np.float32) / 255.0, None


def degrade_u8(hr: np.ndarray, seed: tuple[int, ...], scale: int, cfg: DegradeConfig) -> np.ndarray:
    """:func:`degrade` seeded by ``seed``, as uint8: the training path's entry (a ``tf.numpy_function``)."""
    return to_uint8(degrade(hr, np.random.default_rng(list(seed)), scale, cfg))


# --- fixed conditions for evaluation ---------------------------------------------------------------

CONDITIONS = {
    "clean": "the protocol's bicubic downscale",
    "jpeg": "bicubic downscale, JPEG q60",
    "noise-jpeg": "bicubic downscale, Gaussian colour noise sigma 6, JPEG q75",
    "blur-jpeg": "Gaussian blur sigma 1.2 (on HR), bicubic downscale, JPEG q80",
    "mix": "the training's second-order model (DegradeConfig defaults), seeded per image",
}
"""The real-world conditions ``srgan eval --condition`` and ``srgan bench realworld`` measure: what the issue's
users uploaded (JPEG q60; mild noise + JPEG 75; slightly blurred + JPEG 80) and the full training mix."""


@dataclass(frozen=True)
class Upload:
    """A degraded LR image as a user would upload it: the file (JPEG when JPEG was the last stage, else PNG)."""

    data: bytes
    format: str


def degrade_condition(hr: np.ndarray, condition: str, scale: int, seed: int = 0) -> Upload:
    """The LR upload of uint8 ``hr`` (sides multiples of ``scale``) under a named :data:`CONDITIONS` entry.

    ``seed`` draws the noise and the mix's parameters: one fixed seed per image makes a condition a fixed set.
    """
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}: one of {', '.join(CONDITIONS)}")
    if condition == "mix":
        img, data = _degrade(hr, np.random.default_rng([seed, 1]), scale, DegradeConfig(), [])
        return Upload(data, "jpeg") if data is not None else _png(to_uint8(img))
    if condition == "blur-jpeg":
        hr = to_uint8(blur(hr.astype(np.float32) / 255.0, gaussian_kernel(1.2, 1.2, 0.0)))
    lr = bicubic_downscale(hr, scale)
    if condition == "clean":
        return _png(lr)
    img = lr.astype(np.float32) / 255.0
    if condition == "noise-jpeg":
        img = np.clip(gaussian_noise(img, np.random.default_rng([seed, 2]), 6.0, gray=False), 0, 1)
    quality = {"jpeg": 60, "noise-jpeg": 75, "blur-jpeg": 80}[condition]
    return Upload(jpeg_encode(img, quality), "jpeg")


def _png(img_u8: np.ndarray) -> Upload:
    buf = io.BytesIO()
    Image.fromarray(img_u8).save(buf, format="PNG")
    return Upload(buf.getvalue(), "png")


# --- examples for people to look at (srgan train degrade) ------------------------------------------


def write_examples(hr_paths: list[Path], out: Path, seed: int, count: int, scale: int,
                   cfg: DegradeConfig) -> list[dict[str, object]]:
    """For each image: ``count`` degraded LR images (``<stem>_s<seed>_<k>.png``), drawn with seeds (seed, k), and a
    panel ``<stem>_panel.png`` (the clean bicubic LR, then each degraded one, all enlarged ``scale`` times with
    nearest neighbour so the artifacts show). Returns what each file holds (also in ``degradations.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    for path in hr_paths:
        hr = crop_to_multiple(read_rgb(path), scale)
        tiles = [bicubic_downscale(hr, scale)]
        for k in range(count):
            trace: list[str] = []
            lr = to_uint8(degrade(hr, np.random.default_rng([seed, k]), scale, cfg, trace))
            name = f"{path.stem}_s{seed}_{k}.png"
            Image.fromarray(lr).save(out / name)
            rows.append({"file": name, "source": str(path), "seed": [seed, k], "applied": trace})
            tiles.append(lr)
        h, w = tiles[0].shape[:2]
        panel = Image.new("RGB", ((w * scale + 4) * len(tiles) - 4, h * scale), "white")
        for i, tile in enumerate(tiles):
            panel.paste(Image.fromarray(tile).resize((w * scale, h * scale), Image.Resampling.NEAREST),
                        (i * (w * scale + 4), 0))
        panel.save(out / f"{path.stem}_panel.png")
    (out / "degradations.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows
