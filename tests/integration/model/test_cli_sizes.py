"""``srgan upscale --scale S | --width W | --height H | --max-side N`` run as a user runs it, on real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.tiny_models import make_nearest_model
from core.catalog.registry import Registry
from tests.utils.models import publish_checked

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


def srgan(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})}, cwd=REPO)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A data folder whose registry holds an x4 model (the default) and an x2 one, and a 47x33 PNG."""
    root = tmp_path_factory.mktemp("sizes")
    registry = Registry(root / "data" / "models")
    publish_checked(registry, make_nearest_model(root / "n4.onnx", scale=4, name="near4"), name="near4")
    publish_checked(registry, make_nearest_model(root / "n2.onnx", scale=2, name="near2"), name="near2")
    image = root / "in" / "a.png"
    image.parent.mkdir()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (33, 47, 3), dtype=np.uint8)).save(image)
    env = {"SRGAN_DATA_DIR": str(root / "data"), "SRGAN_MODEL": "near4", "SRGAN_BACKEND": "onnxruntime"}
    return image, env


def made_by(path: Path) -> dict:
    return json.loads(Image.open(path).info["srgan"])


@pytest.mark.parametrize(("args", "name", "size", "model", "resample"), [
    (["--scale", "2.5"], "a_x2.5.png", (118, 83), "near4:1", 4),  # 117.5 and 82.5: halves up; x4 then down
    (["--scale", "1.5"], "a_x1.5.png", (71, 50), "near2:1", 2),  # the x2 model reaches 1.5: the smallest that does
    (["--scale", "2"], "a_x2.png", (94, 66), "near2:1", None),  # the x2 model's output is the result
    (["--scale", "3"], "a_x3.png", (141, 99), "near4:1", 4),
    (["--scale", "6"], "a_x6.png", (282, 198), "near4:1", 4),  # beyond every model: the largest, resampled up
    (["--width", "100"], "a_100w.png", (100, 70), "near4:1", 4),
    (["--height", "66"], "a_66h.png", (94, 66), "near2:1", None),
    (["--width", "200", "--height", "99"], "a_200x99.png", (141, 99), "near4:1", 4),  # fit inside the box
    (["--max-side", "94"], "a_max94.png", (94, 66), "near2:1", None),
])
def test_the_result_has_the_asked_size_and_the_smallest_model_reaching_it_runs(stack, tmp_path, args, name, size,
                                                                               model, resample):
    image, env = stack
    res = srgan("upscale", image, "-o", tmp_path, *args, env=env)
    assert res.returncode == 0, res.stderr
    out = tmp_path / name
    assert Image.open(out).size == size, res.stdout
    meta = made_by(out)
    assert meta["model"] == model
    assert meta.get("resample") == ({"model_scale": resample, "size": list(size), "filter": "lanczos"}
                                    if resample else None)


def test_a_named_model_is_used_as_named(stack, tmp_path):
    image, env = stack
    res = srgan("upscale", image, "-o", tmp_path, "--scale", "1.5", "--model", "near4", env=env)
    assert res.returncode == 0, res.stderr
    assert made_by(tmp_path / "a_x1.5.png")["model"] == "near4:1"


@pytest.fixture(scope="module")
def family(tmp_path_factory, stack):
    """A registry holding the family ``pic`` (pic_x4, pic_x2) and the default near4, and the same 47x33 PNG."""
    root = tmp_path_factory.mktemp("family")
    registry = Registry(root / "data" / "models")
    publish_checked(registry, make_nearest_model(root / "n4.onnx", scale=4, name="near4"), name="near4")
    publish_checked(registry, make_nearest_model(root / "p4.onnx", scale=4, name="pic_x4"), name="pic_x4")
    publish_checked(registry, make_nearest_model(root / "p2.onnx", scale=2, name="pic_x2"), name="pic_x2")
    env = {"SRGAN_DATA_DIR": str(root / "data"), "SRGAN_MODEL": "near4", "SRGAN_BACKEND": "onnxruntime"}
    return stack[0], env


@pytest.mark.parametrize(("args", "name", "model", "resample"), [
    (["--scale", "2"], "a_x2.png", "pic_x2:1", None),  # the family's native x2, its output as it is
    (["--scale", "1.5"], "a_x1.5.png", "pic_x2:1", 2),
    (["--scale", "3"], "a_x3.png", "pic_x4:1", 4),
    ([], "a_x4.png", "pic_x4:1", None),  # no size: the family's largest
])
def test_a_family_name_runs_its_member_for_the_size(family, tmp_path, args, name, model, resample):
    image, env = family
    res = srgan("upscale", image, "-o", tmp_path, "--model", "pic", *args, env=env)
    assert res.returncode == 0, res.stderr
    meta = made_by(tmp_path / name)
    assert meta["model"] == model
    assert (meta.get("resample") or {}).get("model_scale") == resample


@pytest.mark.parametrize(("args", "message"), [
    (["--width", "20"], "a.png: width=20: from this 47x33 image that is a scale of 0.426; the scale must be from "
                        "1 to 8 (nothing was upscaled)"),
    (["--max-side", "400"], "max_side=400: from this 47x33 image that is a scale of 8.51"),
    (["--scale", "2", "--width", "100"], "--scale goes alone, not with --width"),
    (["--max-side", "100", "--height", "50"], "--max-side goes alone"),
])
def test_a_size_that_cannot_be_made_is_one_line_and_exit_2(stack, tmp_path, args, message):
    image, env = stack
    res = srgan("upscale", image, "-o", tmp_path / "out", *args, env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("srgan: error: ") and message in lines[0], res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["--scale", "9"], ["--scale", "0.5"], ["--scale", "nan"], ["--width", "0"],
                                  ["--height", "x"]])
def test_out_of_range_values_are_refused_by_the_parser(stack, tmp_path, args):
    image, env = stack
    res = srgan("upscale", image, "-o", tmp_path / "out", *args, env=env)
    assert res.returncode == 2 and "srgan upscale: error: argument" in res.stderr, res.stderr
