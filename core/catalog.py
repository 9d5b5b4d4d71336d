"""Which models the service offers, read without ONNX Runtime (the API may not import it).

Today the service offers the one configured model (``Settings.model``: a
shipped name or an ``.onnx`` path); its name, version, scale and measured
quality come from the ONNX contract in the file's metadata. The model
registry (DESIGN.md) will list more here; callers already go through
:func:`offered_models` and :func:`select_model`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from core.settings import Settings
from model.contract import ModelContract
from model.errors import InvalidParameter, ModelError
from model.locate import resolve_model


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    scale: int | None
    path: Path
    active: bool = True
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}" if self.version else self.name


_cache: dict[tuple[str, int, int], ModelInfo] = {}
_lock = threading.Lock()


def describe_model_file(path: Path) -> ModelInfo:
    """Name, version and scale stored in an ONNX file's contract (cached per file version)."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _lock:
        if key in _cache:
            return _cache[key]
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types
        raise ModelError(f"cannot read model file {path}: {exc}") from exc
    contract = ModelContract.from_metadata({p.key: p.value for p in proto.metadata_props})
    info = ModelInfo(
        name=(contract.name if contract and contract.name else path.stem),
        version=contract.version if contract else "",
        scale=contract.scale if contract else None,
        path=path,
        metrics=dict(contract.metrics) if contract else {},
    )
    with _lock:
        _cache[key] = info
    return info


def offered_models(settings: Settings) -> list[ModelInfo]:
    """The models jobs may ask for. Raises ModelError when the configured model is missing."""
    return [describe_model_file(resolve_model(settings.model))]


def select_model(settings: Settings, *, model: str | None, scale: int | None) -> ModelInfo:
    """The model for a job asking for ``model`` (``name`` or ``name:version``) and/or ``scale``.

    A model made for ``scale`` is preferred; otherwise the worker resamples the
    model's output to the requested scale (as ``srgan upscale --scale`` does).

    Raises:
        InvalidParameter: no offered model matches; the message lists what is offered.
    """
    offered = offered_models(settings)
    matches = offered
    if model:
        name, _, version = model.partition(":")
        matches = [m for m in matches if m.name == name and (not version or m.version == version)]
        if not matches:
            listed = ", ".join(m.ref for m in offered)
            raise InvalidParameter(f"unknown model {model!r}; offered: {listed}")
    if scale is not None:  # prefer a model made for this scale; any other is resampled to it
        native = [m for m in matches if m.scale == scale]
        matches = native or matches
    active = [m for m in matches if m.active]
    return (active or matches)[0]
