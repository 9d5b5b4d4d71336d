"""Across jobs, one batch: does running several small jobs' images as one batch raise throughput?

``srgan bench cross-job-batch [--size 64] [--jobs 16] [--batches 1,2,4,8]`` from the repository root.

A worker runs one job at a time; an image that fits in one tile is one backend call of batch 1. This
measures the alternative a batching worker would have: ``k`` jobs' images (same size, as a batcher would
group them) stacked into one call. Same engine (the shipped srresnet_x4 at the service's defaults:
backend ``auto``, float32), same images; the batch sizes alternate (1 k1 k2 ... 1 k1 k2 ...) and each figure is
the median of ``--repeat`` rounds, because the cores may be shared with other work. Prints JSON: images/s
per batch size, the ratio to batch 1, and the extra latency a job waits for its batch (batch time minus
its own single-image time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from core.catalog.shipped import is_path, shipped_file
from model.backends import cpu_model
from model.engine import Upscaler


def images_per_s(upscaler: Upscaler, images: list[np.ndarray], k: int) -> float:
    """Throughput running ``images`` in backend calls of ``k`` images each."""
    batches = [upscaler.batch_input(images[i:i + k]) for i in range(0, len(images), k)]
    t0 = time.perf_counter()
    for batch in batches:
        upscaler.backend.run(batch)
    return len(images) / (time.perf_counter() - t0)


def run(args: argparse.Namespace) -> int:
    path = Path(args.model) if is_path(args.model) else shipped_file(args.model)
    if path is None:
        raise SystemExit(f"{args.model}: not an .onnx file nor a shipped model")
    upscaler = Upscaler.from_file(path, backend=args.backend, tile=0, overlap=0)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.jobs)]
    sizes = [int(k) for k in args.batches.split(",")]
    images_per_s(upscaler, images[: max(sizes)], max(sizes))  # warm-up: first calls compile/allocate
    rounds: dict[int, list[float]] = {k: [] for k in sizes}
    for _ in range(args.repeat):
        for k in sizes:
            rounds[k].append(images_per_s(upscaler, images, k))
    median = {k: statistics.median(v) for k, v in rounds.items()}
    single_s = 1 / median[sizes[0]]
    report = {
        "cpu": cpu_model(), "cpus": os.cpu_count(), "backend": upscaler.backend_name, "precision": upscaler.precision,
        "model": args.model, "image": f"{args.size}x{args.size}", "jobs_per_round": args.jobs, "repeat": args.repeat,
        "images_per_s": {k: round(v, 2) for k, v in median.items()},
        "ratio_to_batch_1": {k: round(v / median[sizes[0]], 3) for k, v in median.items()},
        "extra_latency_s": {k: round(k / v - single_s, 3) for k, v in median.items()},
    }
    print(json.dumps(report, indent=2))
    return 0
