"""The exact graph rewrites of ``model.graph``: the pixel-shuffled tail convolution computed before the shuffle,
and transpose pairs around element-wise operations cancelled.

On the shipped generators (real tf2onnx exports) and a hand-built SRResNet, the
rewritten graph must give the same output as the file (float32, within 1e-3 on
0..255), with ONNX Runtime and with OpenVINO, and the backends must load the
rewritten graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.tiny_models import make_srresnet_model
from core.catalog.shipped import WEIGHTS_DIR
from model.backends import open_backend, openvino_available
from model.graph import cancel_transposes, flops_per_input_pixel, rewrite, subpixel_kernel, subpixel_tail

pytestmark = pytest.mark.unit

SHIPPED = [WEIGHTS_DIR / "srresnet_x4.onnx", WEIGHTS_DIR / "srgan_x4.onnx"]
EXACT = 1e-3
"""Largest difference allowed between the file and its rewrite, on the 0..255 scale (float32)."""


def _ort(model: str | bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def _lr(shape: tuple[int, ...] = (2, 23, 31, 3)) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, shape).astype(np.float32)


def _convs(proto: onnx.ModelProto) -> list[tuple[int, ...]]:
    inits = {i.name: i for i in proto.graph.initializer}
    return [tuple(inits[n.input[1]].dims) for n in proto.graph.node if n.op_type == "Conv"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_model_rewritten_is_the_same_function(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    proto = onnx.load(str(path))
    before = _convs(proto)
    assert subpixel_tail(proto) == 1
    after = _convs(proto)
    # the 9x9 tail (64 -> 3) became a 5x5 convolution 256 -> 12 before the last shuffle; nothing else changed
    assert (3, 64, 9, 9) in before and (3, 64, 9, 9) not in after
    assert (12, 256, 5, 5) in after
    assert sorted(c for c in before if c != (3, 64, 9, 9)) == sorted(c for c in after if c != (12, 256, 5, 5))
    x = _lr()
    want = _ort(str(path)).run(None, {"lr": x})[0]
    got = _ort(proto.SerializeToString()).run(None, {"lr": x})[0]
    assert got.shape == want.shape == (2, 92, 124, 3)
    assert np.abs(got - want).max() < EXACT
    assert np.ptp(want) > 100  # a real image came out, not a constant


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_model_loses_its_transpose_pairs_and_stays_the_same_function(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    proto = onnx.load(str(path))
    transposes = sum(n.op_type == "Transpose" for n in proto.graph.node)
    # the subpixel tail, and the bicubic skip's division moved back to NCHW (three transposes gone)
    assert rewrite(proto) == 2
    assert sum(n.op_type == "Transpose" for n in proto.graph.node) == transposes - 3
    x = _lr()
    want = _ort(str(path)).run(None, {"lr": x})[0]
    got = _ort(proto.SerializeToString()).run(None, {"lr": x})[0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() < EXACT
    assert rewrite(proto) == 0  # nothing left to do


def _transposed_division(*, const: np.ndarray | None = None, back: tuple[int, ...] = (0, 3, 1, 2),
                         extra_reader: bool = False) -> onnx.ModelProto:
    """x, y (NCHW) -> NHWC -> x / y (* const) -> ``back`` -> z."""
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["y"], ["yt"], perm=[0, 2, 3, 1]),
             helper.make_node("Div", ["xt", "yt"], ["d"])]
    inits = []
    if const is not None:
        nodes.append(helper.make_node("Mul", ["d", "c"], ["m"]))
        inits.append(numpy_helper.from_array(const.astype(np.float32), "c"))
    nodes.append(helper.make_node("Transpose", [nodes[-1].output[0]], ["z"], perm=list(back)))
    outputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["a", "b", "c", "d"])]
    if extra_reader:
        outputs.append(helper.make_tensor_value_info("d", TensorProto.FLOAT, [1, 5, 7, 3]))
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 5, 7]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_cancel_transposes_moves_element_wise_chains_back_and_is_exact() -> None:
    rng = np.random.default_rng(3)
    feed = {"x": rng.standard_normal((1, 3, 5, 7)).astype(np.float32),
            "y": rng.uniform(0.5, 2.0, (1, 3, 5, 7)).astype(np.float32)}
    proto = _transposed_division(const=np.array(2.5))
    want = _ort(proto.SerializeToString()).run(None, feed)[0]
    assert cancel_transposes(proto) == 2  # the Div and the Mul
    assert [n.op_type for n in proto.graph.node] == ["Div", "Mul"]
    got = _ort(proto.SerializeToString()).run(None, feed)[0]
    assert got.shape == want.shape == (1, 3, 5, 7)
    assert np.array_equal(got, want)


def test_cancel_transposes_leaves_what_it_cannot_move() -> None:
    for proto in (_transposed_division(const=np.arange(3.0).reshape(1, 1, 1, 3)),  # a per-channel constant
                  _transposed_division(back=(0, 1, 3, 2)),  # does not undo the first transpose
                  _transposed_division(extra_reader=True)):  # the NHWC quotient is read elsewhere
        before = proto.SerializeToString()
        assert cancel_transposes(proto) == 0
        assert proto.SerializeToString() == before


def test_hand_built_srresnet_with_prelu_nodes_is_rewritten_exactly(tmp_path: Path) -> None:
    path = make_srresnet_model(tmp_path / "sr.onnx", scale=4, blocks=2, filters=16)
    proto = onnx.load(str(path))
    assert subpixel_tail(proto) == 1
    x = _lr((1, 19, 26, 3))
    want = _ort(str(path)).run(None, {"lr": x})[0]
    got = _ort(proto.SerializeToString()).run(None, {"lr": x})[0]
    assert np.abs(got - want).max() < EXACT


@pytest.mark.skipif(not openvino_available(), reason="openvino not installed")
def test_openvino_runs_the_rewritten_shipped_model_like_the_file() -> None:
    path = SHIPPED[0]
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    x = _lr((1, 24, 20, 3))
    plain = open_backend(path, backend="openvino", precision="f32", rewrite=False).run(x)
    backend = open_backend(path, backend="openvino", precision="f32")
    rewritten = backend.run(x)
    assert getattr(backend, "_to_nhwc", False), "the last transpose to NHWC is done by the copy out of the request"
    assert rewritten.shape == plain.shape == (1, 96, 80, 3) and rewritten.flags.c_contiguous
    assert np.abs(rewritten - plain).max() < EXACT


@pytest.mark.parametrize("block,k", [(2, 9), (2, 3), (3, 5), (4, 9)])
def test_subpixel_kernel_matches_a_direct_convolution(block: int, k: int) -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((2, 3, k, k)).astype(np.float32)
    bias = rng.standard_normal(2).astype(np.float32)
    pre = rng.standard_normal((1, 3 * block * block, 7, 6)).astype(np.float32)

    def run(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> np.ndarray:
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        return _ort(proto.SerializeToString()).run(None, {"x": pre})[0]

    want = run([helper.make_node("DepthToSpace", ["x"], ["s"], blocksize=block, mode="DCR"),
                helper.make_node("Conv", ["s", "w", "b"], ["y"], pads=[k // 2] * 4)],
               [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    new_w, new_b, low, high = subpixel_kernel(weight, bias, block)
    got = run([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[low, low, high, high]),
               helper.make_node("DepthToSpace", ["c"], ["y"], blocksize=block, mode="DCR")],
              [numpy_helper.from_array(new_w, "w"), numpy_helper.from_array(new_b, "b")])
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4


def _shuffle_conv_model(*, extra_reader: bool = False, bias_add: float = 0.0) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((3, 4, 9, 9)).astype(np.float32), "w"),
             numpy_helper.from_array(np.full((1, 4, 1, 1), bias_add, np.float32), "shift")]
    nodes = [helper.make_node("DepthToSpace", ["x"], ["s"], blocksize=2, mode="DCR"),
             helper.make_node("Add", ["s", "shift"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w"], ["y"], pads=[4] * 4)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "H", "W"])]
    if extra_reader:
        outputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, ["n", 4, "H", "W"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16, "h", "w"])],
                              outputs,
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_rewrite_keeps_graphs_it_cannot_rewrite_exactly() -> None:
    plain = _shuffle_conv_model()
    assert subpixel_tail(plain) == 1  # the shape it is made for (no bias, zero shift)
    # the shuffled tensor is also read elsewhere (here: a graph output)
    shared = _shuffle_conv_model(extra_reader=True)
    before = shared.SerializeToString()
    assert subpixel_tail(shared) == 0
    assert shared.SerializeToString() == before
    # a non-zero shift makes the zero padding of the convolution differ before and after the shuffle
    assert subpixel_tail(_shuffle_conv_model(bias_add=0.5)) == 0


def test_rewrite_skips_convolutions_it_would_make_slower() -> None:
    # after the first shuffle of the shipped model a 3x3 conv 64 -> 256 follows: 4x the multiply-adds, left alone
    proto = onnx.load(str(SHIPPED[0])) if SHIPPED[0].is_file() else None
    if proto is None:
        pytest.skip("shipped model not in this checkout")
    subpixel_tail(proto)
    assert (256, 64, 3, 3) in _convs(proto)


def test_flops_follow_each_tensors_resolution_through_the_graph():
    """A convolution after an upsampling counts its factor squared wherever the upsampled branch sits in the node
    order (a resize first, a shuffle later), a strided one at its output resolution; the shipped SRResNet's graph
    gives the formula of bench/engine.py plus its bicubic skip (two fixed 5x5 convolutions 3 -> 48)."""
    rng = np.random.default_rng(0)

    def init(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Resize", ["x", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Conv", ["up", "w1"], ["a"], pads=[1, 1, 1, 1]),  # 3 -> 3 at 2x: 2 * 81 * 4
        helper.make_node("Conv", ["x", "w2"], ["b"], pads=[1, 1, 1, 1]),  # 3 -> 12 at 1x: 2 * 324
        helper.make_node("DepthToSpace", ["b"], ["c"], blocksize=2),
        helper.make_node("Add", ["a", "c"], ["d"]),
        helper.make_node("Conv", ["d", "w3"], ["y"], strides=[2, 2]),  # 3 -> 3, 1x1, back at 1x: 2 * 9
    ]
    graph = helper.make_graph(
        nodes, "branches", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "h", "w"])],
        initializer=[numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
                     init("w1", (3, 3, 3, 3)), init("w2", (12, 3, 3, 3)), init("w3", (3, 3, 1, 1))])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto)
    assert flops_per_input_pixel(proto) == 2 * 81 * 4 + 2 * 324 + 2 * 9

    srresnet = 2 * (81 * 3 * 64 + 16 * 2 * 9 * 64 * 64 + 9 * 64 * 64 + 9 * 64 * 256 + 4 * 9 * 64 * 256
                    + 16 * 81 * 64 * 3)
    assert flops_per_input_pixel(onnx.load(str(SHIPPED[0]))) == srresnet + 2 * 2 * 25 * 3 * 48
