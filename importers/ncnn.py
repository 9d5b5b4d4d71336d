"""ncnn models (``.param`` + ``.bin``, what Upscayl and the ``*-ncnn-vulkan`` tools run) as ONNX files.

:func:`read_ncnn` parses the text ``.param`` (layers, their blobs and ``key=value`` parameters) and reads each
layer's weights from the ``.bin`` in layer order (a convolution's weights behind a 4-byte storage tag: float32
or float16; int8 is refused); :func:`to_onnx` builds the same network as ONNX, NCHW float32 in 0..1 as
Real-ESRGAN's ncnn files take and give, with the service's contract in its metadata. The op set is the one
single-image SR models use (Real-ESRGAN's RRDB and SRVGG-compact files among them): Input, Split, Convolution
(with its fused activation), ConvolutionDepthWise, ReLU, PReLU, Sigmoid, PixelShuffle, Interp, BinaryOp,
Eltwise, Concat. Anything else is refused by name. numpy and onnx only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model.contract import ModelContract

MAGIC = 7767517
OUTPUT = "srgan_output"
"""The graph output's name (ncnn files often call a blob "output" already)."""
TAG_FLOAT16 = 0x01306B47
TAG_FLOAT32 = (0x00000000, 0x0002C056)
TAG_INT8 = 0x000D4B38
SUPPORTED = ("Input", "Split", "Convolution", "ConvolutionDepthWise", "ReLU", "PReLU", "Sigmoid", "PixelShuffle",
             "Interp", "BinaryOp", "Eltwise", "Concat")


class NcnnError(ValueError):
    """A file this importer cannot read, or a network it cannot build (the message says which layer and why)."""


@dataclass
class Layer:
    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[int, Any]
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def get(self, key: int, default: Any = 0) -> Any:
        return self.params.get(key, default)


def _value(text: str) -> int | float:
    return float(text) if re.search(r"[.eE]", text) else int(text)


