"""How right a job's ``eta_s`` is: at 50% progress, the estimate against the time the job really had left.

``srgan bench eta [--size 768x512] [--tile 192] [--repeat 3]`` from the repository root.

Renders of a photo-like image with the shipped srresnet_x4 (``core.render.render``, the worker's own
function, at the service's defaults apart from ``--tile``, which makes it 4 tiles or more), their progress
fed to ``core.throughput.TimeLeft`` as the worker feeds it: the encode time expected at the encoder speed
the previous render measured (the worker records it per format, ``encode:<format>``), plus the tiles left at
the pace of the run's own tiles. At the first report at or past half of the tiles it takes the estimate; the
time from then to the end of the render (the rest of the engine and the encode) is what was really left.
Prints one JSON line per run and the median error; the goal is within 30%.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time

import numpy as np
from PIL import Image

from core.catalog.catalog import ModelCatalog
from core.catalog.load import build_upscaler
from core.render import PixelLimits, RenderOptions, render
from core.settings import get_settings
from core.throughput import SMOOTHING, TimeLeft
from model.backends import cpu_model


def photo_png(width: int, height: int) -> bytes:
    """A deterministic photo-like PNG: smooth gradients, edges and noise (the tiles all cost the same)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / width * 255, 128 + 90 * np.sin(x / 9) * np.cos(y / 13), np.where(x + y > width, 210, 40)], -1)
    rgb += np.random.default_rng(0).normal(0, 8, rgb.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def one_run(upscaler: object, data: bytes, limits: PixelLimits, encode_px_s: float) -> tuple[dict[str, float], float]:
    """The estimate at 50% against the time really left; and the encoder speed this render measured."""
    at_half: dict[str, float] = {}
    left = TimeLeft(tail_s=0.0)

    def progress(done: int, total: int) -> None:
        if not at_half and done * 2 >= total:
            at_half.update(t=time.monotonic(), eta_s=left.at(done, total) or 0.0, done=done, total=total)

    first = True

    def on_progress(done: int, total: int) -> None:
        nonlocal first
        if first:  # the output size is known once the engine runs: the expected encode time
            h, w = (int(v) for v in limits_size)
            left.tail_s = w * h * upscaler.scale ** 2 / encode_px_s  # type: ignore[attr-defined]
            first = False
        progress(done, total)

    with Image.open(io.BytesIO(data)) as img:
        limits_size = (img.height, img.width)
    result = render(upscaler, data, RenderOptions(), limits, progress=on_progress)  # type: ignore[arg-type]
    real_s = time.monotonic() - at_half["t"]
    measured = result.width * result.height / result.timings["encode_s"]
    return ({"tiles": at_half["total"], "at_tile": at_half["done"], "eta_s": round(at_half["eta_s"], 3),
             "real_left_s": round(real_s, 3), "error": round(abs(at_half["eta_s"] - real_s) / real_s, 3)},
            measured)


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    width, height = (int(v) for v in args.size.split("x"))
    blend = ModelCatalog(settings).blend(args.model)
    upscaler = build_upscaler(settings, blend, tile=args.tile)
    data = photo_png(width, height)
    limits = PixelLimits.from_settings(settings)
    warm = render(upscaler, data, RenderOptions(), limits)  # warm-up (the first call compiles), the encoder speed
    encode_px_s = warm.width * warm.height / warm.timings["encode_s"]
    runs = []
    for _ in range(args.repeat):
        result, measured = one_run(upscaler, data, limits, encode_px_s)
        encode_px_s = SMOOTHING * encode_px_s + (1 - SMOOTHING) * measured  # as the worker's record moves on
        runs.append(result)
    for result in runs:
        print(json.dumps(result))
    median = statistics.median(r["error"] for r in runs)
    print(json.dumps({"cpu": cpu_model(), "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                      "backend": upscaler.backend_name, "precision": upscaler.precision, "model": args.model,
                      "image": args.size, "tile": args.tile, "tiles": runs[0]["tiles"],
                      "median_error_at_50pct": median, "within_30pct": median <= 0.3}))
    return 0 if median <= 0.3 else 1
