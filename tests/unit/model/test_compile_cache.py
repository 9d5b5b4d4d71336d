"""The compile cache: what start-up keeps between processes (rewritten graph, ONNX Runtime's optimized model,
OpenVINO's compiled networks, precision auto's decision), reused only for the same network, runtime and CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.tiny_models import make_conv_model, make_srresnet_model
from core.settings import Settings
from core.upscalers import engine_options
from model.backends import open_backend, rewritten_model
from model.compile_cache import CompileCache, content_hash
from model.engine import Upscaler

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def srresnet(tmp_path_factory):
    return make_srresnet_model(tmp_path_factory.mktemp("m") / "sr.onnx")


def _image():
    return np.random.default_rng(0).integers(0, 256, (1, 12, 16, 3), dtype=np.uint8).astype(np.float32)


def test_the_rewritten_graph_is_read_back(srresnet, tmp_path):
    cache = CompileCache(tmp_path)
    first = rewritten_model(srresnet, cache)
    assert first is not None, "SRResNet's tail is rewritten"
    (saved,) = (tmp_path / "rewritten").iterdir()
    assert saved.read_bytes() == first
    assert rewritten_model(srresnet, cache) == first
    saved.write_bytes(b"")  # the marker of a network no rewrite applies to
    assert rewritten_model(srresnet, cache) is None


def test_onnxruntime_loads_its_saved_optimized_model_with_the_same_output(srresnet, tmp_path):
    cache = CompileCache(tmp_path)
    plain = open_backend(srresnet, backend="onnxruntime", threads=1)
    first = open_backend(srresnet, backend="onnxruntime", threads=1, cache=cache)
    saved = list((tmp_path / "onnxruntime").glob("*.onnx"))
    assert len(saved) == 1 and saved[0].stat().st_size > 0
    again = open_backend(srresnet, backend="onnxruntime", threads=1, cache=cache)
    assert list((tmp_path / "onnxruntime").glob("*.onnx")) == saved  # read back, not written again
    x = _image()
    expected = plain.run(x)
    assert np.abs(first.run(x) - expected).max() < 1e-3
    assert np.abs(again.run(x) - expected).max() < 1e-3


def test_openvino_keeps_compiled_networks_in_the_cache(srresnet, tmp_path):
    pytest.importorskip("openvino")
    cache = CompileCache(tmp_path)
    first = open_backend(srresnet, backend="openvino", threads=1, cache=cache)
    blobs = list((tmp_path / "openvino").iterdir())
    assert blobs, "OpenVINO wrote no compiled network"
    again = open_backend(srresnet, backend="openvino", threads=1, cache=cache)
    x = _image()
    assert np.abs(first.run(x) - again.run(x)).max() < 1e-3


def test_auto_precision_is_decided_once_per_network_and_machine(srresnet, tmp_path):
    asked: list[str] = []

    def counting(path):
        def reload(precision):
            asked.append(precision)
            return open_backend(path, backend="openvino", threads=1, precision=precision)
        return reload

    pytest.importorskip("openvino")
    first = Upscaler.from_file(srresnet, backend="openvino", precision="auto", cache_dir=tmp_path,
                               reload=counting(srresnet))
    compiles_first = list(asked)
    asked.clear()
    again = Upscaler.from_file(srresnet, backend="openvino", precision="auto", cache_dir=tmp_path,
                               reload=counting(srresnet))
    assert asked == [first.precision], "one compile at the precision decided before; no float32 check"
    assert (again.precision, again.precision_note) == (first.precision, first.precision_note)
    assert compiles_first[0] == "f32"
    entries = json.loads((tmp_path / "precision.json").read_text())
    (key,) = entries
    assert key.startswith(content_hash(srresnet)) and "openvino" in key
    # another network is decided anew
    other = make_conv_model(tmp_path / "other.onnx", seed=3)
    asked.clear()
    Upscaler.from_file(other, backend="openvino", precision="auto", cache_dir=tmp_path, reload=counting(other))
    assert asked[0] == "f32"
    assert len(json.loads((tmp_path / "precision.json").read_text())) == 2


def test_the_settings_turn_the_cache_on_and_off(tmp_path):
    on = Settings(_env_file=None, data_dir=tmp_path)
    assert engine_options(on)["cache_dir"] == tmp_path / "cache"
    assert engine_options(Settings(_env_file=None, data_dir=tmp_path, cache_dir=tmp_path / "c"))["cache_dir"] == \
        tmp_path / "c"
    assert engine_options(Settings(_env_file=None, data_dir=tmp_path, compile_cache=False))["cache_dir"] is None