def parse_param(text: str) -> list[Layer]:
    """The layers of a ``.param`` file (plain text; the binary ``.param.bin`` form is not read)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != [str(MAGIC)]:
        raise NcnnError(f"not an ncnn .param file (its first line is not {MAGIC})")
    layers = []
    for fields in lines[2:]:
        kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
        bottoms, tops = fields[4 : 4 + n_in], fields[4 + n_in : 4 + n_in + n_out]
        params: dict[int, Any] = {}
        for item in fields[4 + n_in + n_out :]:
            key_text, _, value = item.partition("=")
            key = int(key_text)
            if key <= -23300:  # an array: -23300 - key, "count,v1,v2,..."
                values = value.split(",")
                params[-23300 - key] = [_value(v) for v in values[1:]]
            else:
                params[key] = _value(value)
        layers.append(Layer(kind, name, bottoms, tops, params))
    unknown = sorted({layer.type for layer in layers} - set(SUPPORTED))
    if unknown:
        raise NcnnError(f"ncnn layer types this importer does not build: {', '.join(unknown)} "
                        f"(it builds {', '.join(SUPPORTED)})")
    return layers


class _Bin:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def floats(self, count: int) -> np.ndarray:
        end = self.at + 4 * count
        if end > len(self.data):
            raise NcnnError(".bin ends before the weights the .param names")
        out = np.frombuffer(self.data[self.at : end], dtype="<f4").copy()
        self.at = end
        return out

    def tagged(self, count: int, layer: str) -> np.ndarray:
        """Weights behind a storage tag (ncnn's ModelBinFromDataReader with type 0)."""
        tag = int.from_bytes(self.data[self.at : self.at + 4], "little")
        self.at += 4
        if tag == TAG_FLOAT16:
            size = 2 * count
            out = np.frombuffer(self.data[self.at : self.at + size], dtype="<f2").astype(np.float32)
            self.at += (size + 3) // 4 * 4  # padded to 4 bytes
            return out
        if tag in TAG_FLOAT32:
            return self.floats(count)
        if tag == TAG_INT8:
            raise NcnnError(f"layer {layer}: int8 weights are not imported (quantized ncnn files)")
        raise NcnnError(f"layer {layer}: unknown weight storage tag {tag:#x}")


def read_ncnn(param: Path, weights: Path | None = None) -> list[Layer]:
    """The layers of ``param`` with their weights from ``weights`` (default: the ``.bin`` beside it)."""
    param = Path(param)
    weights = Path(weights) if weights is not None else param.with_suffix(".bin")
    if not weights.is_file():
        raise NcnnError(f"{weights}: no such file (an ncnn model is a .param and its .bin)")
    layers = parse_param(param.read_text())
    data = _Bin(weights.read_bytes())
    for layer in layers:
        if layer.type in ("Convolution", "ConvolutionDepthWise"):
            layer.weights["weight"] = data.tagged(int(layer.get(6)), layer.name)
            if layer.get(5):
                layer.weights["bias"] = data.floats(int(layer.get(0)))
        elif layer.type == "PReLU":
            layer.weights["slope"] = data.floats(int(layer.get(0)))
    if data.at != len(data.data):
        raise NcnnError(f"{weights}: {len(data.data) - data.at} bytes left after the weights the .param names: "
                        "the files do not belong together")
    return layers


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.alias: dict[str, str] = {}

    def name(self, blob: str) -> str:
        return self.alias.get(blob, blob)

    def const(self, name: str, value: np.ndarray | np.floating) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{len(self.nodes)}", **attrs))
        return output


def _activation(g: _Graph, layer: Layer, x: str, out: str) -> str:
    kind, args = int(layer.get(9)), layer.get(10, [])
    if kind == 0:
        return g.node("Identity", [x], out)
    if kind == 1:
        return g.node("Relu", [x], out)
    if kind == 2:
        return g.node("LeakyRelu", [x], out, alpha=float(args[0]) if args else 0.0)
    if kind == 3:
        lo, hi = args
        return g.node("Clip", [x, g.const(f"{layer.name}_lo", np.float32(lo)), g.const(f"{layer.name}_hi",
                                                                                     np.float32(hi))], out)
    if kind == 4:
        return g.node("Sigmoid", [x], out)
    raise NcnnError(f"layer {layer.name}: fused activation type {kind} is not built")


def _conv(g: _Graph, layer: Layer) -> None:
    out_c, kw = int(layer.get(0)), int(layer.get(1))
    kh = int(layer.get(11, kw))
    groups = int(layer.get(7, 1)) if layer.type == "ConvolutionDepthWise" else 1
    dw, sw = int(layer.get(2, 1)), int(layer.get(3, 1))
    dh, sh = int(layer.get(12, dw)), int(layer.get(13, sw))
    left = int(layer.get(4, 0))
    top, right = int(layer.get(14, left)), int(layer.get(15, left))
    bottom = int(layer.get(16, top))
    if min(left, top, right, bottom) < 0:
        raise NcnnError(f"layer {layer.name}: 'same' padding (-233/-234) is not built")
    weight = layer.weights["weight"]
    in_c = weight.size // (out_c * kh * kw) * groups
    w = g.const(f"{layer.name}_w", weight.reshape(out_c, in_c // groups, kh, kw))
    inputs = [g.name(layer.bottoms[0]), w]
    if "bias" in layer.weights:
        inputs.append(g.const(f"{layer.name}_b", layer.weights["bias"]))
    conv = g.node("Conv", inputs, f"{layer.tops[0]}_conv" if layer.get(9) else layer.tops[0],
                  kernel_shape=[kh, kw], strides=[sh, sw], dilations=[dh, dw], pads=[top, left, bottom, right],
                  group=groups)
    if layer.get(9):
        _activation(g, layer, conv, layer.tops[0])


def _binary(g: _Graph, layer: Layer) -> None:
    ops = {0: "Add", 1: "Sub", 2: "Mul", 3: "Div", 4: "Max", 5: "Min", 6: "Pow"}
    op = ops.get(int(layer.get(0)))
    if op is None:
        raise NcnnError(f"layer {layer.name}: BinaryOp type {layer.get(0)} is not built")
    a = g.name(layer.bottoms[0])
    b = (g.const(f"{layer.name}_b", np.float32(layer.get(2, 0.0))) if layer.get(1)
         else g.name(layer.bottoms[1]))
    g.node(op, [a, b], layer.tops[0])


def _eltwise(g: _Graph, layer: Layer) -> None:
    op, coeffs = int(layer.get(0, 1)), layer.get(1, [])
    inputs = [g.name(b) for b in layer.bottoms]
    if op == 1 and coeffs:
        inputs = [g.node("Mul", [x, g.const(f"{layer.name}_c{i}", np.float32(c))], f"{layer.name}_m{i}")
                  for i, (x, c) in enumerate(zip(inputs, coeffs))]
    kind = {0: "Mul", 1: "Sum", 2: "Max"}.get(op)
    if kind is None:
        raise NcnnError(f"layer {layer.name}: Eltwise type {op} is not built")
    g.node(kind, inputs, layer.tops[0])


def _interp(g: _Graph, layer: Layer) -> None:
    mode = int(layer.get(0, 1))
    if layer.get(3) or layer.get(4):
        raise NcnnError(f"layer {layer.name}: Interp to a fixed output size is not built (scales only)")
    hs, ws = float(layer.get(1, 1.0)), float(layer.get(2, 1.0))
    scales = g.const(f"{layer.name}_scales", np.array([1, 1, hs, ws], np.float32))
    roi = g.const(f"{layer.name}_roi", np.zeros(0, np.float32))
    modes: dict[int, dict[str, Any]] = {1: {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                                 "nearest_mode": "floor"},
                             2: {"mode": "linear", "coordinate_transformation_mode":
                                 "align_corners" if layer.get(6) else "half_pixel"},
                             3: {"mode": "cubic", "cubic_coeff_a": -0.75, "coordinate_transformation_mode":
                                 "align_corners" if layer.get(6) else "half_pixel"}}
    attrs = modes.get(mode, {})
    if not attrs:
        raise NcnnError(f"layer {layer.name}: Interp type {mode} is not built")
    g.node("Resize", [g.name(layer.bottoms[0]), roi, scales], layer.tops[0], **attrs)


def to_onnx(layers: list[Layer], *, name: str, scale: int, opset: int = 17) -> onnx.ModelProto:
    """The ONNX network of ``layers`` (NCHW float32 0..1 in and out, dynamic size), its contract stored."""
    g = _Graph()
    inputs = []
    for layer in layers:
        kind = layer.type
        if kind == "Input":
            inputs.append(layer.tops[0])
        elif kind == "Split":
            for top in layer.tops:
                g.alias[top] = g.name(layer.bottoms[0])
        elif kind in ("Convolution", "ConvolutionDepthWise"):
            _conv(g, layer)
        elif kind == "ReLU":
            slope = float(layer.get(0, 0.0))
            x = g.name(layer.bottoms[0])
            g.node("LeakyRelu" if slope else "Relu", [x], layer.tops[0], **({"alpha": slope} if slope else {}))
        elif kind == "PReLU":
            slopes = layer.weights["slope"]
            g.node("PRelu", [g.name(layer.bottoms[0]), g.const(f"{layer.name}_slope", slopes.reshape(-1, 1, 1))],
                   layer.tops[0])
        elif kind == "Sigmoid":
            g.node("Sigmoid", [g.name(layer.bottoms[0])], layer.tops[0])
        elif kind == "PixelShuffle":
            if int(layer.get(1, 0)):
                raise NcnnError(f"layer {layer.name}: PixelShuffle mode {layer.get(1)} is not built")
            g.node("DepthToSpace", [g.name(layer.bottoms[0])], layer.tops[0], blocksize=int(layer.get(0)),
                   mode="CRD")
        elif kind == "Interp":
            _interp(g, layer)
        elif kind == "BinaryOp":
            _binary(g, layer)
        elif kind == "Eltwise":
            _eltwise(g, layer)
        elif kind == "Concat":
            g.node("Concat", [g.name(b) for b in layer.bottoms], layer.tops[0], axis=int(layer.get(0, 0)) + 1)
    if len(inputs) != 1:
        raise NcnnError(f"the network has {len(inputs)} inputs; an SR model has one image input")
    produced = {t for layer in layers for t in layer.tops}
    consumed = {g.name(b) for layer in layers for b in layer.bottoms}
    outputs = [t for t in produced - consumed - set(g.alias) if t not in inputs]
    if len(outputs) != 1:
        raise NcnnError(f"the network has {len(outputs)} outputs ({', '.join(sorted(outputs))}); one is expected")
    g.node("Identity", [outputs[0]], OUTPUT)
    graph = helper.make_graph(
        g.nodes, f"{name}_ncnn",
        [helper.make_tensor_value_info(inputs[0], TensorProto.FLOAT, [None, 3, None, None])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [None, 3, None, None])], g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="srgan import")
    ModelContract(scale=scale, input_name=inputs[0], output_name=OUTPUT, layout="NCHW", value_range=(0.0, 1.0),
                  name=name, version="ncnn").store_in(proto)
    onnx.checker.check_model(proto)
    return proto
