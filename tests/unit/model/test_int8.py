"""int8: which convolutions stay in float, the calibration images, the compile cache's int8 graphs, ``auto``'s
int8 probe (a network int8 ruins is never run in int8), and the refusal on a CPU without int8 units.

Real quantization and real int8 arithmetic (ONNX Runtime's quantizer, OpenVINO); only the CPU's feature
flags are simulated where a test says so. The shipped model on a real photo: tests/integration/model/
test_int8_shipped.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import model.int8 as int8
from bench.tiny_models import make_int8_fragile_model, make_srresnet_model
from model import backends, engine
from model.backends import check_int8_cpu, open_backend
from model.compile_cache import CompileCache, content_hash
from model.engine import INT8_MAX_COST_DB, Upscaler, int8_cost
from model.errors import ModelError
from model.int8 import calibration_images, int8_native, int8_units, protected_convs

pytestmark = pytest.mark.unit

AMX = {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8", "avx512_vnni"}
NO_INT8 = {"sse4_2", "avx"}
"""A CPU before AVX2 (Sandy or Ivy Bridge): no int8 multiply-add either runtime runs faster than float32."""
AVX2 = {"sse4_2", "avx", "avx2", "fma"}
"""An AVX2-only CPU (no VNNI, no AVX512): int8 pays with OpenVINO (1.32x f32 measured), not with ONNX Runtime."""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("int8")
    return {"fragile": make_int8_fragile_model(d / "fragile.onnx"),
            "srresnet": make_srresnet_model(d / "srresnet.onnx", scale=2, blocks=2, filters=16),
            "other": make_srresnet_model(d / "other.onnx", scale=2, blocks=2, filters=16, seed=1)}


@pytest.fixture
def int8_cpu(monkeypatch):
    """The CPU's feature flags as an AMX-INT8 CPU's (only the detection: the arithmetic is this machine's)."""
    def flags():
        return set(AMX)

    monkeypatch.setattr(backends, "cpu_flags", flags)
    monkeypatch.setattr(engine, "cpu_flags", flags)


def test_head_tail_and_skip_convolutions_are_the_ones_kept_in_float(models):
    proto = onnx.load(str(models["srresnet"]))
    convs = [n.name or n.output[0] for n in proto.graph.node if n.op_type == "Conv"]
    kept = protected_convs(proto)
    assert len(kept) == 2 and len(convs) == 8, (kept, convs)
    assert kept == [convs[0], convs[-1]], "the 9x9 head and the 9x9 tail"
    assert protected_convs(onnx.load(str(models["fragile"]))) == ["head", "tail"]


def test_int8_units_follow_the_cpu_flags_and_the_runtime():
    for backend in ("openvino", "onnxruntime"):
        assert int8_native({"amx_int8"}, backend) and int8_native({"avx512_vnni"}, backend)
        assert int8_native({"avx_vnni"}, backend) and not int8_native(NO_INT8, backend)
        check_int8_cpu(AMX, backend)
        with pytest.raises(ModelError, match=rf"int8 needs a CPU with int8 units .*{backend} runs int8 slower than "
                                             r"float32; use --precision auto"):
            check_int8_cpu(NO_INT8, backend)
    assert int8_units(AVX2, "openvino") == "avx2" and int8_units(AMX, "openvino") == "amx_int8"
    assert int8_units(AVX2, "onnxruntime") is None
    check_int8_cpu(AVX2, "openvino")
    with pytest.raises(ModelError, match="or the openvino backend, which runs int8 faster here"):
        check_int8_cpu(AVX2, "onnxruntime")


def test_calibration_images_are_deterministic_and_photo_like():
    a, b = calibration_images(4, 48), calibration_images(4, 48)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], calibration_images(1, 48, seed=1)[0]), "another seed, other images"
    stack = np.stack(a).astype(np.float32)
    assert stack.shape == (4, 48, 48, 3) and stack.dtype == np.float32
    assert 60 < stack.mean() < 190 and stack.std() > 30, "neither flat nor clipped"
    assert (stack.max(-1) - stack.min(-1)).mean() < 80, "moderate saturation, as in photos"


