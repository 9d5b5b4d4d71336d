"""Precision: what a backend computes in, ``auto``'s choice and check, and float32 re-runs of ruined tiles.

OpenVINO runs bfloat16 on any AVX512 CPU (emulated where the CPU lacks
AVX512-BF16/AMX), so there these run real reduced-precision arithmetic; the fragile
models are ones bfloat16 ruins and float32 does not. On a CPU without AVX512
OpenVINO has no bfloat16: the tests check that it says it runs float32, and the
engine's checks and re-runs meet :class:`Ruining` instead (:data:`OPENVINO_BF16`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.tiny_models import make_low_precision_fragile_model, make_srresnet_model
from core.settings import Settings
from model.backends import Backend, cpu_flags, native_precision, open_backend, openvino_capabilities
from model.engine import CHECK_MIN_PSNR_DB, Upscaler, _checked, check_precision, precision_test_card
from model.errors import ModelError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("precision")
    return {
        "blank": make_low_precision_fragile_model(d / "blank.onnx", "blank"),
        "nan": make_low_precision_fragile_model(d / "nan.onnx", "nan"),
        "srresnet": make_srresnet_model(d / "srresnet.onnx", scale=2, blocks=2, filters=16),
    }


def photo(size: int = 40) -> np.ndarray:
    return precision_test_card(size)


def test_native_precision_follows_cpu_flags_and_runtime():
    assert native_precision("openvino:CPU", flags={"avx512f", "amx_bf16"}, capabilities=["FP32", "BF16"]) == "bf16"
    assert native_precision("openvino:CPU", flags={"avx512f", "avx512_bf16"}, capabilities=["FP32", "BF16"]) == "bf16"
    # AVX512 without bf16 units: OpenVINO would emulate bfloat16, slower than float32
    assert native_precision("openvino:CPU", flags={"avx512f"}, capabilities=["FP32", "INT8"]) == "f32"
    # the flag alone is not enough when this OpenVINO build does not offer BF16
    assert native_precision("openvino:CPU", flags={"amx_bf16"}, capabilities=["FP32"]) == "f32"
    assert native_precision("onnxruntime:CUDAExecutionProvider") == "f16"
    assert native_precision("onnxruntime:TensorrtExecutionProvider") == "f16"
    assert native_precision("onnxruntime:CPUExecutionProvider") == "f32"


def test_native_precision_on_this_machine_matches_its_flags():
    flags, caps = cpu_flags(), openvino_capabilities()
    assert "FP32" in caps
    expected = "bf16" if ({"amx_bf16", "avx512_bf16"} & flags and "BF16" in caps) else "f32"
    assert native_precision("openvino:CPU") == expected


OPENVINO_BF16 = "BF16" in openvino_capabilities()
"""OpenVINO computes in bfloat16 on this CPU (natively with AMX or AVX512-BF16, emulated on other AVX512 CPUs).
Without AVX512 (an AVX2-only CPU) it has no bfloat16 at all: asked for it, it runs float32 and says so, and the
tests of what reduced precision ruins use :class:`Ruining`, which ruins the way bfloat16 ruins the fragile
models."""


class Ruining:
    """A backend that reports a reduced precision and gives what bfloat16 gives the fragile models (``blank``:
    black; ``nan``: NaN) from the real float32 backend's shapes: the engine's checks and float32 re-runs on a CPU
    where OpenVINO has no bfloat16 to ruin them with."""

    def __init__(self, real: Backend, failure: str) -> None:
        self.real, self.failure = real, failure
        self.name, self.precision = "openvino:CPU", "bf16"
        self.input_name, self.input_shape = real.input_name, real.input_shape
        self.metadata = real.metadata
        self.working_bytes_per_output_pixel = real.working_bytes_per_output_pixel
        self.cache_window_pixels = real.cache_window_pixels

    def run(self, batch: np.ndarray) -> np.ndarray:
        out = self.real.run(batch)
        return np.full_like(out, np.nan) if self.failure == "nan" else np.zeros_like(out)


def reduced(model: Path, failure: str) -> Backend:
    """The fragile model at the reduced precision this CPU has: OpenVINO's bfloat16, else :class:`Ruining`."""
    if OPENVINO_BF16:
        return open_backend(model, backend="openvino", precision="bf16")
    return Ruining(open_backend(model, backend="openvino", precision="f32"), failure)


