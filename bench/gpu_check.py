"""GPU check: which ONNX Runtime GPU providers load, and what they make of the shipped model.

Run by ``bench/gpu_check.sh`` (which makes a fresh virtual environment with the
``gpu`` extra); ``srgan bench gpu-check --help`` for the options. For each
GPU provider that loads (TensorRT, CUDA) and each precision (float32,
float16): time the engine on a 512x512 input (whole image) and a 2048x2048
input (tiles), compare the 512x512 output with ONNX Runtime's CPU output and
the 2048x2048 float16 output with float32 on the same provider (RGB PSNR), and
print the achieved GFLOP/s against the GPU's dense peak for that precision,
looked up from the name ``nvidia-smi`` reports.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from bench.engine import psnr, srresnet_flops_per_input_pixel, test_image
from core.catalog.shipped import WEIGHTS_DIR
from model.backends import device_memory_budget, gpu_free_memory
from model.engine import Upscaler

# Dense (no sparsity) peak TFLOP/s: (float32 on CUDA cores, float16 on tensor cores with float32 accumulation),
# from NVIDIA's datasheets. Matched as substrings of the nvidia-smi name, most specific first.
PEAKS_TFLOPS: list[tuple[str, float, float]] = [
    ("H200", 67.0, 989.0),
    ("H100 PCIe", 51.0, 756.0),
    ("H100 NVL", 60.0, 835.0),
    ("H100", 67.0, 989.0),  # SXM
    ("GH200", 67.0, 989.0),
    ("B200", 80.0, 2250.0),
    ("A100", 19.5, 312.0),
    ("A10G", 31.2, 70.0),
    ("A10", 31.2, 125.0),
    ("L40S", 91.6, 362.0),
    ("L40", 90.5, 181.0),
    ("L4", 30.3, 121.0),
    ("T4", 8.1, 65.0),
    ("V100", 15.7, 125.0),
    ("RTX 4090", 82.6, 165.2),
    ("RTX 3090", 35.6, 71.0),
]
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def gpu_name() -> str:
    if shutil.which("nvidia-smi") is None:
        return "unknown (no nvidia-smi)"
    res = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30)
    return res.stdout.strip().splitlines()[0] if res.returncode == 0 and res.stdout.strip() else "unknown"


def peak_tflops(name: str) -> tuple[float, float] | None:
    for key, fp32, fp16 in PEAKS_TFLOPS:
        if key.lower() in name.lower():
            return fp32, fp16
    return None


def try_provider(model: Path, provider: str) -> str | None:
    """None when a session on ``provider`` loads and runs, else the first line of why not."""
    import onnxruntime as ort  # optional: the gpu extra

    try:
        sess = ort.InferenceSession(str(model), providers=[provider])
        if sess.get_providers()[0] != provider:
            return f"fell back to {sess.get_providers()[0]}"
        sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, 16, 16, 3), np.float32)})
    except Exception as exc:  # noqa: BLE001 - reported, not handled
        return str(exc).strip().splitlines()[0][:300]
    return None


def timed(fn, repeat: int) -> tuple[float, np.ndarray]:
    out = fn()  # warm-up: kernels, TensorRT engine for this shape
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def run(args: argparse.Namespace) -> int:
    """``srgan bench gpu-check`` (arguments: ``cli/bench.py``)."""

    import onnxruntime as ort  # optional: the gpu extra


    model = args.model or WEIGHTS_DIR / "srresnet_x4.onnx"
    if not model.is_file():
        print(f"gpu_check: model not found: {model}", file=sys.stderr)
        return 2
    if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from the nvidia-* wheels, where installed
        try:
            ort.preload_dlls()
        except Exception as exc:  # noqa: BLE001
            print(f"gpu_check: preload_dlls: {exc}", file=sys.stderr)
    name = gpu_name()
    peaks = peak_tflops(name)
    flops_px = srresnet_flops_per_input_pixel()
    sizes = [int(s) for s in args.sizes.split(",")]
    report: dict = {"gpu": name, "onnxruntime": ort.__version__, "available": ort.get_available_providers(),
                    "peak_tflops_fp32_fp16": peaks, "providers": {}, "runs": []}
    print(f"GPU: {name}\nONNX Runtime {ort.__version__}, available providers: {report['available']}")
    print(f"dense peak (fp32, fp16 tensor) TFLOP/s: {peaks if peaks else 'unknown for this name'}")

    free = gpu_free_memory()
    report["gpu_free_bytes"] = free
    report["tile_auto_budget_bytes"] = device_memory_budget("onnxruntime:CUDAExecutionProvider", free=free)
    print(f"free GPU memory {free} B; tile=auto budget for the network {report['tile_auto_budget_bytes']} B")
    usable = []
    for provider in (args.providers or ",".join(GPU_PROVIDERS)).split(","):
        why = try_provider(model, provider) if provider in report["available"] else "not in this build"
        report["providers"][provider] = "loads" if why is None else why
        print(f"  {provider}: {'loads' if why is None else 'NOT usable: ' + why}")
        if why is None:
            usable.append(provider)

    cpu_ref = None
    if sizes:
        print(f"CPU reference, {sizes[0]}x{sizes[0]} (ONNX Runtime CPU, float32)...", flush=True)
        cpu = Upscaler.from_file(model, backend="onnxruntime", providers=["CPUExecutionProvider"], precision="f32",
                                 tile=0)
        t0 = time.perf_counter()
        cpu_ref = cpu.upscale(test_image(sizes[0]))
        print(f"  {time.perf_counter() - t0:.1f} s")
    for provider in usable:
        f32_out: dict[int, np.ndarray] = {}
        for precision in ("f32", "f16"):
            try:
                up = Upscaler.from_file(model, backend="onnxruntime", providers=[provider], precision=precision,
                                        tile=0)
            except Exception as exc:  # noqa: BLE001
                print(f"  {provider} {precision}: cannot load: {exc}")
                report["runs"].append({"provider": provider, "precision": precision, "error": str(exc)})
                continue
            for size in sizes:
                img = test_image(size)
                tile = 0 if size == sizes[0] else args.tile
                try:
                    secs, out = timed(partial(up.upscale, img, tile=tile), args.repeat)
                except Exception as exc:  # noqa: BLE001
                    print(f"  {provider} {precision} {size}: failed: {exc}")
                    report["runs"].append({"provider": provider, "precision": precision, "size": size,
                                           "error": str(exc)})
                    continue
                gflops = size * size * flops_px / secs / 1e9
                row = {"provider": provider, "precision": precision, "size": size, "tile": tile,
                       "seconds": round(secs, 4), "gflops": round(gflops, 1),
                       "out_mpx_per_s": round(out.shape[0] * out.shape[1] / secs / 1e6, 2),
                       "f32_reruns": up.f32_reruns, "auto_tile": up.tile_for(size, size, "auto")}
                if peaks:
                    row["vs_peak"] = round(gflops / 1e3 / (peaks[0] if precision == "f32" else peaks[1]), 4)
                if size == sizes[0] and cpu_ref is not None:
                    row["psnr_vs_cpu_db"] = round(psnr(out, cpu_ref), 2)
                if precision == "f32":
                    f32_out[size] = out
                elif size in f32_out:
                    row["psnr_vs_f32_db"] = round(psnr(out, f32_out[size]), 2)
                report["runs"].append(row)
                print("  " + json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if not usable:
        print("gpu_check: no GPU provider loads here (see above)", file=sys.stderr)
        return 1
    return 0