@pytest.mark.usefixtures("int8_cpu")
def test_an_int8_network_runs_int8_and_stays_close_to_float32(models, tmp_path):
    cache = CompileCache(tmp_path)
    f32 = open_backend(models["srresnet"], backend="openvino", precision="f32")
    q = open_backend(models["srresnet"], backend="openvino", precision="int8", cache=cache)
    assert q.precision == "int8"
    graph = onnx.load_from_string(int8.int8_model(models["srresnet"], backends.rewritten_model(models["srresnet"]),
                                                  cache))
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("QuantizeLinear") >= 7 and "DequantizeLinear" in ops, "the middle convolutions quantized"
    mean, worst = int8_cost(f32, q)
    assert worst < 0.15 and abs(mean) < INT8_MAX_COST_DB
    ort = open_backend(models["srresnet"], backend="onnxruntime", precision="int8", cache=cache)
    assert ort.precision == "int8" and int8_cost(f32, ort)[1] < 0.15, "ONNX Runtime runs the same int8 graph"


def test_the_tail_is_quantized_with_a_uint8_input_over_the_extremes_and_a_float_output(models):
    path = models["srresnet"]
    source = backends.rewritten_model(path) or path.read_bytes()
    proto = onnx.load_from_string(source)
    head, tail = protected_convs(proto)
    contract = int8.model_contract(proto)
    batches = int8.calibration_batches(contract, calibration_images(6, 32))
    graph = onnx.load_from_string(int8.quantize(source, batches, contract.input_name)).graph
    nodes = {n.name: n for n in graph.node}
    producer = {o: n for n in graph.node for o in n.output}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}

    def quantizer(conv: str, idx: int) -> onnx.NodeProto | None:
        dq = producer.get(nodes[conv].input[idx])
        return producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None

    assert quantizer(head, 0) is None, "the head reads the float image"
    q = quantizer(tail, 0)
    assert q is not None and q.op_type == "QuantizeLinear", "the tail reads a quantized input"
    zero_point = inits[q.input[2]]
    assert zero_point.dtype == np.uint8 and zero_point != 0, "uint8 with a zero point (PReLU output: mostly positive)"
    # its range: the extremes of the tail's input over the calibration batches (0 included)
    tail_input = next(n.input[0] for n in proto.graph.node if (n.name or n.output[0]) == tail)
    (lo, hi), = int8._extremes(source, [tail_input], batches, contract.input_name)
    assert float(inits[q.input[1]]) == pytest.approx((hi - lo) / 255, rel=1e-5)
    middle = next(n.name for n in graph.node if n.op_type == "Conv" and n.name not in (head, tail))
    middle_q = quantizer(middle, 0)
    assert middle_q is not None and inits[middle_q.input[2]].dtype == np.int8, "the other activations: symmetric int8"
    readers = [n.op_type for n in graph.node if nodes[tail].output[0] in n.input]
    assert "QuantizeLinear" not in readers, "the tail's output (the picture) stays float"
    # scheme 1 keeps the tail in float
    v1 = onnx.load_from_string(int8.quantize(source, batches, contract.input_name, protect=("head", "tail"))).graph
    assert tail in {n.name for n in v1.node} and not any(
        n.op_type == "DequantizeLinear" and n.output[0] in next(c for c in v1.node if c.name == tail).input
        for n in v1.node)


