"""The shipped native x2 model srresnet_x2: it beats the x4 model resized to x2 (what a job asking x2 got before),
and jobs asking x2 or less run it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bench.data import shared_data
from core.catalog.catalog import ModelCatalog
from core.catalog.shipped import WEIGHTS_DIR
from core.settings import Settings
from model.engine import Upscaler
from model.quality import bicubic_downscale, crop_to_multiple, psnr_y
from training.sources import read_rgb

pytestmark = pytest.mark.integration

X2, X4 = WEIGHTS_DIR / "srresnet_x2.onnx", WEIGHTS_DIR / "srresnet_x4.onnx"


def test_the_card_says_x2_and_the_planned_steps_were_trained():
    card = json.loads((WEIGHTS_DIR / "srresnet_x2.card.json").read_text())
    assert card["scale"] == 2 and card["contract"]["scale"] == 2
    assert card["training"]["steps_trained"] == card["training"]["planned_steps"]


def test_native_x2_beats_x4_then_lanczos_on_set5_at_x2():
    """The issue's measure, reproduced: the paper protocol at scale 2 on Set5 (measuring only: nothing was picked
    on it), the x4 model's output resized with the service's Lanczos as a job asking x2 got it before. The card
    records 37.45 against 37.32 dB (Set14: 33.07 against 33.01)."""
    x2 = Upscaler.from_file(X2, backend="onnxruntime", precision="f32", tile=0, overlap=0, threads=2)
    x4 = Upscaler.from_file(X4, backend="onnxruntime", precision="f32", tile=0, overlap=0, threads=2)
    native, resized = [], []
    for path in sorted((shared_data() / "bench" / "Set5").glob("*.png")):
        hr = crop_to_multiple(read_rgb(path), 2)
        lr = bicubic_downscale(hr, 2)
        size = (hr.shape[1], hr.shape[0])
        native.append(psnr_y(x2.upscale(lr), hr, crop=2))
        resized.append(psnr_y(np.asarray(Image.fromarray(x4.upscale(lr)).resize(size, Image.Resampling.LANCZOS)),
                              hr, crop=2))
    assert np.mean(native) > np.mean(resized) + 0.1, (native, resized)


@pytest.mark.parametrize(("scale", "expected"), [(2, "srresnet_x2"), (1.5, "srresnet_x2"), (2.5, "srresnet_x4"),
                                                 (4, "srresnet_x4"), (None, "srresnet_x4")])
def test_a_job_naming_no_model_runs_the_smallest_shipped_model_that_reaches_its_scale(tmp_path, scale, expected):
    settings = Settings(_env_file=None, data_dir=tmp_path, backend="onnxruntime")
    assert ModelCatalog(settings).select(model=None, scale=scale).name == expected
