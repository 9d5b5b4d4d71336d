"""``srgan bench int8``: int8 schemes side by side: Set5/Set14 cost per image, the int8 probe, speed.

Run from the repository root: ``srgan bench int8 [--models srresnet_x4,srgan_x4] [--schemes ...]``. Each
scheme quantizes the shipped model's rewritten graph (``model.graph``), and OpenVINO runs it (the layers
left in float in bf16 where the CPU runs bfloat16 natively, else f32). Per scheme and model:

- Set5 and Set14 Y-PSNR against float32's (border of the scale cropped): the mean cost and the worst image's;
- the cost ``auto``'s int8 probe measures (``model.engine.int8_cost``: synthetic photos, never Set5/Set14)
  and whether ``auto`` would keep it;
- seconds on a whole ``--size`` input against float32 and bfloat16, all precisions alternating, medians of
  ``--repeat``, with the load average before and after (a training run on the same cores shows there).

Schemes (``--schemes``, comma-separated):

- ``ours``: ``model.int8.quantize`` as the engine runs it, calibrated on ``model.int8.calibration_images``;
- ``ours-real``: the same calibrated on ``--crops`` BSD200 training photos (random 256x256 crops,
  bicubic-downscaled by the model's scale as its inputs are; ``../shared/data/train``, never the evaluation sets);
- ``ours-minmax``: activation ranges the extremes over all calibration images instead of their average;
- ``ours-asym``: activations asymmetric (uint8 with a zero point) instead, on the synthetic images;
- ``ours-v1``: scheme 1 (the tail kept in float as well as the head);
- ``ort-plain``: every convolution quantized (head and tail too; uint8 activations, extremes), on the real
  crops;
- ``nncf-plain``, ``nncf-mixed``: OpenVINO's NNCF (``pip install '.[nncf]'``) on the real crops, plain and
  with the head, the tail and every Add kept in float (``IgnoredScope``), preset ``MIXED``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import onnx
from PIL import Image

from bench.engine import DATA, cpu_report, load_average, test_image
from core.catalog.shipped import WEIGHTS_DIR
from model.backends import native_precision
from model.contract import ModelContract
from model.engine import INT8_MAX_COST_DB, INT8_MAX_WORST_DB, Upscaler, int8_cost
from model.graph import rewrite as rewrite_graph
from model.int8 import SCHEME, calibration_batches, protected_convs, quantize
from model.quality import bicubic_downscale, crop_to_multiple, psnr_y

SCHEMES = ("ours", "ours-real", "ours-minmax", "ours-asym", "ours-v1", "ort-plain", "nncf-plain", "nncf-mixed")
SCALE = 4


def real_crops(count: int, size: int = 256, seed: int = 0, scale: int = SCALE) -> list[np.ndarray]:
    """``count`` random ``size x size`` crops of BSD200 training photos, bicubic-downscaled by the model's
    ``scale``."""
    folder = DATA.parent / "train" / "BSD200"
    files = sorted(folder.glob("*.png"))
    if not files:
        raise SystemExit(f"no calibration photos under {folder}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        img = np.asarray(Image.open(files[int(rng.integers(len(files)))]).convert("RGB"))
        y, x = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
        out.append(bicubic_downscale(img[y : y + size, x : x + size], scale))
    return out


class Compiled:
    """An OpenVINO compiled network behind the engine's backend interface (enough for ``Upscaler``)."""

    def __init__(self, model: Any, hint: str, metadata: dict[str, str], precision: str) -> None:
        import openvino as ov  # optional: the openvino extra

        core = ov.Core()
        self._compiled = core.compile_model(core.read_model(model) if isinstance(model, bytes) else model, "CPU",
                                            {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"})
        self.name, self.precision, self.metadata = "openvino:CPU", precision, metadata
        self.input_name = "lr"
        self.input_shape: list[object] = [None, None, None, 3]
        self.working_bytes_per_output_pixel = 256
        self.cache_window_pixels: int | None = None

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._compiled(batch)[0]


def per_image(up: Upscaler, scale: int) -> dict[str, float]:
    """Y-PSNR of each Set5 and Set14 image (``Set5/baby``...) at the model's ``scale``, whole images."""
    values = {}
    for name in ("Set5", "Set14"):
        for path in sorted((DATA / name).glob("*.png")):
            hr = crop_to_multiple(np.asarray(Image.open(path).convert("RGB")), scale)
            values[f"{name}/{path.stem}"] = psnr_y(up.upscale(bicubic_downscale(hr, scale), tile=0), hr, crop=scale)
    return values


def build(scheme: str, proto: onnx.ModelProto, contract: ModelContract, crops: list[np.ndarray],
          hint: str) -> Compiled:
    source, meta = proto.SerializeToString(), {p.key: p.value for p in proto.metadata_props}
    real = calibration_batches(contract, crops)
    if scheme.startswith("nncf"):
        import nncf  # optional: the nncf extra
        import openvino as ov  # optional: the openvino extra

        nncf.set_log_level(logging.ERROR)
        ov_model = ov.Core().read_model(source)
        ignored = nncf.IgnoredScope() if scheme == "nncf-plain" else nncf.IgnoredScope(
            names=protected_convs(proto), types=["Add"], validate=False)
        preset = nncf.QuantizationPreset.PERFORMANCE if scheme == "nncf-plain" else nncf.QuantizationPreset.MIXED
        with contextlib.redirect_stdout(sys.stderr):  # its progress bars: stdout stays the report (--json)
            quantized = nncf.quantize(ov_model, nncf.Dataset(real), preset=preset, subset_size=len(real),
                                      ignored_scope=ignored)
        return Compiled(quantized, hint, meta, "int8")
    schemes: dict[str, dict[str, Any]] = {
        "ours": {}, "ours-real": {}, "ours-minmax": {"moving_average": False},
        "ours-asym": {"symmetric_activations": False},
        "ours-v1": {"protect": ("head", "tail")},
        "ort-plain": {"protect": (), "tail_input": "same", "symmetric_activations": False, "moving_average": False}}
    options = schemes[scheme]
    batches = real if scheme in ("ours-real", "ort-plain") else calibration_batches(contract)
    return Compiled(quantize(source, batches, contract.input_name, **options), hint, meta, "int8")


def alternate(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Median seconds of each function, run in turns after one warm-up each."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_model(name: str, schemes: list[str], args: argparse.Namespace) -> dict:
    proto = onnx.load(str(WEIGHTS_DIR / f"{name}.onnx"))
    rewrite_graph(proto)
    contract = ModelContract.of_proto(proto) or ModelContract(scale=SCALE)
    scale = contract.scale or SCALE
    real = {"ours-real", "ort-plain", "nncf-plain", "nncf-mixed"} & set(schemes)
    crops = real_crops(args.crops, scale=scale) if real else []
    meta = {p.key: p.value for p in proto.metadata_props}
    hint = "bf16" if native_precision("openvino:CPU") == "bf16" else "f32"
    f32 = Compiled(proto.SerializeToString(), "f32", meta, "f32")
    engines = {"f32": f32, "bf16": Compiled(proto.SerializeToString(), "bf16", meta, "bf16")}
    rows: dict[str, dict] = {}
    for scheme in schemes:
        t, load = time.perf_counter(), load_average()
        try:
            engines[scheme] = build(scheme, proto, contract, crops, hint)
        except ImportError:
            print(f"{scheme}: skipped (pip install '.[nncf]')", file=sys.stderr)
            continue
        rows[scheme] = {"build_s": round(time.perf_counter() - t, 1), "build_load": load}
    ref = per_image(Upscaler(f32, contract, tile=0), scale)
    for scheme, row in rows.items():
        got = per_image(Upscaler(engines[scheme], contract, tile=0), scale)
        for s in ("Set5", "Set14"):
            cost = {k: ref[k] - got[k] for k in ref if k.startswith(s + "/")}
            worst = max(cost, key=lambda k: cost[k])
            row[s] = {"mean_cost_db": round(float(np.mean(list(cost.values()))), 4),
                      "worst_cost_db": round(cost[worst], 4), "worst_image": worst.split("/")[1],
                      "per_image": {k.split("/")[1]: round(v, 4) for k, v in cost.items()}}
        mean, worst_probe = int8_cost(f32, engines[scheme], contract)
        row["probe"] = {"mean_cost_db": round(mean, 4), "worst_cost_db": round(worst_probe, 4),
                        "auto_keeps": mean <= INT8_MAX_COST_DB and worst_probe <= INT8_MAX_WORST_DB}
    img = test_image(args.size)[None].astype(np.float32)
    before = load_average()
    secs = alternate({k: partial(e.run, img) for k, e in engines.items()}, args.repeat)
    after = load_average()
    speed = {k: {"seconds": round(v, 3), "vs_f32": round(secs["f32"] / v, 3), "vs_bf16": round(secs["bf16"] / v, 3)}
             for k, v in secs.items()}
    return {"model": name, "rest_in": hint, "schemes": rows, "speed": speed, "speed_load_before_after": [before, after]}


def run(args: argparse.Namespace) -> int:
    """``srgan bench int8`` (arguments: ``cli/bench.py``)."""
    schemes = [s for s in args.schemes.split(",") if s]
    unknown = set(schemes) - set(SCHEMES)
    if unknown:
        print(f"unknown schemes {sorted(unknown)}: use {', '.join(SCHEMES)}", file=sys.stderr)
        return 2
    info = cpu_report()
    with tempfile.TemporaryDirectory():
        models = [bench_model(m, schemes, args) for m in args.models.split(",") if m]
    report = {**info, "scheme": SCHEME, "load_average_now": list(os.getloadavg()), "input": f"{args.size}x{args.size}",
              "calibration_crops": args.crops, "models": models}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"CPU: {info['cpu']}; " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in info["flags"].items()))
    print(f"OpenVINO capabilities: {', '.join(info['openvino_capabilities']) or '-'}")
    print(f"ours: {SCHEME}")
    for m in models:
        print(f"\n{m['model']} (layers not in int8 run {m['rest_in']}); cost = f32's Y-PSNR minus the scheme's, dB")
        print(f"  {'scheme':11s} {'Set5 mean':>9s} {'worst':>7s} {'Set14 mean':>10s} {'worst':>7s} "
              f"{'probe mean':>10s} {'worst':>7s} {'auto':>5s} {'build s':>8s}")
        for scheme, r in m["schemes"].items():
            p = r["probe"]
            print(f"  {scheme:11s} {r['Set5']['mean_cost_db']:9.4f} {r['Set5']['worst_cost_db']:7.4f} "
                  f"{r['Set14']['mean_cost_db']:10.4f} {r['Set14']['worst_cost_db']:7.4f} {p['mean_cost_db']:10.4f} "
                  f"{p['worst_cost_db']:7.4f} {'yes' if p['auto_keeps'] else 'no':>5s} {r['build_s']:8.1f}")
        print(f"  speed ({report['input']}, whole image, medians of {args.repeat}, alternating; load average "
              f"{m['speed_load_before_after'][0]} -> {m['speed_load_before_after'][1]} on {os.cpu_count()} CPUs):")
        for k, v in m["speed"].items():
            print(f"    {k:11s} {v['seconds']:7.3f} s  {v['vs_f32']:6.2f}x f32  {v['vs_bf16']:6.2f}x bf16")
    return 0
