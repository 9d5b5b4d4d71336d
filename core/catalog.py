"""Which models the service offers, read without ONNX Runtime (the API may not import it).

The offer is the model registry (``model.registry``: every published version,
one active per name) plus the configured default (``Settings.model``) when
that is an ``.onnx`` path outside the registry. A model is named by what a
user types: a registry name (its active version), ``name:version``, or a
path. The shipped default is seeded into the registry the first time a
process looks (:func:`seed_registry`).

``GET /v1/models`` and ``srgan models --json`` both print :meth:`ModelInfo.to_json`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import onnx

from core.settings import Settings
from model.contract import ModelContract
from model.errors import InvalidParameter, ModelError
from model.locate import WEIGHTS_DIR, resolve_model
from model.registry import ModelVersion, Registry, find_card, read_card

log = logging.getLogger(__name__)

Source = Literal["registry", "file"]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    scale: int | None
    path: Path
    active: bool = True
    metrics: dict[str, float] = field(default_factory=dict)
    source: Source = "file"
    default: bool = False
    published_at: str | None = None
    sha256: str | None = None
    detail_base: str | None = None
    """The PSNR model this GAN model interpolates with for ``detail`` (None: no detail control)."""

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}" if self.version else self.name

    @classmethod
    def from_version(cls, v: ModelVersion) -> ModelInfo:
        return cls(name=v.name, version=v.version, scale=v.scale, path=v.path, active=v.active, metrics=v.metrics,
                   source="registry", published_at=v.published_at, sha256=v.card.get("sha256"),
                   detail_base=v.detail_base)

    def to_json(self) -> dict[str, Any]:
        """What ``GET /v1/models`` and ``srgan models --json`` show of one version."""
        return {"name": self.name, "version": self.version, "ref": self.ref, "scale": self.scale,
                "active": self.active, "default": self.default, "metrics": self.metrics, "source": self.source,
                "published_at": self.published_at, "sha256": self.sha256, "detail_base": self.detail_base}


_cache: dict[tuple[str, int, int], ModelInfo] = {}
_lock = threading.Lock()
_seeded: set[str] = set()


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
    card_path = find_card(path)
    try:
        card = read_card(card_path) if card_path else {}
    except ModelError:
        card = {}
    info = ModelInfo(
        name=(contract.name if contract and contract.name else path.stem),
        version=contract.version if contract else "",
        scale=contract.scale if contract else None,
        path=path,
        metrics=dict(contract.metrics) if contract else {},
        detail_base=str(card["detail_base"]) if card.get("detail_base") else None,
    )
    with _lock:
        _cache[key] = info
    return info


def registry_of(settings: Settings) -> Registry:
    return Registry(settings.resolved_models_dir)


def seed_registry(settings: Settings, weights_dir: Path = WEIGHTS_DIR) -> None:
    """Put the shipped models into the registry, once per process; a read-only registry is only logged."""
    root = str(settings.resolved_models_dir.resolve())
    with _lock:
        if root in _seeded:
            return
        _seeded.add(root)
    try:
        for added in registry_of(settings).seed(weights_dir):
            log.info("registry %s: added the shipped model %s%s", root, added.ref, " (active)" if added.active else "")
    except (OSError, ModelError) as exc:
        log.warning("could not seed the registry %s with the shipped models: %s", root, exc)


def _is_path(spec: str) -> bool:
    return spec.endswith(".onnx") or "/" in spec or Path(spec).expanduser().is_file()


def resolve_spec(settings: Settings, spec: str | None, *, seed: bool = True) -> ModelInfo:
    """The model ``spec`` names now: ``None`` (the configured default), a path, ``name`` or ``name:version``.

    A name is looked up in the registry (its active version), then compared
    with a configured default file's contract, then among the shipped files.
    ``seed=False`` leaves the registry untouched (``srgan upscale`` writes nothing).

    Raises:
        ModelError: nothing matches; the message says what exists.
    """
    spec = spec or settings.model
    if _is_path(spec):
        return describe_model_file(resolve_model(spec))
    name, _, version = spec.partition(":")
    if seed:
        seed_registry(settings)
    registry = registry_of(settings)
    if registry.has(name):
        return ModelInfo.from_version(registry.get(name, version or None))
    if spec != settings.model and _is_path(settings.model):
        default = resolve_spec(settings, settings.model, seed=seed)
        if default.name == name and version in ("", default.version):
            return default
    in_registry = f"the registry {registry.root} has {', '.join(registry.names()) or 'no models'}"
    if version:
        raise ModelError(f"unknown model {spec!r}: {in_registry}")
    try:
        return describe_model_file(resolve_model(name))
    except ModelError as exc:
        raise ModelError(f"{exc.message}; {in_registry}") from None


def offered_models(settings: Settings) -> list[ModelInfo]:
    """Every version jobs may ask for, the configured default marked. Raises ModelError when there is none."""
    seed_registry(settings)
    offered = [ModelInfo.from_version(v) for v in registry_of(settings).list()]
    try:
        default = resolve_spec(settings, None)
    except ModelError:
        if not offered:
            raise
        log.warning("the configured default model %r is not available", settings.model)
        return offered
    if default.source == "file":
        offered.insert(0, default)
    return [replace(m, default=m.name == default.name and m.active) for m in offered]


def require_detail_base(info: ModelInfo) -> str:
    """The model ``info`` interpolates with for ``detail`` (its card's ``detail_base``).

    Raises:
        InvalidParameter: ``info`` has no detail control.
    """
    if not info.detail_base:
        raise InvalidParameter(
            f"model {info.ref} has no detail control: detail needs a GAN model whose card names its PSNR "
            f"model as detail_base (e.g. srgan_x4)"
        )
    return info.detail_base


def select_model(settings: Settings, *, model: str | None, scale: int | None) -> ModelInfo:
    """The model for a job asking for ``model`` (``name`` or ``name:version``) and/or ``scale``.

    A model made for ``scale`` is preferred among the active ones when no
    model is named; otherwise the worker resamples the model's output to the
    requested scale (as ``srgan upscale --scale`` does).

    Raises:
        InvalidParameter: no offered model matches; the message lists what is offered.
        ModelError: no model is named and the configured default is missing.
    """
    offered = offered_models(settings)
    if model:
        name, _, version = model.partition(":")
        matches = [m for m in offered if m.name == name and (m.version == version if version else m.active)]
        if not matches:
            listed = ", ".join(m.ref + (" (active)" if m.active and m.source == "registry" else "") for m in offered)
            raise InvalidParameter(f"unknown model {model!r}; offered: {listed}")
        return matches[0]
    default = next((m for m in offered if m.default), None)
    if default is None:
        default = resolve_spec(settings, None)
    if scale is not None and default.scale != scale:
        native = [m for m in offered if m.active and m.scale == scale]
        if native:
            return native[0]
    return default


def models_listing(settings: Settings, engines: dict[str, dict]) -> dict[str, Any]:
    """What ``GET /v1/models`` and ``srgan models --json`` answer: :func:`offered_models`, each with the
    precision a worker last loaded it in (``engines``, from ``core.model_updates.loaded_engines``), and the
    configured precision. Raises ModelError when there is no model."""
    models = []
    for m in offered_models(settings):
        engine = engines.get(m.ref) or {}
        models.append({**m.to_json(), "precision": engine.get("precision"),
                       "precision_note": engine.get("precision_note")})
    return {"models": models, "precision": settings.precision}