def test_openvino_reports_the_precision_it_runs(models):
    f32 = open_backend(models["srresnet"], backend="openvino", precision="f32")
    bf16 = open_backend(models["srresnet"], backend="openvino", precision="bf16")
    if OPENVINO_BF16:
        assert (f32.precision, bf16.precision) == ("f32", "bf16")
        # bfloat16 really computes differently, and close to float32 on a real network
        db = check_precision(f32, bf16)
        assert 30 < db < float("inf")
    else:  # no bfloat16 here: the backend says it runs float32, and it does (the same arithmetic)
        assert (f32.precision, bf16.precision) == ("f32", "f32")
        assert check_precision(f32, bf16) == float("inf")


def test_onnxruntime_refuses_bf16_with_a_clear_error(models):
    with pytest.raises(ModelError, match="bf16 is not offered with ONNX Runtime"):
        open_backend(models["srresnet"], backend="onnxruntime", precision="bf16")
    with pytest.raises(ModelError, match="unknown precision"):
        open_backend(models["srresnet"], backend="onnxruntime", precision="int4")


def test_onnxruntime_float16_conversion_runs_close_to_float32(models):
    f32 = open_backend(models["srresnet"], backend="onnxruntime", precision="f32")
    f16 = open_backend(models["srresnet"], backend="onnxruntime", precision="f16")
    assert f16.precision == "f16"
    assert check_precision(f32, f16) >= 40


@pytest.mark.parametrize("failure", ["blank", "nan"])
def test_ruined_tiles_are_rerun_in_float32(models, failure):
    img = photo(40)
    ref = Upscaler.from_file(models[failure], backend="openvino", precision="f32", tile=0).upscale(img)
    assert np.abs(ref.astype(int) - img).max() <= 1  # the model is an identity in float32
    low = reduced(models[failure], failure)
    raw = low.run(img[None].astype(np.float32))
    assert np.isnan(raw).any() if failure == "nan" else np.ptp(raw) == 0  # bfloat16 alone ruins it
    if OPENVINO_BF16:
        engine = Upscaler.from_file(models[failure], backend="openvino", precision="bf16", tile=16, overlap=4)
    else:
        f32 = Upscaler.from_file(models[failure], backend="openvino", precision="f32", tile=16, overlap=4)
        engine = Upscaler(low, f32.contract, tile=16, overlap=4,
                          reload=lambda p: open_backend(models[failure], backend="openvino", precision=p))
    assert engine.precision == "bf16"
    out = engine.upscale(img)
    np.testing.assert_array_equal(out, ref)
    assert engine.f32_reruns == 9  # every tile of the 3x3 plan


def test_blank_input_is_not_rerun(models):
    flat = np.full((24, 24, 3), 200, np.uint8)
    engine = Upscaler.from_file(models["blank"], backend="openvino", precision="bf16", tile=0)
    out = engine.upscale(flat)
    assert engine.f32_reruns == 0  # a flat input may give a flat output
    assert out.shape == flat.shape


def test_auto_check_falls_back_to_float32_when_the_precision_fails(models):
    ref = open_backend(models["blank"], backend="openvino", precision="f32")
    cand = reduced(models["blank"], "blank")
    assert check_precision(ref, cand) < CHECK_MIN_PSNR_DB
    chosen, note = _checked(ref, cand, "bf16")
    assert chosen is ref and "bf16 failed the check" in note
    ref = open_backend(models["nan"], backend="openvino", precision="f32")
    cand = reduced(models["nan"], "nan")
    assert np.isnan(check_precision(ref, cand))
    assert _checked(ref, cand, "bf16")[0] is ref


def test_auto_check_keeps_a_precision_that_passes(models):
    ref = open_backend(models["srresnet"], backend="onnxruntime", precision="f32")
    cand = open_backend(models["srresnet"], backend="onnxruntime", precision="f16")
    chosen, note = _checked(ref, cand, "f16")
    assert chosen is cand and note.startswith("auto: f16 (")


def test_auto_on_this_machine_picks_the_native_precision(models):
    for backend in ("openvino", "onnxruntime"):
        engine = Upscaler.from_file(models["srresnet"], backend=backend, precision="auto", tile=0)
        assert engine.precision == native_precision(engine.backend_name)
        assert engine.precision_note is not None and engine.precision_note.startswith("auto:")


def test_settings_precision_reaches_the_engine(models, monkeypatch):
    from core.catalog.catalog import Blend, ModelCatalog
    from core.catalog.load import build_upscaler

    monkeypatch.setenv("SRGAN_PRECISION", "f16")
    settings = Settings()
    blend = Blend(ModelCatalog(settings).describe_file(models["srresnet"]))
    engine = build_upscaler(settings, blend, backend="onnxruntime")
    assert engine.precision == "f16"
    monkeypatch.setenv("SRGAN_PRECISION", "int3")
    with pytest.raises(ValueError, match="precision"):
        Settings()
