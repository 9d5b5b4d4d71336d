"""Deploying a model file: check it as the workers will run it, then publish it to the registry.

:func:`check_model_file` loads the file with the engine (ONNX Runtime on the
CPU) and runs a small random image through it; :func:`deploy_model` checks,
then hands the result to :meth:`model.registry.Registry.publish`. Kept apart
from ``model.registry`` so that readers of the registry (the API) never
import the engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model.contract import ModelContract
from model.registry import DeployRefused, FileCheck, ModelVersion, Registry, find_card, read_card, sha256_of

PROBE_HW = (20, 28)
"""Height and width of the random image run through a model before it is published."""


def deploy_model(
    registry: Registry,
    file: Path,
    *,
    name: str,
    version: str | None = None,
    card: dict[str, Any] | None = None,
    scale: int | None = None,
    activate: bool = True,
    source: str | None = None,
) -> ModelVersion:
    """Check ``file`` and publish it as ``name`` (``srgan deploy``); raises :class:`DeployRefused`.

    ``card`` defaults to the one beside the file (:func:`model.registry.find_card`), or none.
    """
    file = Path(file)
    if card is None:
        found = find_card(file)
        card = read_card(found) if found else {}
    checked = check_model_file(file, card=card, scale=scale)
    return registry.publish(file, name=name, version=version, card=card, checked=checked, activate=activate,
                            source=source or str(file.resolve()))


def check_model_file(path: Path, *, card: dict[str, Any] | None = None, scale: int | None = None) -> FileCheck:
    """Check ``path`` before it is published; raises :class:`DeployRefused` saying what is wrong.

    The sha256 must equal the card's (when the card has one); the file must be
    a valid ONNX graph; its declared scale (contract, card, ``scale``: those
    given must agree) must be what the engine's output of a small random
    image shows.
    """
    import onnx

    path = Path(path)
    card = card or {}
    if not path.is_file():
        raise DeployRefused(f"model file not found: {path}")
    digest = sha256_of(path)
    if card.get("sha256") and str(card["sha256"]).lower() != digest:
        raise DeployRefused(f"{path}: sha256 {digest} differs from the card's {card['sha256']}; "
                            "the file is not the one the card describes (damaged or replaced)")
    try:
        proto = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types
        raise DeployRefused(f"{path} is not a valid ONNX model: {exc}") from exc
    contract = ModelContract.from_metadata({p.key: p.value for p in proto.metadata_props})
    declared = {"the file's contract": contract.scale if contract else None,
                "the card": card.get("scale"), "--scale": scale}
    given = {k: int(v) for k, v in declared.items() if v is not None}
    if not given:
        raise DeployRefused(f"{path} declares no scale (no srgan contract, no card); pass --scale")
    if len(set(given.values())) > 1:
        raise DeployRefused(f"{path}: the declared scales disagree: "
                            + ", ".join(f"{k} says x{v}" for k, v in given.items()))
    expected = next(iter(given.values()))
    probe = _run_probe(path, expected, contract)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return FileCheck(sha256=digest, scale=expected, opset=opset, contract=contract, probe=probe)


def _run_probe(path: Path, scale: int, contract: ModelContract | None) -> str:
    """Run a small random image through the engine; returns ``"WxH -> WxH"`` or raises DeployRefused."""
    from model.engine import Upscaler
    from model.errors import SRGANError

    h, w = PROBE_HW
    lr = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    try:
        up = Upscaler.from_file(path, backend="onnxruntime", providers=["CPUExecutionProvider"], threads=1,
                                tile=0, scale=None if contract else scale)
    except (SRGANError, ValueError) as exc:
        raise DeployRefused(f"{path} cannot be loaded by the engine: {exc}") from exc
    try:
        out = up.upscale(lr)
    except SRGANError as exc:
        got = _raw_output_size(up, lr)
        if got and got != (h * scale, w * scale):
            raise DeployRefused(
                f"{path} declares x{scale}, but a {w}x{h} image came out {got[1]}x{got[0]} "
                f"instead of {w * scale}x{h * scale}"
            ) from exc
        raise DeployRefused(f"{path} fails on a {w}x{h} test image: {exc}") from exc
    if out.shape[:2] != (h * scale, w * scale):
        raise DeployRefused(f"{path} declares x{scale}, but a {w}x{h} image came out {out.shape[1]}x{out.shape[0]}")
    return f"{w}x{h} -> {out.shape[1]}x{out.shape[0]}"


def _raw_output_size(up: Any, lr_hwc_u8: np.ndarray) -> tuple[int, int] | None:
    """The model's own output height and width for ``lr``, whatever its contract says (None if it fails)."""
    batch = lr_hwc_u8[None].astype(np.float32)
    if up.contract.layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    try:
        out = up.backend.run(batch)
    except Exception:  # noqa: BLE001 - the caller reports the original failure
        return None
    return tuple(out.shape[1:3]) if up.contract.layout == "NHWC" else tuple(out.shape[2:4])


