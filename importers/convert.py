"""``srgan import FILE``: a third-party model file as an ONNX file of the service's contract, and its card.

- ncnn ``.param`` (+ ``.bin``): ``importers.ncnn``, any network of its op set.
- PyTorch ``.pth``/``.pt``/``.safetensors``: read without torch (``importers.torchfile``); the architecture is
  detected from the state dict's keys and shapes. Built here: Real-ESRGAN's SRVGGNetCompact (the
  ``realesr-animevideov3`` and ``realesr-general`` family, PReLU). Other architectures are refused by name; the
  general path is spandrel's detectors, which need torch and torchvision (the ``import`` extra: on this project's
  machines PyPI's torchvision is a CUDA build that does not load with the CPU torch wheel, so it is not offered
  yet).

The card says where the file came from (name, sha256), the architecture, scale, parameter count, FLOPs per input
pixel and the input range; ``core.catalog.publish.Publisher`` then checks, gates and publishes it like any model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from core.catalog.registry import sha256_of
from importers.ncnn import OUTPUT, read_ncnn, to_onnx
from importers.torchfile import WeightsError, state_dict
from model.contract import ModelContract

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")


@dataclass(frozen=True)
class Imported:
    proto: onnx.ModelProto
    card: dict[str, Any]


def flops_per_input_pixel(proto: onnx.ModelProto, scale: int) -> float:
    """Multiply-adds x 2 per LR pixel of the convolutions (a convolution after the upsampling counts scale^2)."""
    inits = {t.name: numpy_helper.to_array(t).shape for t in proto.graph.initializer}
    after_shuffle = False
    total = 0.0
    for node in proto.graph.node:
        if node.op_type == "DepthToSpace":
            after_shuffle = True
        if node.op_type == "Conv":
            out_c, in_c, kh, kw = inits[node.input[1]]
            total += 2 * out_c * in_c * kh * kw * (scale**2 if after_shuffle else 1)
    return total


def import_file(path: Path, name: str) -> Imported:
    """The ONNX network and card of a third-party file (raises ``ValueError`` subclasses naming what is refused)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; check the path")
    if path.suffix == ".param":
        layers = read_ncnn(path)
        scale = _ncnn_scale(layers)
        proto = to_onnx(layers, name=name, scale=scale)
        arch: dict[str, Any] = {"type": "ncnn graph", "layers": len(layers)}
        sources = [path, path.with_suffix(".bin")]
    elif path.suffix in WEIGHT_SUFFIXES:
        weights = state_dict(path)
        proto, arch = srvgg_compact(weights, name)
        scale = int(arch["scale"])
        sources = [path]
    else:
        raise WeightsError(f"{path}: not a model file this imports (.param + .bin for ncnn; .pth, .pt or "
                           ".safetensors for PyTorch)")
    params = int(sum(np.prod(t.dims) for t in proto.graph.initializer))
    card = {
        "name": name,
        "version": "imported",
        "scale": scale,
        "architecture": {**arch, "parameters": params,
                         "flops_per_input_pixel": flops_per_input_pixel(proto, scale)},
        "source": {"files": [{"name": p.name, "sha256": sha256_of(p)} for p in sources],
                   "imported_by": "srgan import"},
        "contract": {"layout": "NCHW", "value_range": [0.0, 1.0]},
        "licence": "unknown: say it with --licence (Real-ESRGAN's own models are BSD-3-Clause)",
    }
    return Imported(proto, card)


def _ncnn_scale(layers: list) -> int:
    """x2/x3/x4 from the pixel shuffles of an ncnn SR graph (their product; a graph without one: its Interps').

    The engine's probe then checks it on a real image when the model is published."""
    scale = 1
    for layer in layers:
        if layer.type == "PixelShuffle":
            scale *= int(layer.get(0))
    if scale == 1:  # upsampled by Interp layers in the trunk (RRDB: nearest x2, twice)
        for layer in layers:
            if layer.type == "Interp":
                scale *= int(round(float(layer.get(1, 1.0))))
    if scale == 1:
        raise WeightsError("cannot tell the model's scale from its graph (no PixelShuffle or upsampling)")
    return scale


def srvgg_compact(weights: dict[str, np.ndarray], name: str) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Real-ESRGAN's SRVGGNetCompact from its state dict (``body.N.weight``: conv, PReLU, ..., conv; the last
    conv has 3 x scale^2 outputs; the output adds the nearest upsampling of the input)."""
    body = sorted({int(m[1]) for k in weights if (m := re.fullmatch(r"body\.(\d+)\.weight", k))})
    if not body or set(weights) - {f"body.{i}.{p}" for i in body for p in ("weight", "bias")}:
        raise WeightsError("architecture not recognised (keys are not SRVGGNetCompact's body.N.weight/bias); "
                           "only Real-ESRGAN's compact models are built without spandrel")
    if body != list(range(len(body))) or any(weights[f"body.{i}.weight"].ndim != (4 if i % 2 == 0 else 1)
                                              for i in body):
        raise WeightsError("an SRVGGNetCompact without PReLU activations (ReLU or LeakyReLU leave no weights, "
                           "so which one cannot be told from the file): not built without spandrel")
    last = weights[f"body.{body[-1]}.weight"]
    scale = int(round((last.shape[0] / 3) ** 0.5))
    if 3 * scale * scale != last.shape[0]:
        raise WeightsError(f"the last convolution has {last.shape[0]} outputs, not 3 x scale^2")
    nodes, inits = [], []
    x = "input"
    for i in body:
        w = weights[f"body.{i}.weight"].astype(np.float32)
        out = f"b{i}"
        if w.ndim == 4:
            inits.append(numpy_helper.from_array(w, f"body.{i}.weight"))
            inputs = [x, f"body.{i}.weight"]
            if f"body.{i}.bias" in weights:
                inits.append(numpy_helper.from_array(weights[f"body.{i}.bias"].astype(np.float32), f"body.{i}.bias"))
                inputs.append(f"body.{i}.bias")
            k = w.shape[2]
            nodes.append(helper.make_node("Conv", inputs, [out], kernel_shape=[k, k], pads=[k // 2] * 4))
        else:
            inits.append(numpy_helper.from_array(w.reshape(-1, 1, 1), f"body.{i}.weight"))
            nodes.append(helper.make_node("PRelu", [x, f"body.{i}.weight"], [out]))
        x = out
    inits += [numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "scales"),
              numpy_helper.from_array(np.zeros(0, np.float32), "roi")]
    nodes += [helper.make_node("DepthToSpace", [x], ["shuffled"], blocksize=scale, mode="CRD"),
              helper.make_node("Resize", ["input", "roi", "scales"], ["base"], mode="nearest",
                               coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
              helper.make_node("Add", ["shuffled", "base"], [OUTPUT])]
    graph = helper.make_graph(nodes, f"{name}_srvgg", [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3, None, None])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [None, 3, None, None])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="srgan import")
    ModelContract(scale=scale, input_name="input", output_name=OUTPUT, layout="NCHW", value_range=(0.0, 1.0),
                  name=name, version="imported").store_in(proto)
    onnx.checker.check_model(proto)
    convs = [i for i in body if i % 2 == 0]
    arch = {"type": "SRVGGNetCompact", "scale": scale, "num_feat": int(weights["body.0.weight"].shape[0]),
            "num_conv": len(convs) - 2, "act_type": "prelu"}
    return proto, arch
