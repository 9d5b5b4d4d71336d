"""``srgan eval``: the quality protocol of DESIGN.md on an ONNX model, beside the bicubic baseline.

For each HR image: crop to a multiple of the scale, LR = the protocol's
bicubic downscale, SR = the engine of ``model/`` (whole image by default),
PSNR and SSIM on Y with ``scale`` border pixels cropped. No TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model.quality import bicubic_downscale, bicubic_upscale, crop_to_multiple, psnr_y, ssim_y
from training.sources import list_images, read_rgb

PROTOCOL = (
    "LR = Pillow bicubic downscale of HR cropped to a multiple of the scale; "
    "PSNR/SSIM on Y (BT.601), scale-pixel border crop"
)


def evaluate_model(model: Path, data: Path, *, scale: int | None = None, tile: int = 0) -> dict[str, Any]:
    """Measure ``model`` on every image under ``data``; the report ``srgan eval --json`` prints."""
    from model.engine import Upscaler

    up = Upscaler.from_file(model, tile=tile, overlap=min(16, tile // 4) if tile else 0)
    if scale is not None and scale != up.scale:
        raise ValueError(f"{model} upscales x{up.scale}, not x{scale}")
    s = up.scale
    data = Path(data)
    paths = list_images(data)
    if not paths:
        raise FileNotFoundError(f"no images under {data}")
    images = []
    for path in paths:
        hr = crop_to_multiple(read_rgb(path), s)
        lr = bicubic_downscale(hr, s)
        sr = up.upscale(lr)
        bicubic = bicubic_upscale(lr, s)
        images.append(
            {
                "name": path.relative_to(data).as_posix(),
                "width": hr.shape[1],
                "height": hr.shape[0],
                "psnr_y": psnr_y(sr, hr, crop=s),
                "ssim_y": ssim_y(sr, hr, crop=s),
                "bicubic_psnr_y": psnr_y(bicubic, hr, crop=s),
                "bicubic_ssim_y": ssim_y(bicubic, hr, crop=s),
            }
        )
    report: dict[str, Any] = {"model": str(model), "data": str(data), "scale": s, "protocol": PROTOCOL}
    report.update(_means(images))
    groups = {img["name"].split("/")[0] for img in images if "/" in img["name"]}
    if len(groups) > 1:
        report["datasets"] = {g: _means([i for i in images if i["name"].startswith(g + "/")]) for g in sorted(groups)}
    report["images"] = images
    return report


def _means(images: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y")
    means = {k: float(np.mean([img[k] for img in images])) for k in keys}
    return {
        "count": len(images),
        "mean_psnr_y": means["psnr_y"],
        "mean_ssim_y": means["ssim_y"],
        "bicubic_mean_psnr_y": means["bicubic_psnr_y"],
        "bicubic_mean_ssim_y": means["bicubic_ssim_y"],
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a table: one row per image, then the mean of each data set and of all."""
    width = max([len("image")] + [len(img["name"]) for img in report["images"]]) + 2
    head = f"{'image':<{width}}{'size':>11}  {'PSNR-Y':>7} {'SSIM-Y':>7}   {'bicubic':>7} {'SSIM-Y':>7}"
    lines = [f"{report['model']} x{report['scale']} on {report['data']}", head, "-" * len(head)]
    for img in report["images"]:
        size = f"{img['width']}x{img['height']}"
        lines.append(
            f"{img['name']:<{width}}{size:>11}  {img['psnr_y']:7.3f} {img['ssim_y']:7.4f}"
            f"   {img['bicubic_psnr_y']:7.3f} {img['bicubic_ssim_y']:7.4f}"
        )
    lines.append("-" * len(head))
    for label, means in [*report.get("datasets", {}).items(), ("all", report)]:
        title = f"mean {label} ({means['count']})"
        lines.append(
            f"{title:<{width}}{'':>11}  {means['mean_psnr_y']:7.3f} {means['mean_ssim_y']:7.4f}"
            f"   {means['bicubic_mean_psnr_y']:7.3f} {means['bicubic_mean_ssim_y']:7.4f}"
        )
    lines.append(f"protocol: {report['protocol']}")
    return "\n".join(lines)
