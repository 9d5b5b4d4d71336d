"""int8 on the shipped srresnet_x4 and a real photo: close to float32, and ``auto`` takes it on an int8 CPU.

Real quantization (synthetic calibration, as at run time) and real int8 arithmetic on this machine's CPU. Where
OpenVINO has no int8 faster than float32 on the CPU (one without AVX2, VNNI or AMX) the same tests check the other
side: int8 is refused by name, and ``auto`` runs the shipped model in its float precision. (On an AVX2-only CPU
the int8 side runs: OpenVINO's int8 is 1.32-1.60x float32 there.)
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.data import training_photo
from core.catalog.shipped import WEIGHTS_DIR
from model.backends import cpu_flags, native_precision
from model.engine import INT8_MAX_WORST_DB, Upscaler, rgb_psnr
from model.errors import ModelError
from model.int8 import int8_native
from model.quality import bicubic_downscale, crop_to_multiple, psnr_y

pytestmark = pytest.mark.integration
INT8_CPU = int8_native(cpu_flags())

MODEL = WEIGHTS_DIR / "srresnet_x4.onnx"
MAX_COST_DB = INT8_MAX_WORST_DB
"""int8 may lose at most this much Y-PSNR against float32 on one real photo (issue 23's worst-image bound;
measured 0.005-0.022 dB on 256x256 crops of four BSD200 training photos, Intel Xeon with AMX-INT8)."""
MIN_AGREEMENT_DB = 45.0
"""...and its output must agree with float32's at least this well (RGB PSNR; measured 49.5-51.7 dB there)."""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("int8-cache")


def test_int8_on_a_real_photo_is_within_the_bound_of_float32(cache):
    photo = training_photo(7)
    hr = crop_to_multiple(photo[:256, :256], 4)
    lr = bicubic_downscale(hr, 4)
    f32 = Upscaler.from_file(MODEL, backend="openvino", precision="f32", tile=0)
    if not INT8_CPU:
        with pytest.raises(ModelError, match=r"int8 needs a CPU with int8 dot-product units .* has none"):
            Upscaler.from_file(MODEL, backend="openvino", precision="int8", tile=0, cache_dir=cache)
        assert not (cache / "int8").exists(), "nothing quantized for a CPU that refuses int8"
        return
    int8 = Upscaler.from_file(MODEL, backend="openvino", precision="int8", tile=0, cache_dir=cache)
    assert int8.precision == "int8" and int8.precision_note is not None and "int8 scheme" in int8.precision_note
    ref, got = f32.upscale(lr), int8.upscale(lr)
    cost = psnr_y(ref, hr, crop=4) - psnr_y(got, hr, crop=4)
    assert cost <= MAX_COST_DB, f"int8 costs {cost:.3f} dB on a real photo"
    assert rgb_psnr(got, ref) >= MIN_AGREEMENT_DB
    assert not np.array_equal(got, ref), "really another arithmetic"


def test_auto_takes_int8_for_the_shipped_model_and_the_next_start_reads_it_back(cache):
    up = Upscaler.from_file(MODEL, backend="openvino", precision="auto", cache_dir=cache)
    if not INT8_CPU:  # auto never takes int8 here: the float precision the CPU runs natively
        assert up.precision == native_precision(up.backend_name) and up.precision_note is not None
        assert up.precision_note.startswith("auto:") and "int8" not in up.precision_note, up.precision_note
        assert not (cache / "int8").exists()
        return
    assert up.precision == "int8", up.precision_note
    assert up.precision_note is not None and up.precision_note.startswith("auto: int8 on ")
    (saved,) = (cache / "int8").iterdir()  # the graph the explicit int8 engine quantized, reused by auto
    again = Upscaler.from_file(MODEL, backend="openvino", precision="auto", cache_dir=cache)
    assert (again.precision, again.precision_note) == (up.precision, up.precision_note)
    assert list((cache / "int8").iterdir()) == [saved]


def test_auto_tries_int8_for_the_real_world_model_alone_and_runs_its_blends_in_float(tmp_path):
    """``realworld_x4``'s card records its int8 measurement (bench/README.md, int8), so at ``denoise 1`` (the file
    alone) ``auto`` quantizes it and keeps int8 after its own probe on an int8 CPU; a blend with its clean model
    (any other strength) is a network no card measured, and runs in the CPU's float precision."""
    from core.catalog.catalog import ModelCatalog
    from core.catalog.load import build_upscaler
    from core.settings import Settings
    from model.strength import Strength

    settings = Settings(_env_file=None, data_dir=tmp_path / "data", backend="openvino", threads=2, tile=0,
                        precision="auto", cache_dir=tmp_path / "cache")
    catalog = ModelCatalog(settings)
    assert catalog.resolve("realworld_x4").int8 is not None
    alone = build_upscaler(settings, catalog.blend("realworld_x4", None, Strength(1.0, "asked")))
    blend = build_upscaler(settings, catalog.blend("realworld_x4", None, Strength(0.5, "asked")))
    assert blend.precision == native_precision(blend.backend_name), blend.precision_note
    if not INT8_CPU:
        assert alone.precision == native_precision(alone.backend_name), alone.precision_note
        return
    assert alone.precision == "int8", alone.precision_note
