"""Detail control: one network between a PSNR model and its GAN fine-tune, by weight interpolation.

ESRGAN (Wang et al. 2018, section 3.4): with theta = (1 - a) * theta_psnr + a *
theta_gan, ``a`` moves smoothly from the faithful, smooth PSNR network (0) to
the textured GAN network (1), without the noise of blending output images.
Both files must have the same topology: the same operators in the same order
and initialisers of the same shapes, paired by position in the graph (names
differ between exports). :func:`check_pair` says why a pair does not match;
the registry runs it when a model that names a ``detail_base`` is deployed.
onnx and numpy only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from model.contract import METADATA_KEY, ModelContract
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


def _load(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types
        raise ModelError(f"cannot read model file {path}: {exc}") from exc


def _contract(proto: onnx.ModelProto) -> ModelContract | None:
    return ModelContract.from_metadata({p.key: p.value for p in proto.metadata_props})


def _weights(proto: onnx.ModelProto) -> list[tuple[str, onnx.TensorProto]]:
    """(``node_index:op_type``, initialiser) in graph order: the pairing key of two exports."""
    inits = {t.name: t for t in proto.graph.initializer}
    seen: set[str] = set()
    out = []
    for i, node in enumerate(proto.graph.node):
        for name in node.input:
            if name in inits and name not in seen:
                seen.add(name)
                out.append((f"{i}:{node.op_type}", inits[name]))
    return out


def _structure(proto: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in proto.graph.node]


def _pair(base: onnx.ModelProto, target: onnx.ModelProto, base_name: str, target_name: str):
    """The paired initialisers of two compatible models; :class:`PairMismatch` naming the first difference."""
    cb, ct = _contract(base), _contract(target)
    if cb is not None and ct is not None:
        for attr in ("scale", "layout", "value_range", "channels"):
            if getattr(cb, attr) != getattr(ct, attr):
                raise PairMismatch(
                    f"{target_name} and {base_name} differ in {attr}: {getattr(ct, attr)} vs {getattr(cb, attr)}"
                )
    sb, st = _structure(base), _structure(target)
    if sb != st:
        at = next((i for i, (a, b) in enumerate(zip(sb, st)) if a != b), min(len(sb), len(st)))
        raise PairMismatch(
            f"{target_name} and {base_name} are different networks ({len(st)} vs {len(sb)} operators; "
            f"first difference at operator {at}): detail needs a GAN fine-tune of the same architecture"
        )
    wb, wt = _weights(base), _weights(target)
    if len(wb) != len(wt):
        raise PairMismatch(f"{target_name} has {len(wt)} weight tensors, {base_name} has {len(wb)}")
    pairs = []
    for (kb, tb), (kt, tt) in zip(wb, wt):
        if kb != kt or list(tb.dims) != list(tt.dims) or tb.data_type != tt.data_type:
            raise PairMismatch(
                f"weights differ at {kt}: {target_name} has {list(tt.dims)}, {base_name} has {list(tb.dims)}"
            )
        pairs.append((tb, tt))
    return pairs


def check_pair(base: Path, target: Path) -> None:
    """Raise :class:`PairMismatch` unless ``target`` can be interpolated with ``base``."""
    _pair(_load(Path(base)), _load(Path(target)), Path(base).name, Path(target).name)


def interpolate_models(base: Path, target: Path, detail: float) -> onnx.ModelProto:
    """The network ``(1 - detail) * base + detail * target`` (floating-point weights; others must agree).

    The result keeps ``target``'s contract and records ``detail`` and both
    models' identities in its metadata.
    """
    base_p, target_p = _load(Path(base)), _load(Path(target))
    pairs = _pair(base_p, target_p, Path(base).name, Path(target).name)
    a = float(detail)
    for tb, tt in pairs:
        if tt.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
            wb, wt = numpy_helper.to_array(tb), numpy_helper.to_array(tt)
            mixed = ((1.0 - a) * wb.astype(np.float64) + a * wt.astype(np.float64)).astype(wt.dtype)
            tt.CopyFrom(numpy_helper.from_array(mixed, tt.name))
        elif numpy_helper.to_array(tb).tolist() != numpy_helper.to_array(tt).tolist():
            raise PairMismatch(f"non-float constant {tt.name} differs between {Path(target).name} and {Path(base).name}")
    cb, ct = _contract(base_p), _contract(target_p)
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
