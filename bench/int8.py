"""int8 measurement (not offered): NNCF post-training quantization of the shipped model, Set5/Set14 cost.

``pip install nncf`` first (not a dependency: int8 is not offered). Run from the
repository root: ``srgan bench int8``. Calibration: ``--crops`` random
64x64 crops of BSD200 training photos (``../shared/data/train/BSD200``), never
the evaluation sets. Variants: plain PTQ, and PTQ keeping the first
convolution, the upsampler's convolutions and the last convolution in float
(NNCF's ``IgnoredScope``). Prints each variant's mean Y-PSNR on Set5 and
Set14 against float32 (border of 4 cropped, the evaluation protocol) and its
throughput ratio to float32 (whole 256x256 input, runs alternating).
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from bench.engine import DATA, alternate, test_image
from core.catalog.shipped import WEIGHTS_DIR
from model.quality import bicubic_downscale, crop_to_multiple, psnr_y

SCALE = 4


def calibration(crops: int, size: int = 64) -> list[np.ndarray]:
    files = sorted((DATA.parent / "train" / "BSD200").glob("*.png"))
    if not files:
        raise SystemExit(f"no calibration photos under {DATA.parent / 'train' / 'BSD200'}")
    rng = np.random.default_rng(0)
    out = []
    for i in range(crops):
        img = np.asarray(Image.open(files[i % len(files)]).convert("RGB"))
        y, x = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
        out.append(img[None, y : y + size, x : x + size].astype(np.float32))
    return out


def evaluate(compiled, folder: Path) -> float:
    values = []
    for path in sorted(folder.glob("*.png")):
        hr = crop_to_multiple(np.asarray(Image.open(path).convert("RGB")), SCALE)
        lr = bicubic_downscale(hr, SCALE)
        sr = compiled(lr[None].astype(np.float32))[0][0]
        sr = np.clip(np.rint(sr), 0, 255).astype(np.uint8)
        values.append(psnr_y(sr, hr, crop=SCALE))
    return float(np.mean(values))


def run(args: argparse.Namespace) -> int:
    """``srgan bench int8`` (arguments: ``cli/bench.py``)."""
    try:
        import nncf  # optional: nncf (bench int8 only)
    except ImportError:
        print("bench.int8 needs NNCF: pip install nncf", file=sys.stderr)
        return 2
    import openvino as ov  # optional: the openvino extra

    core = ov.Core()
    fp = core.read_model(str(WEIGHTS_DIR / "srresnet_x4.onnx"))
    convs = [op.get_friendly_name() for op in fp.get_ordered_ops() if op.get_type_name() == "Convolution"]
    keep = [convs[0], *convs[-3:]]  # the first in graph order (the shipped model's bicubic skip), upsampler, tail
    data = nncf.Dataset(calibration(args.crops))
    variants = {"int8 plain": nncf.quantize(fp, data, subset_size=args.crops),
                "int8 keep first/upsampler/tail": nncf.quantize(
                    fp, data, subset_size=args.crops, ignored_scope=nncf.IgnoredScope(names=keep))}
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    compiled = {"f32": core.compile_model(fp, "CPU", config)}
    compiled.update({k: core.compile_model(m, "CPU", config) for k, m in variants.items()})
    img = test_image(256)[None].astype(np.float32)
    times = alternate({k: partial(c, img) for k, c in compiled.items()}, args.repeat)
    rows = {}
    for name, c in compiled.items():
        rows[name] = {"set5": round(evaluate(c, DATA / "Set5"), 4), "set14": round(evaluate(c, DATA / "Set14"), 4),
                      "throughput_vs_f32": round(times["f32"][0] / times[name][0], 3)}
    for row in rows.values():
        row["set5_cost_db"] = round(rows["f32"]["set5"] - row["set5"], 4)
        row["set14_cost_db"] = round(rows["f32"]["set14"] - row["set14"], 4)
    print(json.dumps({"kept_in_float": keep, "calibration_crops": args.crops, "variants": rows}, indent=2))
    return 0

