"""The shipped real-world models realworld_x4 and realworld_x2 with their clean models srresnet_x4 and srresnet_x2: the
cards, the denoise endpoints, auto's choice on clean and JPEG uploads, what they are for (a JPEG comes out closer to
the original, without its blocks), and the family's name choosing between them by scale."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from bench.data import shared_data
from core.catalog.catalog import ModelCatalog, choose_denoise
from core.catalog.load import build_upscaler
from core.catalog.shipped import WEIGHTS_DIR
from core.settings import Settings
from model.engine import Upscaler
from model.images import read_image
from model.interpolate import check_pair
from model.quality import bicubic_downscale, crop_to_multiple, flat_region_error, psnr_y
from model.strength import Strength
from training.degradations import degrade_condition
from training.sources import combined_folder_pairs, read_rgb, split_holdout

pytestmark = pytest.mark.integration

MEMBERS = {4: ("realworld_x4", "srresnet_x4", 15000), 2: ("realworld_x2", "srresnet_x2", 5000)}
"""Scale: (the real-world model, its denoise base, its planned steps)."""
BOUNDS = {4: (0.5, 0.8), 2: (0.3, 0.85)}
"""Scale: (the least mean Y-PSNR gain over the clean model at denoise auto, the most flat-region error as a share of
the clean model's). x4: issue 19's 0.5 dB. x2 has no bound in an issue; these guard what the release measured,
0.38 / 0.57 dB and 0.76 / 0.81 (jpeg / noise-jpeg): at x2 the clean model amplifies a JPEG's blocks less (at a
fixed 0.5 the jpeg gain is 0.49 dB; auto's thresholds fitted for x2, in its card, are x4's for JPEG)."""
SIDE = 256
"""HR crops of the held-out images (LR 64x64): big enough for JPEG's blocks and flat regions, quick on 2 cores."""


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("data"), backend="onnxruntime", threads=2,
                    tile=0, overlap=0, precision="f32")


@pytest.fixture(scope="module", params=sorted(MEMBERS, reverse=True), ids=lambda s: f"x{s}")
def member(request):
    """(scale, the real-world model's file, its clean model's file, its planned steps)."""
    real, clean, steps = MEMBERS[request.param]
    return request.param, WEIGHTS_DIR / f"{real}.onnx", WEIGHTS_DIR / f"{clean}.onnx", steps


