"""Tiny ONNX generators built in code, for tests and benchmarks that need a real model file fast.

The one home of these builders: ``tests/`` and ``bench/`` both import them from here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model.contract import Layout, ModelContract


def _save(graph: onnx.GraphProto, path: Path, contract: ModelContract | None) -> Path:
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    if contract is not None:
        contract.store_in(proto)
    onnx.checker.check_model(proto)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def make_nearest_model(
    path: Path, scale: int = 4, *, layout: Layout = "NHWC", with_contract: bool = True, name: str = "nearest"
) -> Path:
    """An exact "generator": nearest-neighbour upscaling by ``scale`` (0..255 in and out).

    Tiled and untiled outputs of this model are identical, which makes tiling
    bugs show up as exact mismatches.
    """
    dims: list[str | int] = ["n", "h", "w", 3] if layout == "NHWC" else ["n", 3, "h", "w"]
    out_dims: list[str | int] = ["n", "H", "W", 3] if layout == "NHWC" else ["n", 3, "H", "W"]
    scales = [1.0, float(scale), float(scale), 1.0] if layout == "NHWC" else [1.0, 1.0, float(scale), float(scale)]
    nodes = [helper.make_node("Resize", ["lr", "", "scales"], ["hr"], mode="nearest")]
    graph = helper.make_graph(
        nodes,
        "nearest",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("hr", TensorProto.FLOAT, out_dims)],
        initializer=[numpy_helper.from_array(np.array(scales, np.float32), "scales")],
    )
    contract = ModelContract(scale=scale, layout=layout, name=name, version="1") if with_contract else None
    return _save(graph, path, contract)


def make_conv_model(path: Path, scale: int = 4, *, seed: int = 0, name: str = "tinyconv") -> Path:
    """A small random conv net with a receptive field (3x3 conv, depth-to-space, 3x3 conv), NHWC 0..255.

    Unlike the nearest model, tiles see context, so seams are possible; the
    output is clipped to 0..255 like a real generator's.
    """
    rng = np.random.default_rng(seed)
    feats = 3 * scale * scale
    w1 = (rng.standard_normal((feats, 3, 3, 3)) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((3, 3, 3, 3)) * 0.2).astype(np.float32)
    w2[:, :, 1, 1] += np.eye(3, dtype=np.float32)
    nodes = [
        helper.make_node("Transpose", ["lr"], ["x"], perm=[0, 3, 1, 2]),
        helper.make_node("Div", ["x", "k255"], ["xn"]),
        helper.make_node("Conv", ["xn", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("DepthToSpace", ["c1"], ["d"], blocksize=scale, mode="DCR"),
        helper.make_node("Conv", ["d", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c2"], ["s"]),
        helper.make_node("Mul", ["s", "k255"], ["y"]),
        helper.make_node("Transpose", ["y"], ["hr"], perm=[0, 2, 3, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["n", "h", "w", 3])],
        [helper.make_tensor_value_info("hr", TensorProto.FLOAT, ["n", "H", "W", 3])],
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(np.array(255.0, np.float32), "k255"),
        ],
    )
    return _save(graph, path, ModelContract(scale=scale, name=name, version="1"))


def make_srresnet_model(
    path: Path, scale: int = 4, *, blocks: int = 16, filters: int = 64, seed: int = 0, name: str = "srresnet-random"
) -> Path:
    """A random-weight generator of the SRResNet shape, as a folded-BN export looks.

    NHWC 0..255 in and out (transposed to NCHW inside, like tf2onnx does): 9x9
    head conv + PReLU, ``blocks`` residual blocks (conv-PReLU-conv, BN folded
    into the convs), conv + global skip, one conv-depth-to-space-PReLU block
    per factor of two, 9x9 tail conv, tanh, mapped back to 0..255.
    """
    if scale not in (2, 4, 8):
        raise ValueError("scale must be 2, 4 or 8")
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray | float) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def conv(x: str, cin: int, cout: int, k: int, tag: str, gain: float = 1.0) -> str:
        w = rng.standard_normal((cout, cin, k, k)) * gain * np.sqrt(2.0 / (cin * k * k))
        b = rng.standard_normal(cout) * 0.01
        nodes.append(helper.make_node("Conv", [x, const(f"{tag}.w", w), const(f"{tag}.b", b)], [tag],
                                      pads=[k // 2] * 4))
        return tag

    def prelu(x: str, c: int, tag: str) -> str:
        nodes.append(helper.make_node("PRelu", [x, const(f"{tag}.a", np.full((c, 1, 1), 0.25))], [tag]))
        return tag

    def add(a: str, b: str, tag: str) -> str:
        nodes.append(helper.make_node("Add", [a, b], [tag]))
        return tag

    nodes.append(helper.make_node("Transpose", ["lr"], ["x_nchw"], perm=[0, 3, 1, 2]))
    nodes.append(helper.make_node("Div", ["x_nchw", const("k255", 255.0)], ["x01"]))
    head = prelu(conv("x01", 3, filters, 9, "head"), filters, "head_act")
    x = head
    for i in range(blocks):
        y = prelu(conv(x, filters, filters, 3, f"b{i}.c1"), filters, f"b{i}.act")
        y = conv(y, filters, filters, 3, f"b{i}.c2", gain=0.1)
        x = add(x, y, f"b{i}.out")
    x = add(head, conv(x, filters, filters, 3, "trunk", gain=0.1), "trunk_out")
    for i in range(scale.bit_length() - 1):
        x = conv(x, filters, filters * 4, 3, f"up{i}")
        nodes.append(helper.make_node("DepthToSpace", [x], [f"up{i}.d2s"], blocksize=2, mode="DCR"))
        x = prelu(f"up{i}.d2s", filters, f"up{i}.act")
    x = conv(x, filters, 3, 9, "tail", gain=0.5)
    nodes.append(helper.make_node("Tanh", [x], ["t"]))
    nodes.append(helper.make_node("Add", ["t", const("one", 1.0)], ["t1"]))
    nodes.append(helper.make_node("Mul", ["t1", const("k127", 127.5)], ["y"]))
    nodes.append(helper.make_node("Transpose", ["y"], ["hr"], perm=[0, 2, 3, 1]))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["n", "h", "w", 3])],
        [helper.make_tensor_value_info("hr", TensorProto.FLOAT, ["n", "H", "W", 3])],
        initializer=inits,
    )
    return _save(graph, path, ModelContract(scale=scale, name=name, version="1"))


def with_declared_scale(src: Path, dst: Path, scale: int) -> Path:
    """A copy of ``src`` whose contract claims ``scale`` (what the graph really does is unchanged)."""
    proto = onnx.load(str(src))
    old = ModelContract.of_proto(proto)
    assert old is not None, "the source has no contract"
    replace(old, scale=scale).store_in(proto)
    onnx.save(proto, str(dst))
    return Path(dst)



def make_low_precision_fragile_model(path: Path, failure: str, *, name: str = "fragile") -> Path:
    """An x1 identity "generator" that float32 computes exactly and bfloat16 ruins.

    The image is shifted by a huge constant before a 1x1 identity convolution
    (whose input OpenVINO rounds to bfloat16's 8-bit mantissa) and shifted back:

    - ``blank``: ``conv(x + 65536) - 65536``: bfloat16 rounds every ``x < 256`` away (a black output);
    - ``nan``: ``x + (conv(a) - a)`` with ``a = x/1000 + 3.4e38``: bfloat16 rounds ``a`` up to inf
      in the convolution, so the output is NaN (float32 gives ``x``).
    """
    big = {"blank": 65536.0, "nan": 3.4e38}[failure]
    inits = [numpy_helper.from_array(np.array(big, np.float32), "big"),
             numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "w"),
             numpy_helper.from_array(np.array(1e-3, np.float32), "k")]
    conv = [helper.make_node("Transpose", ["a"], ["t"], perm=[0, 3, 1, 2]), helper.make_node("Conv", ["t", "w"], ["c"]),
            helper.make_node("Transpose", ["c"], ["d"], perm=[0, 2, 3, 1])]
    if failure == "blank":
        nodes = [helper.make_node("Add", ["lr", "big"], ["a"]), *conv, helper.make_node("Sub", ["d", "big"], ["hr"])]
    else:
        nodes = [helper.make_node("Mul", ["lr", "k"], ["s"]), helper.make_node("Add", ["s", "big"], ["a"]), *conv,
                 helper.make_node("Sub", ["d", "a"], ["z"]), helper.make_node("Add", ["lr", "z"], ["hr"])]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["n", "h", "w", 3])],
        [helper.make_tensor_value_info("hr", TensorProto.FLOAT, ["n", "h", "w", 3])],
        initializer=inits,
    )
    return _save(graph, path, ModelContract(scale=1, layout="NHWC", name=name, version="1"))


def make_int8_fragile_model(path: Path, *, offset: float = 30000.0, name: str = "int8-fragile") -> Path:
    """An x1 identity "generator" that float32 and bfloat16 compute closely and int8 ruins.

    Three 1x1 convolutions: the head copies the image and adds a fourth channel that is a constant
    ``offset``; the middle one (the only one ``model.int8`` quantizes: the head and the tail stay in float)
    passes all four on; the tail drops the constant. The middle convolution's input then spans 0..``offset``,
    so its one per-tensor int8 scale has steps of ``offset / 255`` levels: the image comes out posterized
    (float32 gives it back exactly; bfloat16 within about half a level).
    """
    head_w = np.zeros((4, 3, 1, 1), np.float32)
    head_w[:3, :, 0, 0] = np.eye(3)
    mid_w = np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1)
    tail_w = np.zeros((3, 4, 1, 1), np.float32)
    tail_w[:, :3, 0, 0] = np.eye(3)
    inits = [numpy_helper.from_array(head_w, "head.w"),
             numpy_helper.from_array(np.array([0, 0, 0, offset], np.float32), "head.b"),
             numpy_helper.from_array(mid_w, "mid.w"), numpy_helper.from_array(np.zeros(4, np.float32), "mid.b"),
             numpy_helper.from_array(tail_w, "tail.w")]
    nodes = [helper.make_node("Transpose", ["lr"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "head.w", "head.b"], ["head"], name="head"),
             helper.make_node("Conv", ["head", "mid.w", "mid.b"], ["mid"], name="mid"),
             helper.make_node("Conv", ["mid", "tail.w"], ["tail"], name="tail"),
             helper.make_node("Transpose", ["tail"], ["hr"], perm=[0, 2, 3, 1])]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["n", "h", "w", 3])],
        [helper.make_tensor_value_info("hr", TensorProto.FLOAT, ["n", "h", "w", 3])],
        initializer=inits,
    )
    return _save(graph, path, ModelContract(scale=1, layout="NHWC", name=name, version="1"))


def make_foreign_style_model(
    path: Path, scale: int = 4, *, unit_range: bool = True, layout: str = "NCHW", bgr: bool = False,
    with_contract: bool = False, name: str = "foreign",
) -> Path:
    """A nearest-neighbour "generator" as other projects export them (Real-ESRGAN style: NCHW, 0..1, clamped).

    ``unit_range``: takes and gives 0..1 and clips its output to 0..1 (fed 0..255 as if it were an srgan
    model, it gives a black image). ``bgr``: swaps the red and blue channels. ``with_contract`` stores
    an srgan contract that says all this, so that the engine adapts.
    """
    channel_axis = 1 if layout == "NCHW" else 3
    dims: list[str | int | None] = ["n", 3, "h", "w"] if layout == "NCHW" else ["n", "h", "w", 3]
    out_dims: list[str | int | None] = ["n", 3, "H", "W"] if layout == "NCHW" else ["n", "H", "W", 3]
    scales = [1.0, 1.0, float(scale), float(scale)] if layout == "NCHW" else [1.0, float(scale), float(scale), 1.0]
    high = 1.0 if unit_range else 255.0
    nodes = [helper.make_node("Resize", ["lr", "", "scales"], ["up"], mode="nearest")]
    source = "up"
    if bgr:
        nodes.append(helper.make_node("Gather", ["up", "bgr"], ["swapped"], axis=channel_axis))
        source = "swapped"
    nodes.append(helper.make_node("Clip", [source, "low", "high"], ["hr"]))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("hr", TensorProto.FLOAT, out_dims)],
        initializer=[numpy_helper.from_array(np.array(scales, np.float32), "scales"),
                     numpy_helper.from_array(np.array([2, 1, 0], np.int64), "bgr"),
                     numpy_helper.from_array(np.array(0.0, np.float32), "low"),
                     numpy_helper.from_array(np.array(high, np.float32), "high")],
    )
    contract = (ModelContract(scale=scale, layout=layout, value_range=(0.0, high),  # type: ignore[arg-type]
                              name=name, version="1") if with_contract else None)
    return _save(graph, path, contract)
