"""The checks a candidate file passes before it is published, run through the engine as the workers will run it.

:func:`check_model_file` loads the file with the engine (ONNX Runtime on the
CPU) and runs a small test image through it; :func:`measure_file` measures
PSNR-Y/SSIM-Y on a bench set. :class:`EngineInspector` hands both to
``core.catalog.publish.Publisher``. Kept apart from the rest of the catalog so
that the API (which reads the catalog, never publishes) never imports the
engine: an import-linter contract forbids ``api`` this module.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.catalog.registry import DeployRefused, FileCheck, check_file
from model.contract import ModelContract
from model.engine import Upscaler
from model.errors import SRGANError
from model.niqe import BLOCK as NIQE_BLOCK
from model.niqe import niqe
from model.probe import PROBE_HW, judge_probe, probe_image
from model.quality import (
    bicubic_downscale,
    bicubic_upscale,
    color_shift,
    crop_to_multiple,
    flat_region_error,
    metric_tag,
    psnr_y,
    ssim_y,
)


def check_model_file(path: Path, *, card: dict[str, Any] | None = None, scale: int | None = None) -> FileCheck:
    """Check ``path`` before it is published; raises :class:`DeployRefused` saying what is wrong.

    :func:`core.catalog.registry.check_file` (sha256, a valid graph, the declared
    scales agree), then a probe run through the engine: the output must be
    the declared scale and look like the image (:func:`_run_probe`).
    """
    checked = check_file(path, card, scale)
    probe = _run_probe(Path(path), checked.scale, checked.contract)
    return replace(checked, probe=probe)


def _run_probe(path: Path, scale: int, contract: ModelContract | None) -> str:
    """Run :func:`probe_image` through the engine; returns ``"WxH -> WxH"`` or raises DeployRefused."""
    h, w = PROBE_HW
    lr = probe_image(h, w)
    try:
        up = Upscaler.from_file(path, backend="onnxruntime", providers=["CPUExecutionProvider"], threads=1,
                                tile=0, scale=None if contract else scale)
    except (SRGANError, ValueError) as exc:
        raise DeployRefused(f"{path} cannot be loaded by the engine: {exc}") from exc
    try:
        out = up.upscale(lr)
    except SRGANError as exc:
        got = _raw_output_size(up, lr)
        if got and got != (h * scale, w * scale):
            raise DeployRefused(
                f"{path} declares x{scale}, but a {w}x{h} image came out {got[1]}x{got[0]} "
                f"instead of {w * scale}x{h * scale}"
            ) from exc
        raise DeployRefused(f"{path} fails on a {w}x{h} test image: {exc}") from exc
    if out.shape[:2] != (h * scale, w * scale):
        raise DeployRefused(f"{path} declares x{scale}, but a {w}x{h} image came out {out.shape[1]}x{out.shape[0]}")
    wrong = judge_probe(out, lr, scale)
    if wrong:
        ct = up.contract
        raise DeployRefused(f"{path} (read as {ct.layout}, values {ct.value_range[0]:g}..{ct.value_range[1]:g}) "
                            f"fails the probe: {wrong}")
    return f"{w}x{h} -> {out.shape[1]}x{out.shape[0]}"


def _raw_output_size(up: Any, lr_hwc_u8: np.ndarray) -> tuple[int, int] | None:
    """The model's own output height and width for ``lr``, whatever its contract says (None if it fails)."""
    batch = lr_hwc_u8[None].astype(np.float32)
    if up.contract.layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    try:
        out = up.backend.run(batch)
    except Exception:  # noqa: BLE001 - the caller reports the original failure
        return None
    return tuple(out.shape[1:3]) if up.contract.layout == "NHWC" else tuple(out.shape[2:4])


BENCH_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def measure_file(model_file: str | Path, folder: str | Path, *, perceptual: bool = False) -> dict[str, float]:
    """PSNR-Y and SSIM-Y of an ONNX model on the HR images under ``folder`` (the protocol, whole image, float32),
    keyed ``<tag>_psnr_y``/``<tag>_ssim_y`` (:func:`metric_tag`). ``srgan deploy --eval-data`` compares versions
    with it; ``srgan eval`` gives the full report.

    ``perceptual`` (a GAN model's gate) adds ``<tag>_bicubic_psnr_y`` (the floor), ``<tag>_niqe`` (the mean
    over images of at least NIQE's block size), ``<tag>_max_color_shift`` and ``<tag>_flat_error``
    (:func:`model.quality.flat_region_error`, the mean over images with flat regions)."""
    folder = Path(folder)
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in BENCH_SUFFIXES and p.is_file())
    if not paths:
        raise FileNotFoundError(f"no images under {folder}")
    up = Upscaler.from_file(model_file, backend="onnxruntime", providers=["CPUExecutionProvider"], tile=0)
    rows: dict[str, list[float]] = {"psnr_y": [], "ssim_y": []}
    for path in paths:
        with Image.open(path) as img:
            hr = crop_to_multiple(np.asarray(img.convert("RGB"), dtype=np.uint8), up.scale)
        lr = bicubic_downscale(hr, up.scale)
        sr = up.upscale(lr)
        rows["psnr_y"].append(psnr_y(sr, hr, crop=up.scale))
        rows["ssim_y"].append(ssim_y(sr, hr, crop=up.scale))
        if perceptual:
            rows.setdefault("bicubic_psnr_y", []).append(psnr_y(bicubic_upscale(lr, up.scale), hr, crop=up.scale))
            rows.setdefault("max_color_shift", []).append(color_shift(sr, hr))
            flat = flat_region_error(sr, hr, crop=up.scale)
            if not math.isnan(flat):
                rows.setdefault("flat_error", []).append(flat)
            if min(hr.shape[:2]) >= NIQE_BLOCK:
                rows.setdefault("niqe", []).append(niqe(sr))
    tag = metric_tag(folder)
    return {f"{tag}_{key}": float(max(values) if key == "max_color_shift" else np.mean(values))
            for key, values in rows.items()}


class EngineInspector:
    """The :class:`core.catalog.publish.FileInspector` that runs files through the engine (``srgan deploy``,
    ``export``)."""

    def check(self, path: Path, *, card: dict[str, Any] | None = None, scale: int | None = None) -> FileCheck:
        return check_model_file(path, card=card, scale=scale)

    def measure(self, path: Path, folder: Path, *, perceptual: bool = False) -> dict[str, float]:
        return measure_file(path, folder, perceptual=perceptual)
