"""``srgan eval``: the quality protocol (``model.quality``) on an ONNX model, beside the bicubic baseline.

For each HR image: crop to a multiple of the scale, LR = the protocol's
bicubic downscale, SR = the engine of ``model/`` (whole image by default),
PSNR and SSIM on Y with ``scale`` border pixels cropped (a ``scale`` other than the
model's measures what a job asking it gets: the model's output resized with the
service's filter); NIQE (no reference,
lower is more natural; ``model.niqe``) of the SR, of the bicubic upscale and
of the HR itself; the colour shift, the largest difference of an RGB
channel's mean between SR and HR (0..255 levels); and the flat-region error
(``model.quality.flat_region_error``). ``condition`` replaces the clean LR by a
real-world one (``training.degradations.CONDITIONS``: JPEG, noise + JPEG,
blur + JPEG, the training mix), decoded from the file a user would upload. No
TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.catalog.catalog import ModelCatalog
from core.catalog.load import build_upscaler
from core.settings import get_settings
from model.images import RESAMPLE_FILTER, read_image, resample
from model.niqe import BLOCK as NIQE_BLOCK
from model.niqe import niqe as niqe_score
from model.quality import bicubic_upscale, color_shift, crop_to_multiple, flat_region_error, psnr_y, ssim_y
from training.degradations import CONDITIONS, degrade_condition
from training.sources import list_images, read_rgb

PROTOCOL = (
    "LR = Pillow bicubic downscale of HR cropped to a multiple of the scale; "
    "PSNR/SSIM on Y (BT.601), scale-pixel border crop"
)


def evaluate_model(
    model: Path, data: Path, *, scale: int | None = None, tile: int = 0, detail: float | None = None,
    niqe: bool = True, condition: str = "clean",
) -> dict[str, Any]:
    """Measure ``model`` on every image under ``data``; the report ``srgan eval --json`` prints.

    ``detail`` blends a GAN model with its detail base (its card's
    ``detail_base``) as a job would; ``niqe=False`` skips the NIQE columns.
    """
    settings = get_settings()
    blend = ModelCatalog(settings).blend(str(model), detail)
    # the protocol measures the model itself: float32, whatever SRGAN_PRECISION says
    up = build_upscaler(settings, blend, tile=tile, overlap=min(16, tile // 4) if tile else 0, precision="f32")
    s = scale or up.scale
    data = Path(data)
    paths = list_images(data)
    if not paths:
        raise FileNotFoundError(f"no images under {data}")
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}: one of {', '.join(CONDITIONS)}")
    images = []
    for i, path in enumerate(paths):
        hr = crop_to_multiple(read_rgb(path), s)
        lr = degraded_input(hr, condition, s, seed=i)
        sr = at_scale(up.upscale(lr), (hr.shape[1], hr.shape[0]))
        bicubic = bicubic_upscale(lr, s)
        row = {
            "name": path.relative_to(data).as_posix(),
            "width": hr.shape[1],
            "height": hr.shape[0],
            "psnr_y": psnr_y(sr, hr, crop=s),
            "ssim_y": ssim_y(sr, hr, crop=s),
            "bicubic_psnr_y": psnr_y(bicubic, hr, crop=s),
            "bicubic_ssim_y": ssim_y(bicubic, hr, crop=s),
            "color_shift": color_shift(sr, hr),
            "flat_error": _finite_or_none(flat_region_error(sr, hr, crop=s)),  # None: no flat pixel (JSON has no NaN)
        }
        if niqe and min(hr.shape[:2]) >= NIQE_BLOCK:
            row.update(niqe=niqe_score(sr), bicubic_niqe=niqe_score(bicubic), hr_niqe=niqe_score(hr))
        images.append(row)
    report: dict[str, Any] = {"model": str(model), "data": str(data), "scale": s, "protocol": PROTOCOL,
                              "condition": condition}
    if s != up.scale:
        report["resample"] = {"model_scale": up.scale, "filter": RESAMPLE_FILTER}
    if detail is not None:
        report["detail"] = blend.describe()
    report.update(_means(images))
    groups = {img["name"].split("/")[0] for img in images if "/" in img["name"]}
    if len(groups) > 1:
        report["datasets"] = {g: _means([i for i in images if i["name"].startswith(g + "/")]) for g in sorted(groups)}
    report["images"] = images
    return report


def at_scale(sr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The model's output resized to ``size`` (width, height) as the service resizes it for a job asking another
    scale (``model.images.resample``), or as it is when it has that size."""
    if (sr.shape[1], sr.shape[0]) == size:
        return sr
    return np.asarray(resample(Image.fromarray(sr), *size))


