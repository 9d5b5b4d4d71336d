"""Detail and denoise control: one network between models of one family, by weight interpolation.

ESRGAN (Wang et al. 2018, section 3.4): with theta = (1 - a) * theta_psnr + a *
theta_gan, ``a`` moves smoothly from the faithful, smooth PSNR network (0) to
the textured GAN network (1), without the noise of blending output images.
Both files must have the same topology: the same operators and initialisers
of the same shapes, paired by name (two exports by the same code) or else by
position in graph order. :func:`check_pair` says why a pair does not match;
the registry runs it when a model that names a ``detail_base`` is deployed.

``denoise`` is the same idea on a second axis (Real-ESRGAN's ``-dn``, which
blends its general model with a weak-denoise one): a real-world restoration
model names its clean counterpart (``denoise_base``), and a job's network is
the bilinear blend of up to four models, (detail, denoise) in 0..1 x 0..1:
:func:`blend_models` takes any number of (file, coefficient) parts.
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
from model.errors import ModelError

__all__ = ["PairMismatch", "blend_models", "check_pair", "interpolate_models"]


class PairMismatch(ModelError):
    """Two models cannot be interpolated: their graphs or contracts differ."""

    code = "model_mismatch"


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
    proto = blend_models([(Path(base), 1.0 - float(detail)), (Path(target), float(detail))])
    cb, ct = ModelContract.of_proto(load_proto(Path(base))), ModelContract.of_proto(proto)
    _record(proto, "srgan_detail", {
        "detail": float(detail),
        "detail_base": {"name": cb.name if cb else "", "version": cb.version if cb else ""},
        "detail_target": {"name": ct.name if ct else "", "version": ct.version if ct else ""},
    })
    return proto


def blend_models(parts: list[tuple[Path, float]]) -> onnx.ModelProto:
    """The network sum(c_i * theta_i) of ``parts`` (file, coefficient); the coefficients must add up to 1.

    Every part must pair with the last one (:func:`check_pair`); the result keeps the last part's contract and
    records the parts in its metadata (``srgan_blend``).
    """
    if not parts:
        raise ValueError("nothing to blend")
    total = sum(c for _, c in parts)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ValueError(f"blend coefficients add up to {total}, not 1")
    target_path = Path(parts[-1][0])
    protos = {Path(path): load_proto(Path(path)) for path, _ in parts}
    target_p = protos[target_path]
    mixed: dict[int, np.ndarray] = {}
    tensors: dict[int, onnx.TensorProto] = {}
    for path, coef in parts:
        for i, (tb, tt) in enumerate(_pair(protos[Path(path)], target_p, Path(path).name, target_path.name)):
            tensors[i] = tt
            if tt.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
                mixed[i] = mixed.get(i, 0.0) + float(coef) * numpy_helper.to_array(tb).astype(np.float64)
            elif numpy_helper.to_array(tb).tolist() != numpy_helper.to_array(tt).tolist():
                raise PairMismatch(
                    f"non-float constant {tt.name} differs between {target_path.name} and {Path(path).name}")
    for i, values in mixed.items():
        tt = tensors[i]
        tt.CopyFrom(numpy_helper.from_array(values.astype(numpy_helper.to_array(tt).dtype), tt.name))
    parts_meta = []
    for path, coef in parts:
        c = ModelContract.of_proto(protos[Path(path)])
        parts_meta.append({"name": c.name if c else Path(path).stem, "version": c.version if c else "",
                           "weight": round(float(coef), 6)})
    _record(target_p, "srgan_blend", {"parts": parts_meta})
    return target_p


def _record(proto: onnx.ModelProto, key: str, value: dict) -> None:
    """Set metadata ``key`` to ``value`` (JSON), keeping the contract."""
    ct = ModelContract.of_proto(proto)
    props = {p.key: p.value for p in proto.metadata_props}
    props[key] = json.dumps(value, sort_keys=True)
    if METADATA_KEY not in props and ct is not None:
        props.update(ct.to_metadata())
    del proto.metadata_props[:]
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=v)