@pytest.mark.usefixtures("int8_cpu")
def test_the_int8_graph_is_kept_by_network_and_scheme(models, tmp_path, monkeypatch):
    cache = CompileCache(tmp_path)
    open_backend(models["srresnet"], backend="openvino", precision="int8", cache=cache)
    (saved,) = (tmp_path / "int8").iterdir()

    def no_quantize(*args, **kwargs):
        raise AssertionError("quantized again instead of reading the cache")

    monkeypatch.setattr(int8, "quantize", no_quantize)
    again = open_backend(models["srresnet"], backend="openvino", precision="int8", cache=cache)
    assert again.precision == "int8" and list((tmp_path / "int8").iterdir()) == [saved]
    with pytest.raises(ModelError, match="quantized again"):  # another network: its own entry
        open_backend(models["other"], backend="openvino", precision="int8", cache=cache)
    rewritten = backends.rewritten_model(models["srresnet"])
    assert rewritten is not None
    key = cache.int8_file(content_hash(rewritten), "onnxruntime-1")
    monkeypatch.setattr(int8, "SCHEME_VERSION", int8.SCHEME_VERSION + 1)
    assert cache.int8_file(content_hash(rewritten), "onnxruntime-1") != key, "a new scheme is quantized anew"
    assert cache.int8_file(content_hash(rewritten), "onnxruntime-2") != key, "and so is a new quantizer"


@pytest.mark.usefixtures("int8_cpu")
def test_auto_picks_int8_where_it_passes_and_remembers_it(models, tmp_path):
    up = Upscaler.from_file(models["srresnet"], backend="openvino", precision="auto", cache_dir=tmp_path)
    assert up.precision == "int8", up.precision_note
    assert up.precision_note is not None and "auto: int8 on amx_int8" in up.precision_note
    decisions = (tmp_path / "precision.json").read_text()
    assert '"int8"' in decisions and f"int8-{int8.SCHEME_VERSION}" in decisions, "keyed with the scheme's version"
    again = Upscaler.from_file(models["srresnet"], backend="openvino", precision="auto", cache_dir=tmp_path)
    assert again.precision == "int8" and again.precision_note == up.precision_note


@pytest.mark.usefixtures("int8_cpu")
def test_auto_never_runs_int8_where_its_probe_fails(models, tmp_path):
    f32 = open_backend(models["fragile"], backend="openvino", precision="f32")
    q = open_backend(models["fragile"], backend="openvino", precision="int8", cache=CompileCache(tmp_path / "a"))
    mean, worst = int8_cost(f32, q)
    assert mean > 10 * INT8_MAX_COST_DB, "int8 really ruins this network"
    up = Upscaler.from_file(models["fragile"], backend="openvino", precision="auto", cache_dir=tmp_path / "b")
    assert up.precision in ("bf16", "f32")
    assert up.precision_note is not None and "int8 failed its probe" in up.precision_note
    img = calibration_images(1, 32, seed=5)[0]
    assert np.abs(up.upscale(img, tile=0).astype(int) - img).max() <= 1, "the image itself, not posterized"
    again = Upscaler.from_file(models["fragile"], backend="openvino", precision="auto", cache_dir=tmp_path / "b")
    assert again.precision == up.precision, "the failed probe is remembered, not retried into int8"


def test_auto_does_not_consider_int8_without_int8_units_or_without_a_cache(models, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "cpu_flags", lambda: set(NO_INT8))
    up = Upscaler.from_file(models["srresnet"], backend="openvino", precision="auto", cache_dir=tmp_path)
    assert up.precision != "int8" and "int8" not in (up.precision_note or "")
    assert not (tmp_path / "int8").exists(), "nothing quantized"
    monkeypatch.setattr(engine, "cpu_flags", lambda: set(AMX))
    up = Upscaler.from_file(models["srresnet"], backend="openvino", precision="auto")
    assert up.precision != "int8", "no compile cache: quantizing at every start would cost more than it saves"


