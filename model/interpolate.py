"""Detail control: one network between a PSNR model and its GAN fine-tune, by weight interpolation.

ESRGAN (Wang et al. 2018, section 3.4): with theta = (1 - a) * theta_psnr + a *
theta_gan, ``a`` moves smoothly from the faithful, smooth PSNR network (0) to
the textured GAN network (1), without the noise of blending output images.
Both files must have the same topology: the same operators and initialisers
of the same shapes, paired by name (two exports by the same code) or else by
position in graph order. :func:`check_pair` says why a pair does not match;
the registry runs it when a model that names a ``detail_base`` is deployed.
onnx and numpy only.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from model.contract import METADATA_KEY, ModelContract, load_proto
from model.errors import InvalidParameter, ModelError

__all__ = ["DETAIL_STEP", "PairMismatch", "check_pair", "interpolate_models", "round_detail"]

DETAIL_STEP = 0.05
"""Detail values are rounded to this step, so a handful of networks serve every request."""


class PairMismatch(ModelError):
    """Two models cannot be interpolated: their graphs or contracts differ."""

    code = "model_mismatch"


def round_detail(value: float) -> float:
    """``value`` (0..1) rounded to :data:`DETAIL_STEP`; anything else is an :class:`InvalidParameter`."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InvalidParameter(f"detail must be a number between 0 and 1, got {value!r}") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidParameter(f"detail must be between 0 and 1, got {value}")
    steps = round(value / DETAIL_STEP)
    return round(steps * DETAIL_STEP, 2)


def _structure(proto: onnx.ModelProto) -> dict[tuple[str, int], onnx.TensorProto]:
    """Each weight keyed by where it is read, independently of names and operator order.

    A node's signature hashes its operator, attributes and, for each input,
    the signature of the node producing it (or the shape of a weight, or "a
    graph input"): two exports of one architecture give the same signatures
    even when the exporter numbered its folded constants or ordered its
    operators differently. A weight's key is (signature of its first reader,
    input slot).
    """
    inits = {t.name: t for t in proto.graph.initializer}
    produced: dict[str, str] = {}
    keyed: dict[tuple[str, int], onnx.TensorProto] = {}
    for node in proto.graph.node:  # ONNX lists nodes in topological order
        parts = [node.op_type, node.domain]
        parts += sorted(f"{a.name}={onnx.helper.get_attribute_value(a)!r}" for a in node.attribute)
        for name in node.input:
            if name in produced:
                parts.append(produced[name])
            elif name in inits:
                parts.append(f"w{list(inits[name].dims)}/{inits[name].data_type}")
            else:
                parts.append("in" if name else "")
        signature = hashlib.sha1("|".join(parts).encode()).hexdigest()
        for slot, name in enumerate(node.input):
            if name in inits:
                keyed.setdefault((signature, slot), inits[name])
        for k, name in enumerate(node.output):
            produced[name] = f"{signature}:{k}"
    return keyed


def _pair(
    base: onnx.ModelProto, target: onnx.ModelProto, base_name: str, target_name: str,
) -> list[tuple[onnx.TensorProto, onnx.TensorProto]]:
    """The paired initialisers of two compatible models; :class:`PairMismatch` naming the first difference."""
    cb, ct = ModelContract.of_proto(base), ModelContract.of_proto(target)
    if cb is not None and ct is not None:
        for attr in ("scale", "layout", "value_range", "channels"):
            if getattr(cb, attr) != getattr(ct, attr):
                raise PairMismatch(
                    f"{target_name} and {base_name} differ in {attr}: {getattr(ct, attr)} vs {getattr(cb, attr)}"
                )
    wb, wt = _structure(base), _structure(target)
    if set(wb) != set(wt):
        missing = len(set(wt) - set(wb))
        raise PairMismatch(
            f"{target_name} and {base_name} are different networks ({len(target.graph.node)} vs "
            f"{len(base.graph.node)} operators; {missing} of {len(wt)} weights have no counterpart): "
            f"detail needs a GAN fine-tune of the same architecture"
        )
    return [(wb[key], wt[key]) for key in wt]


def check_pair(base: Path, target: Path) -> None:
    """Raise :class:`PairMismatch` unless ``target`` can be interpolated with ``base``."""
    _pair(load_proto(Path(base)), load_proto(Path(target)), Path(base).name, Path(target).name)


def interpolate_models(base: Path, target: Path, detail: float) -> onnx.ModelProto:
    """The network ``(1 - detail) * base + detail * target`` (floating-point weights; others must agree).

    The result keeps ``target``'s contract and records ``detail`` and both
    models' identities in its metadata.
    """
    base_p, target_p = load_proto(Path(base)), load_proto(Path(target))
    pairs = _pair(base_p, target_p, Path(base).name, Path(target).name)
    a = float(detail)
    for tb, tt in pairs:
        if tt.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
            wb, wt = numpy_helper.to_array(tb), numpy_helper.to_array(tt)
            mixed = ((1.0 - a) * wb.astype(np.float64) + a * wt.astype(np.float64)).astype(wt.dtype)
            tt.CopyFrom(numpy_helper.from_array(mixed, tt.name))
        elif numpy_helper.to_array(tb).tolist() != numpy_helper.to_array(tt).tolist():
            raise PairMismatch(
                f"non-float constant {tt.name} differs between {Path(target).name} and {Path(base).name}")
    cb, ct = ModelContract.of_proto(base_p), ModelContract.of_proto(target_p)
    blend = {
        "detail": a,
        "detail_base": {"name": cb.name if cb else "", "version": cb.version if cb else ""},
        "detail_target": {"name": ct.name if ct else "", "version": ct.version if ct else ""},
    }
    props = {p.key: p.value for p in target_p.metadata_props}
    props["srgan_detail"] = json.dumps(blend, sort_keys=True)
    if METADATA_KEY not in props and ct is not None:
        props.update(ct.to_metadata())
    del target_p.metadata_props[:]
    for key, value in props.items():
        target_p.metadata_props.add(key=key, value=value)
    return target_p
