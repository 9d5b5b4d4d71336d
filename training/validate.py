"""Validation during training: the quality protocol on the held-out images, with the Keras generator."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from model.niqe import BLOCK as NIQE_BLOCK
from model.niqe import niqe as niqe_score
from model.quality import bicubic_upscale, flat_region_error, psnr_y, ssim_y
from training.sources import Example


@dataclass
class Validation:
    psnr_y: float
    ssim_y: float
    per_image: dict[str, float] = field(default_factory=dict)
    niqe: float | None = None
    per_image_niqe: dict[str, float] = field(default_factory=dict)
    flat_error: float | None = None
    """Mean flat-region error (``model.quality.flat_region_error``: the Y error's spread where the ground truth is
    flat): the noise, blocks and invented texture that NIQE can reward; None where no image has flat pixels."""


def super_resolve(generator: keras.Model, lr_hwc_u8: np.ndarray) -> np.ndarray:
    """Inference-mode SR of one image, rounded to uint8 as the engine does."""
    sr = generator(lr_hwc_u8[None].astype(np.float32), training=False)
    return np.clip(np.rint(np.asarray(sr)[0]), 0, 255).astype(np.uint8)


def validate(generator: keras.Model, examples: list[Example], scale: int, *, niqe: bool = False) -> Validation:
    """Mean PSNR and SSIM on Y with ``scale`` border pixels cropped (the protocol of ``model.quality``), and the
    mean flat-region error.

    ``niqe``: also the mean NIQE of the outputs at least one 96x96 block big.
    """
    psnrs, ssims, per_image, niqes, flats = [], [], {}, {}, []
    for ex in examples:
        sr = super_resolve(generator, ex.lr)
        psnrs.append(psnr_y(sr, ex.hr, crop=scale))
        ssims.append(ssim_y(sr, ex.hr, crop=scale))
        flats.append(flat_region_error(sr, ex.hr, crop=scale))
        per_image[ex.name] = round(psnrs[-1], 4)
        if niqe and min(sr.shape[:2]) >= NIQE_BLOCK:
            niqes[ex.name] = round(niqe_score(sr), 4)
    if not psnrs:
        return Validation(float("nan"), float("nan"))
    mean_niqe = float(np.mean(list(niqes.values()))) if niqes else None
    return Validation(float(np.mean(psnrs)), float(np.mean(ssims)), per_image, mean_niqe, niqes, _mean_flat(flats))


def _mean_flat(values: list[float]) -> float | None:
    kept = [v for v in values if np.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def bicubic_baseline(examples: list[Example], scale: int) -> Validation:
    """The same measurement for a bicubic upscale: the number a model has to beat."""
    ups = [bicubic_upscale(ex.lr, scale) for ex in examples]
    if not ups:
        return Validation(float("nan"), float("nan"))
    return Validation(float(np.mean([psnr_y(u, ex.hr, crop=scale) for u, ex in zip(ups, examples)])),
                      float(np.mean([ssim_y(u, ex.hr, crop=scale) for u, ex in zip(ups, examples)])),
                      flat_error=_mean_flat([flat_region_error(u, ex.hr, crop=scale) for u, ex in zip(ups, examples)]))


def _file_name(name: str) -> str:
    return Path(name).with_suffix(".png").as_posix().replace("/", "__")


def save_samples(generator: keras.Model, examples: list[Example], folder: Path) -> None:
    """SR of ``examples`` as PNGs in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for ex in examples:
        Image.fromarray(super_resolve(generator, ex.lr)).save(folder / _file_name(ex.name))


def save_references(examples: list[Example], scale: int, folder: Path) -> None:
    """HR and bicubic upscale of ``examples``, once per run, to compare samples with."""
    folder.mkdir(parents=True, exist_ok=True)
    for ex in examples:
        stem = _file_name(ex.name)[: -len(".png")]
        Image.fromarray(ex.hr).save(folder / f"{stem}_hr.png")
        Image.fromarray(bicubic_upscale(ex.lr, scale)).save(folder / f"{stem}_bicubic.png")
