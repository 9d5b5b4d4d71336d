"""``srgan eval``: agrees with PSNR and SSIM computed by hand, and never imports TensorFlow."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from model.contract import ModelContract

pytestmark = [pytest.mark.unit, pytest.mark.train]

ROOT = Path(__file__).resolve().parents[3]


def _nearest_x2_model(path: Path) -> None:
    """An ONNX 'generator' that repeats every pixel 2x2 (NHWC in and out), with the contract."""
    nodes = [
        helper.make_node("Transpose", ["lr"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Resize", ["nchw", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Transpose", ["up"], ["hr"], perm=[0, 2, 3, 1]),
    ]
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, 2.0, 2.0])
    graph = helper.make_graph(
        nodes,
        "nearest_x2",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["n", "h", "w", 3])],
        [helper.make_tensor_value_info("hr", TensorProto.FLOAT, ["n", "h2", "w2", 3])],
        initializer=[scales],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in ModelContract(scale=2, name="nearest").to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def _by_hand(hr: np.ndarray) -> tuple[float, float]:
    """PSNR-Y of nearest and bicubic x2 written out without model.quality."""
    h, w = hr.shape[0] // 2 * 2, hr.shape[1] // 2 * 2
    hr = hr[:h, :w]
    lr = np.asarray(Image.fromarray(hr).resize((w // 2, h // 2), Image.Resampling.BICUBIC))
    nearest = lr.repeat(2, 0).repeat(2, 1)
    bicubic = np.asarray(Image.fromarray(lr).resize((w, h), Image.Resampling.BICUBIC))

    def y(img):
        img = img.astype(np.float64)
        return 16 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255

    def psnr(a, b):
        mse = np.mean((y(a)[2:-2, 2:-2] - y(b)[2:-2, 2:-2]) ** 2)
        return 10 * math.log10(255**2 / mse)

    return psnr(nearest, hr), psnr(bicubic, hr)


def test_eval_agrees_with_psnr_by_hand_and_never_imports_tensorflow(tmp_path):
    model = tmp_path / "nearest.onnx"
    _nearest_x2_model(model)
    rng = np.random.default_rng(0)
    images = {}
    for name, size in (("one.png", (40, 30)), ("sub/two.png", (33, 27))):
        small = rng.integers(0, 256, (size[1] // 4, size[0] // 4, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC))
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "data" / name)
        images[name] = img
    script = textwrap.dedent(
        f"""
        import sys
        from cli.main import main
        code = main(["eval", "--model", {str(model)!r}, "--data", {str(tmp_path / "data")!r}, "--scale", "2", "--json"])
        heavy = [m for m in ("tensorflow", "keras", "tf2onnx") if m in sys.modules]
        print("HEAVY", heavy, file=sys.stderr)
        sys.exit(code or (3 if heavy else 0))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    for key in ("mean_psnr_y", "mean_ssim_y", "bicubic_mean_psnr_y", "bicubic_mean_ssim_y"):
        assert key in report
    per_image = {img["name"]: img for img in report["images"]}
    assert set(per_image) == set(images)
    for name, img in images.items():
        nearest, bicubic = _by_hand(img)
        assert per_image[name]["psnr_y"] == pytest.approx(nearest, abs=1e-9)
        assert per_image[name]["bicubic_psnr_y"] == pytest.approx(bicubic, abs=1e-9)
    assert report["mean_psnr_y"] == pytest.approx(np.mean([_by_hand(i)[0] for i in images.values()]), abs=1e-9)
    assert 0 < report["mean_ssim_y"] < report["bicubic_mean_ssim_y"] < 1


def test_eval_table(tmp_path, capsys):
    from cli.main import main

    model = tmp_path / "nearest.onnx"
    _nearest_x2_model(model)
    (tmp_path / "data").mkdir()
    Image.fromarray(np.full((24, 24, 3), 90, np.uint8)).save(tmp_path / "data" / "flat.png")
    assert main(["eval", "--model", str(model), "--data", str(tmp_path / "data")]) == 0
    table = capsys.readouterr().out
    assert "flat.png" in table and "mean all (1)" in table and "bicubic" in table


def test_eval_at_another_scale_measures_the_models_output_resized_as_a_job_gets_it(tmp_path):
    """--scale 4 on an x2 model: LR is the x4 protocol's, the model's x2 output is resized with Lanczos (the
    service's filter) to the HR size, and PSNR-Y is that picture's, computed here by hand."""
    from training.evaluate import evaluate_model

    model = tmp_path / "nearest.onnx"
    _nearest_x2_model(model)
    (tmp_path / "data").mkdir()
    small = np.random.default_rng(3).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    hr = np.asarray(Image.fromarray(small).resize((64, 48), Image.Resampling.BICUBIC))
    Image.fromarray(hr).save(tmp_path / "data" / "one.png")
    report = evaluate_model(model, tmp_path / "data", scale=4, niqe=False)
    assert report["scale"] == 4 and report["resample"] == {"model_scale": 2, "filter": "lanczos"}
    lr = Image.fromarray(hr).resize((16, 12), Image.Resampling.BICUBIC)
    sr = np.asarray(lr).repeat(2, 0).repeat(2, 1)
    sr = np.asarray(Image.fromarray(sr).resize((64, 48), Image.Resampling.LANCZOS))
    from model.quality import psnr_y

    assert report["images"][0]["psnr_y"] == pytest.approx(psnr_y(sr, hr, crop=4), abs=1e-9)
    assert report["images"][0]["psnr_y"] != pytest.approx(report["images"][0]["bicubic_psnr_y"], abs=1e-3)
