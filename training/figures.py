"""Figures for model cards and docs: the validation curve, side-by-side crops, the perception-distortion curve.

    srgan figures curve runs/srresnet_x4 -o docs/images/srresnet_x4_val_psnr.png
    srgan figures compare --model model/weights/srresnet_x4.onnx \
        --model model/weights/srgan_x4.onnx \
        --image ../shared/data/bench/Set14/comic.png --box 80 40 200 160 -o docs/images/compare.png
    srgan figures pd-curve --model model/weights/srgan_x4.onnx \
        --data ../shared/data/bench/Set14 -o docs/images/srgan_x4_perception_distortion.png

``curve`` reads a run's ``validation.jsonl`` (or the ``validation_curve`` of
a ``card.json``) and draws validation Y-PSNR against training steps, with
the bicubic baseline when known. ``compare`` degrades a ground-truth image
with the quality protocol's bicubic downscale, upscales it with bicubic and
with each model, and puts the crops side by side with PSNR-Y and NIQE.
``pd-curve`` measures a GAN model at several ``detail`` values and plots
PSNR-Y against NIQE.
No TensorFlow: matplotlib (the ``train`` extra) and Pillow only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from core.catalog.catalog import ModelCatalog
from core.catalog.load import build_upscaler
from core.settings import get_settings
from model.niqe import BLOCK as NIQE_BLOCK
from model.niqe import niqe
from training.evaluate import evaluate_model

if TYPE_CHECKING:  # matplotlib loads after the Agg backend is chosen
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import LegendLocType

from model.quality import bicubic_downscale, bicubic_upscale, crop_to_multiple, psnr_y


def read_curve(source: Path) -> tuple[list[int], list[float], float | None]:
    """Steps, validation PSNR-Y and the bicubic baseline from a run dir, a jsonl file or a card.json."""
    if source.is_dir():
        source = source / "validation.jsonl"
    if source.suffix == ".json":
        card = json.loads(source.read_text())
        points = card.get("training", {}).get("validation_curve", [])
        baseline = card.get("training", {}).get("validation_bicubic_psnr_y")
        return [int(p[0]) for p in points], [float(p[1]) for p in points], baseline
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    by_step = {int(r["step"]): float(r["psnr_y"]) for r in rows}  # a resumed run may repeat a step
    steps = sorted(by_step)
    baseline_rows = [r["bicubic_psnr_y"] for r in rows if "bicubic_psnr_y" in r]
    return steps, [by_step[s] for s in steps], (baseline_rows[-1] if baseline_rows else None)


def _axes(size: tuple[float, float]) -> tuple[Figure, Axes]:
    """A matplotlib figure and axes drawn off-screen (the Agg backend)."""
    import matplotlib  # the Agg backend is chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # the Agg backend is chosen before pyplot loads

    return plt.subplots(figsize=size, dpi=120)


def _save(
    fig: Figure, ax: Axes, out: Path, title: str, xlabel: str, ylabel: str, legend: LegendLocType,
) -> Path:
    """Label, grid, legend, save to ``out`` (folders made) and close."""
    import matplotlib.pyplot as plt  # the Agg backend is chosen before pyplot loads

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_curve(source: Path, out: Path, title: str | None = None, baseline: float | None = None) -> Path:
    steps, psnr, found = read_curve(source)
    if not steps:
        raise SystemExit(f"no validation points in {source}")
    baseline = baseline if baseline is not None else found
    fig, ax = _axes((7, 4))
    ax.plot(steps, psnr, marker="o", markersize=3, label="model (validation split of train/)")
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", label=f"bicubic {baseline:.2f} dB")
    best = int(np.argmax(psnr))
    ax.annotate(f"best {psnr[best]:.2f} dB @ {steps[best]}", (steps[best], psnr[best]),
                textcoords="offset points", xytext=(-60, -18))
    return _save(fig, ax, out, title or "Validation PSNR during training", "training step",
                 "validation PSNR-Y (dB)", "lower right")


def side_by_side(models: list[Path], image: Path, box: tuple[int, int, int, int], out: Path, zoom: int = 2,
                 detail: float | None = None) -> dict:
    """Bicubic | each model | ground truth for the HR crop ``box`` (left, top, right, bottom)."""
    settings = get_settings()
    panels: dict[str, np.ndarray] = {}
    hr: np.ndarray | None = None
    lr: np.ndarray | None = None
    scale = 0
    for model in models:
        up = build_upscaler(settings, ModelCatalog(settings).blend(str(model), detail), tile=0, overlap=0,
                            precision="f32")
        if hr is None:
            scale = up.scale
            hr = crop_to_multiple(np.asarray(Image.open(image).convert("RGB")), scale)
            lr = bicubic_downscale(hr, scale)
            panels["bicubic"] = bicubic_upscale(lr, scale)
        name = Path(model).stem + (f" detail {detail:.2f}" if detail is not None else "")
        assert lr is not None  # made from the first model's scale
        panels[name] = up.upscale(lr)
    assert hr is not None
    panels["ground truth"] = hr
    big = min(hr.shape[:2]) >= NIQE_BLOCK
    scores = {k: (psnr_y(v, hr, crop=scale), niqe(v) if big else float("nan")) for k, v in panels.items()}
    left, top, right, bottom = box
    w, h = (right - left) * zoom, (bottom - top) * zoom
    label_h = 22
    canvas = Image.new("RGB", (len(panels) * (w + 10) - 10, h + label_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, arr) in enumerate(panels.items()):
        crop = Image.fromarray(arr[top:bottom, left:right]).resize((w, h), Image.Resampling.NEAREST)
        x = i * (w + 10)
        canvas.paste(crop, (x, label_h))
        psnr, nq = scores[name]
        text = f"{name}  NIQE {nq:.2f}" if name == "ground truth" else f"{name}  {psnr:.2f} dB, NIQE {nq:.2f}"
        draw.text((x + 4, 4), text, fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return {"image": image.name, "scale": scale,
            **{f"psnr_y_{k}": round(v[0], 3) for k, v in scores.items() if k != "ground truth"},
            **({f"niqe_{k}": round(v[1], 3) for k, v in scores.items()} if big else {})}


def perception_distortion(points: list[dict], out: Path, title: str | None = None) -> Path:
    """PSNR-Y against NIQE, one labelled point per ``{"label", "psnr_y", "niqe"}`` (e.g. detail values)."""
    fig, ax = _axes((6, 4.5))
    curve = [p for p in points if p.get("curve", True)]
    ax.plot([p["niqe"] for p in curve], [p["psnr_y"] for p in curve], marker="o", label="detail 0 .. 1")
    for p in points:
        if not p.get("curve", True):
            ax.scatter([p["niqe"]], [p["psnr_y"]], marker="s", color="gray")
        ax.annotate(p["label"], (p["niqe"], p["psnr_y"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    return _save(fig, ax, out, title or "Perception-distortion trade-off", "NIQE (lower is more natural)",
                 "PSNR-Y (dB, higher is more faithful)", "lower left")


def detail_sweep(model: Path, data: Path, details: list[float]) -> list[dict]:
    """``srgan eval`` of ``model`` at each detail: the points of :func:`perception_distortion`."""
    points = []
    for d in details:
        report = evaluate_model(model, data, detail=d)
        points.append({"label": f"detail {d:.2f}", "detail": d, "psnr_y": report["mean_psnr_y"],
                       "niqe": report["mean_niqe"], "ssim_y": report["mean_ssim_y"],
                       "max_color_shift": report["max_color_shift"]})
    points.append({"label": "bicubic", "psnr_y": report["bicubic_mean_psnr_y"], "niqe": report["bicubic_mean_niqe"],
                   "curve": False})
    points.append({"label": "HR", "psnr_y": max(p["psnr_y"] for p in points) + 0.5, "niqe": report["hr_mean_niqe"],
                   "curve": False, "note": "HR's PSNR is infinite; drawn above the curve"})
    return points