def test_int8_asked_on_a_cpu_without_int8_units_is_refused(models, monkeypatch):
    monkeypatch.setattr(backends, "cpu_flags", lambda: set(NO_INT8))
    for backend in ("openvino", "onnxruntime"):
        with pytest.raises(ModelError, match="int8 needs a CPU with int8 units"):
            open_backend(models["srresnet"], backend=backend, precision="int8")
    monkeypatch.setattr(backends, "cpu_flags", lambda: set(AVX2))  # ONNX Runtime's int8 is slower there
    with pytest.raises(ModelError, match="onnxruntime runs int8 slower than float32"):
        open_backend(models["srresnet"], backend="onnxruntime", precision="int8")


@pytest.mark.usefixtures("int8_cpu")
def test_auto_tries_int8_only_for_a_model_whose_card_records_an_int8_measurement(models, tmp_path):
    """Through the catalog (what jobs and srgan upscale load): a model published without an int8 block on its card
    (an import, a new run) is not quantized under auto, so its first start costs no quantization; with one it
    is, and passes here."""
    from core.catalog.catalog import ModelCatalog
    from core.catalog.load import build_upscaler
    from core.settings import Settings
    from tests.utils.models import publish_checked

    settings = Settings(_env_file=None, data_dir=tmp_path / "data", backend="openvino", precision="auto",
                        cache_dir=tmp_path / "cache")
    registry = ModelCatalog(settings).registry
    publish_checked(registry, models["srresnet"], name="plain")
    publish_checked(registry, models["other"], name="measured",
                    card={"int8": {"scheme": int8.SCHEME_SHORT, "set5_cost_db": 0.03, "set14_cost_db": 0.02}})
    catalog = ModelCatalog(settings)
    plain = build_upscaler(settings, catalog.blend("plain", None))
    assert plain.precision != "int8" and "int8" not in (plain.precision_note or "")
    assert not (tmp_path / "cache" / "int8").exists(), "nothing quantized"
    measured = build_upscaler(settings, catalog.blend("measured", None))
    assert measured.precision == "int8", measured.precision_note


@pytest.mark.usefixtures("int8_cpu")
def test_auto_skips_quantizing_a_model_whose_card_says_its_probe_failed(models, tmp_path):
    """srgan_x4's card records int8 with ``auto_keeps: false`` (probe 0.138 dB): a cold start under auto would
    quantize it for 8-14 s only to reject it. ``--precision int8`` still runs it."""
    from core.catalog.catalog import ModelCatalog
    from core.catalog.load import auto_tries_int8, build_upscaler
    from core.settings import Settings
    from tests.utils.models import publish_checked

    assert auto_tries_int8({"set5_cost_db": 0.03}) and auto_tries_int8({"auto_keeps": True})
    assert not auto_tries_int8({"auto_keeps": False}) and not auto_tries_int8(None)
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", backend="openvino", precision="auto",
                        cache_dir=tmp_path / "cache")
    publish_checked(ModelCatalog(settings).registry, models["srresnet"], name="rejected",
                    card={"int8": {"scheme": int8.SCHEME_SHORT, "set5_cost_db": 0.03, "auto_keeps": False}})
    catalog = ModelCatalog(settings)
    auto = build_upscaler(settings, catalog.blend("rejected", None))
    assert auto.precision != "int8" and not (tmp_path / "cache" / "int8").exists(), "nothing quantized"
    forced = build_upscaler(settings, catalog.blend("rejected", None), precision="int8")
    assert forced.precision == "int8"


def test_the_int8_bench_measures_a_model_at_its_own_scale(tmp_path):
    """``srgan bench int8 --models realworld_x2``: Set5/Set14 were downscaled by 4 whatever the model, and an x2
    model's output did not match the ground truth's size (a ValueError instead of a table)."""
    from bench.int8 import per_image
    from bench.tiny_models import make_nearest_model
    from model.engine import Upscaler

    for scale in (2, 4):
        up = Upscaler.from_file(make_nearest_model(tmp_path / f"n{scale}.onnx", scale), tile=0)
        values = per_image(up, scale)
        assert len(values) == 19 and all(np.isfinite(v) and v > 15 for v in values.values())