def degraded_input(hr: np.ndarray, condition: str, scale: int, seed: int) -> np.ndarray:
    """The LR input of ``hr`` under ``condition``, decoded from its upload file as the service decodes it."""
    upload = degrade_condition(hr, condition, scale, seed)
    return np.asarray(read_image(upload.data, max_pixels=hr.shape[0] * hr.shape[1]).convert("RGB"))


def _means(images: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y")
    means = {k: float(np.mean([img[k] for img in images])) for k in keys}
    out = {
        "count": len(images),
        "mean_psnr_y": means["psnr_y"],
        "mean_ssim_y": means["ssim_y"],
        "bicubic_mean_psnr_y": means["bicubic_psnr_y"],
        "bicubic_mean_ssim_y": means["bicubic_ssim_y"],
        "max_color_shift": max(img["color_shift"] for img in images),
        "mean_flat_error": _nanmean([img["flat_error"] for img in images]),
    }
    scored = [img for img in images if "niqe" in img]
    if scored:
        out.update(
            niqe_count=len(scored),
            mean_niqe=float(np.mean([img["niqe"] for img in scored])),
            bicubic_mean_niqe=float(np.mean([img["bicubic_niqe"] for img in scored])),
            hr_mean_niqe=float(np.mean([img["hr_niqe"] for img in scored])),
        )
    return out


def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _nanmean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return float(np.mean(finite)) if finite else None


def format_table(report: dict[str, Any]) -> str:
    """The report as a table: one row per image, then the mean of each data set and of all."""
    width = max([len("image")] + [len(img["name"]) for img in report["images"]]) + 2
    niqe = "mean_niqe" in report
    head = f"{'image':<{width}}{'size':>11}  {'PSNR-Y':>7} {'SSIM-Y':>7}   {'bicubic':>7} {'SSIM-Y':>7}"
    if niqe:
        head += f"   {'NIQE':>6} {'bicubic':>7} {'HR':>6}"
    lines = [f"{report['model']} x{report['scale']} on {report['data']}", head, "-" * len(head)]
    for img in report["images"]:
        size = f"{img['width']}x{img['height']}"
        line = (
            f"{img['name']:<{width}}{size:>11}  {img['psnr_y']:7.3f} {img['ssim_y']:7.4f}"
            f"   {img['bicubic_psnr_y']:7.3f} {img['bicubic_ssim_y']:7.4f}"
        )
        if niqe:
            line += (f"   {img['niqe']:6.3f} {img['bicubic_niqe']:7.3f} {img['hr_niqe']:6.3f}" if "niqe" in img
                     else f"   {'-':>6} {'-':>7} {'-':>6}")
        lines.append(line)
    lines.append("-" * len(head))
    for label, means in [*report.get("datasets", {}).items(), ("all", report)]:
        title = f"mean {label} ({means['count']})"
        line = (
            f"{title:<{width}}{'':>11}  {means['mean_psnr_y']:7.3f} {means['mean_ssim_y']:7.4f}"
            f"   {means['bicubic_mean_psnr_y']:7.3f} {means['bicubic_mean_ssim_y']:7.4f}"
        )
        if "mean_niqe" in means:
            line += f"   {means['mean_niqe']:6.3f} {means['bicubic_mean_niqe']:7.3f} {means['hr_mean_niqe']:6.3f}"
        lines.append(line)
    flat = report["mean_flat_error"]
    lines.append(f"largest colour shift (channel mean, SR vs HR): {report['max_color_shift']:.2f} levels; "
                 "flat-region error (Y error std where HR is flat): " +
                 (f"{flat:.2f} levels" if flat is not None else "no flat pixel"))
    lines.append(f"input: {report.get('condition', 'clean')} ({CONDITIONS[report.get('condition', 'clean')]})")
    if "detail" in report:
        lines.append(f"detail: {report['detail']}")
    lines.append(f"protocol: {report['protocol']}; NIQE: Mittal et al. 2013, lower is more natural")
    return "\n".join(lines)
