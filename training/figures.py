"""Figures for model cards and docs: the validation curve and a side-by-side crop.

    python -m training.figures curve runs/srresnet_x4 -o docs/images/srresnet_x4_val_psnr.png
    python -m training.figures compare --model model/weights/srresnet_x4.onnx \
        --image ../shared/data/bench/Set14/comic.png --box 80 40 200 160 -o docs/images/compare.png

``curve`` reads a run's ``validation.jsonl`` (or the ``validation_curve`` of
a ``card.json``) and draws validation Y-PSNR against training steps, with
the bicubic baseline when known. ``compare`` degrades a ground-truth image
with the quality protocol's bicubic downscale, upscales it with bicubic and
with the model, and puts the three crops side by side with their PSNR-Y.
No TensorFlow: matplotlib (the ``train`` extra) and Pillow only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

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


def plot_curve(source: Path, out: Path, title: str | None = None, baseline: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, psnr, found = read_curve(source)
    if not steps:
        raise SystemExit(f"no validation points in {source}")
    baseline = baseline if baseline is not None else found
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(steps, psnr, marker="o", markersize=3, label="model (validation split of train/)")
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", label=f"bicubic {baseline:.2f} dB")
    best = int(np.argmax(psnr))
    ax.annotate(f"best {psnr[best]:.2f} dB @ {steps[best]}", (steps[best], psnr[best]),
                textcoords="offset points", xytext=(-60, -18))
    ax.set_xlabel("training step")
    ax.set_ylabel("validation PSNR-Y (dB)")
    ax.set_title(title or "Validation PSNR during training")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def side_by_side(model: Path, image: Path, box: tuple[int, int, int, int], out: Path, zoom: int = 2) -> dict:
    """Bicubic | model | ground truth for the HR crop ``box`` (left, top, right, bottom)."""
    from model.engine import Upscaler

    up = Upscaler.from_file(model)
    scale = up.scale
    hr = crop_to_multiple(np.asarray(Image.open(image).convert("RGB")), scale)
    lr = bicubic_downscale(hr, scale)
    panels = {"bicubic": bicubic_upscale(lr, scale), "model": up.upscale(lr), "ground truth": hr}
    scores = {k: psnr_y(v, hr, crop=scale) for k, v in panels.items() if k != "ground truth"}
    left, top, right, bottom = box
    w, h = (right - left) * zoom, (bottom - top) * zoom
    label_h = 22
    canvas = Image.new("RGB", (3 * w + 20, h + label_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, arr) in enumerate(panels.items()):
        crop = Image.fromarray(arr[top:bottom, left:right]).resize((w, h), Image.Resampling.NEAREST)
        x = i * (w + 10)
        canvas.paste(crop, (x, label_h))
        text = name if name not in scores else f"{name}  {scores[name]:.2f} dB (whole image)"
        draw.text((x + 4, 4), text, fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return {"image": image.name, "scale": scale, **{f"psnr_y_{k}": round(v, 3) for k, v in scores.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.figures", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("curve", help="validation PSNR against steps")
    c.add_argument("source", type=Path, help="run directory, validation.jsonl or card.json")
    c.add_argument("-o", "--output", type=Path, required=True)
    c.add_argument("--title")
    c.add_argument("--baseline", type=float, help="bicubic validation PSNR-Y to draw")
    s = sub.add_parser("compare", help="bicubic | model | ground truth crop")
    s.add_argument("--model", type=Path, required=True)
    s.add_argument("--image", type=Path, required=True, help="ground-truth HR image")
    s.add_argument("--box", type=int, nargs=4, metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"), required=True)
    s.add_argument("--zoom", type=int, default=2)
    s.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args(argv)
    if args.what == "curve":
        print(plot_curve(args.source, args.output, args.title, args.baseline))
    else:
        print(json.dumps(side_by_side(args.model, args.image, tuple(args.box), args.output, args.zoom)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