@pytest.fixture(scope="module")
def held_out():
    """Centre crops of the first four images training held out: never trained on, but the release picked its
    checkpoint by validation on degraded copies of them, so this is the validation's measure (bench/realworld.py
    has Set5 and Set14 beside it)."""
    data = shared_data()
    _, held = split_holdout(combined_folder_pairs(data / "train", [data / "train-extra"]), 0.05)
    crops = []
    for pair in held[:4]:
        hr = read_rgb(pair.hr_path)
        y, x = max(0, (hr.shape[0] - SIDE) // 2), max(0, (hr.shape[1] - SIDE) // 2)
        crops.append(crop_to_multiple(hr[y:y + SIDE, x:x + SIDE], 4))
    return crops


def _raw(upscaler: Upscaler, img: np.ndarray) -> np.ndarray:
    return upscaler._run([img])[0]


def test_the_card_names_its_clean_model_as_denoise_base_and_the_planned_steps_were_trained(member):
    scale, real, clean, steps = member
    card = json.loads(real.with_suffix(".card.json").read_text())
    assert card["denoise_base"] == clean.stem and card["scale"] == scale
    training = card["training"]
    assert training["steps_trained"] >= training["planned_steps"] == steps
    assert "realworld" in training["degradation"]
    check_pair(clean, real)


def test_denoise_0_is_the_clean_model_and_denoise_1_the_real_world_model(settings, held_out, member):
    scale, real_path, clean_path, _ = member
    image = bicubic_downscale(held_out[0], scale)[:24, :32]
    clean = _raw(Upscaler.from_file(clean_path, backend="onnxruntime", precision="f32", tile=0, overlap=0), image)
    real = _raw(Upscaler.from_file(real_path, backend="onnxruntime", precision="f32", tile=0, overlap=0), image)
    catalog = ModelCatalog(settings)
    outs = {n: _raw(build_upscaler(settings, catalog.blend(str(real_path), None, Strength(n, "asked"))), image)
            for n in (0.0, 0.5, 1.0)}
    assert np.abs(outs[0.0] - clean).max() <= 1e-3
    assert np.abs(outs[1.0] - real).max() <= 1e-3
    assert np.abs(clean - real).max() > 1.0, "the real-world model must differ from its clean model"
    assert np.abs(outs[0.5] - clean).max() > 0.1 and np.abs(outs[0.5] - real).max() > 0.1


def _upload(img_u8: np.ndarray, fmt: str, **kw) -> Image.Image:
    buf = io.BytesIO()
    Image.fromarray(img_u8).save(buf, format=fmt, **kw)
    return read_image(buf.getvalue(), max_pixels=img_u8.shape[0] * img_u8.shape[1])


def test_auto_gives_a_clean_png_0_and_a_q60_jpeg_a_strength_from_its_tables(settings, held_out, member):
    scale, real, _, _ = member
    target = ModelCatalog(settings).describe_file(real)
    for hr in held_out:
        lr = bicubic_downscale(hr, scale)
        clean = choose_denoise(target, "auto", _upload(lr, "PNG"))
        assert clean is not None and clean.value == 0.0, clean
        assert "no jpeg tables" in clean.reason
        jpeg = choose_denoise(target, "auto", _upload(lr, "JPEG", quality=60))
        assert jpeg is not None and jpeg.value > 0.3 and "jpeg q60" in jpeg.reason, jpeg


@pytest.mark.parametrize("condition", ["jpeg", "noise-jpeg"])
def test_auto_restores_jpeg_uploads_better_than_the_clean_model(settings, held_out, member, condition):
    """Issue 19's bound against the clean model (>= 0.5 dB Y-PSNR at denoise auto; x2: :data:`BOUNDS`), on the
    held-out images, and the artifacts gone: less error where the original is flat (what amplified blocks and
    noise show up in)."""
    scale, real_path, clean_path, _ = member
    catalog = ModelCatalog(settings)
    target = catalog.describe_file(real_path)
    clean_engine = Upscaler.from_file(clean_path, backend="onnxruntime", precision="f32", tile=0, overlap=0, threads=2)
    gains, flat_real, flat_clean = [], [], []
    for i, hr in enumerate(held_out):
        upload = read_image(degrade_condition(hr, condition, scale, seed=i).data, max_pixels=SIDE * SIDE)
        lr = np.asarray(upload.convert("RGB"))
        strength = choose_denoise(target, "auto", upload)
        assert strength is not None and strength.value > 0.0, strength
        real = build_upscaler(settings, catalog.blend(str(real_path), None, strength)).upscale(lr)
        clean = clean_engine.upscale(lr)
        gains.append(psnr_y(real, hr, crop=scale) - psnr_y(clean, hr, crop=scale))
        flat_real.append(flat_region_error(real, hr, crop=scale))
        flat_clean.append(flat_region_error(clean, hr, crop=scale))
    least_gain, most_flat = BOUNDS[scale]
    assert np.mean(gains) >= least_gain, gains
    assert np.mean(flat_real) < most_flat * np.mean(flat_clean), (flat_real, flat_clean)


@pytest.mark.parametrize(("scale", "real", "clean"), [(2, "realworld_x2", "srresnet_x2"), (1.5, "realworld_x2",
                                                      "srresnet_x2"), (3, "realworld_x4", "srresnet_x4"),
                                                     (None, "realworld_x4", "srresnet_x4")])
def test_the_family_name_runs_the_native_member_for_the_scale_with_its_own_clean_model(settings, scale, real, clean):
    """``model=realworld`` (API and CLI): x2 and less run the native realworld_x2, blended for denoise with
    srresnet_x2 (not the x4 pair resampled down); x3, x4 or no scale realworld_x4."""
    catalog = ModelCatalog(settings)
    chosen = catalog.select(model="realworld", scale=scale, denoise=True)
    assert chosen.name == real
    blend = catalog.blend(catalog.spec_for("realworld", scale), None, Strength(0.5, "asked"))
    assert [m.name for m, _ in blend.parts()] == [clean, real]
