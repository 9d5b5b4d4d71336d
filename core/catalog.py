"""The model catalog: what a model name means, which models the service offers, and publishing one.

One :class:`ModelCatalog` per process (the API's services, a worker's engine
cache, one ``srgan`` command) over the registry of ``Settings.resolved_models_dir``
(``model.registry``, a file store that knows nothing of settings):

- :meth:`ModelCatalog.resolve`: a spec (what a user types: ``None`` for the
  configured default, a registry name for its active version, ``name:version``,
  or a path) -> :class:`ModelRef`. Names not in the registry fall back to the
  configured default file, then to the shipped files.
- :meth:`ModelCatalog.offered`: every version jobs may ask for, the default
  marked; cached until the registry changes (:meth:`model.registry.Registry.fingerprint`),
  so a request reads no card.
- :meth:`ModelCatalog.publish`: check a file, compare its quality with the
  active version, copy it in, activate it, tell the workers (``srgan deploy``
  and ``srgan export --publish``). With an object store it first syncs the
  registry from the store's and pushes the new version there before telling
  the workers (``core.registry_sync``).
- :meth:`ModelCatalog.seed`: put the shipped models into the registry; an
  explicit start-up step (API lifespan, worker start, ``srgan deploy``).
  Nothing else writes: reads never seed.

The engine (ONNX Runtime) comes in only through the :class:`FileInspector`
given for :meth:`publish` (the API may not import it).
``GET /v1/models`` and ``srgan models --json`` both print :meth:`ModelCatalog.listing`.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Protocol

from core import registry_sync
from core.settings import Settings
from model.contract import ModelContract, load_proto
from model.errors import InvalidParameter, ModelError
from model.locate import WEIGHTS_DIR, is_path, shipped_file, shipped_models
from model.registry import DeployRefused, FileCheck, ModelVersion, Registry, find_card, read_card

log = logging.getLogger(__name__)

Source = Literal["registry", "file"]

QUALITY_TOLERANCE_DB = 0.2
"""How much lower a candidate's PSNR-Y may be than the active version's before ``publish`` refuses it."""


def _round(value: float) -> float:
    return round(float(value), 4)


@dataclass(frozen=True)
class ModelRef:
    """One model version as the catalog knows it: where its file is, its scale, card metrics and detail base."""

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
    denoise_base: str | None = None
    """The clean model this real-world model interpolates with for ``denoise`` (None: no denoise control)."""

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}" if self.version else self.name

    @classmethod
    def from_version(cls, v: ModelVersion) -> ModelRef:
        return cls(name=v.name, version=v.version, scale=v.scale, path=v.path, active=v.active, metrics=v.metrics,
                   source="registry", published_at=v.published_at, sha256=v.card.get("sha256"),
                   detail_base=v.detail_base, denoise_base=v.denoise_base)

    def to_json(self) -> dict[str, Any]:
        """What ``GET /v1/models`` and ``srgan models --json`` show of one version (metrics to 4 decimals)."""
        return {"name": self.name, "version": self.version, "ref": self.ref, "scale": self.scale,
                "active": self.active, "default": self.default,
                "metrics": {k: _round(v) for k, v in self.metrics.items()}, "source": self.source,
                "published_at": self.published_at, "sha256": self.sha256, "detail_base": self.detail_base,
                "denoise_base": self.denoise_base}


_NEEDS = MappingProxyType({  # read-only: a constant, not module state
    "detail": "a GAN model whose card names its PSNR model as detail_base (e.g. srgan_x4)",
    "denoise": "a real-world restoration model whose card names its clean model as denoise_base (e.g. realworld_x4)",
})


def require_base(info: ModelRef, knob: Literal["detail", "denoise"]) -> str:
    """The model ``info`` interpolates with for ``knob`` (its card's ``detail_base`` or ``denoise_base``).

    Raises:
        InvalidParameter: ``info`` has no such control.
    """
    base = info.detail_base if knob == "detail" else info.denoise_base
    if not base:
        raise InvalidParameter(f"model {info.ref} has no {knob} control: {knob} needs {_NEEDS[knob]}")
    return base


def require_detail_base(info: ModelRef) -> str:
    return require_base(info, "detail")


def require_denoise_base(info: ModelRef) -> str:
    return require_base(info, "denoise")


class FileInspector(Protocol):
    """What :meth:`ModelCatalog.publish` runs a candidate file through (``model.deploy.EngineInspector``:
    the engine; passed in, so that the API, which never publishes, never imports the engine)."""

    def check(self, path: Path, *, card: dict[str, Any] | None = None, scale: int | None = None) -> FileCheck:
        """The file's checks and probe; raises DeployRefused."""
        ...

    def measure(self, path: Path, folder: Path) -> dict[str, float]:
        """``<tag>_psnr_y``/``<tag>_ssim_y`` of the file on the HR images under ``folder``."""
        ...


@dataclass(frozen=True)
class Published:
    """What :meth:`ModelCatalog.publish` did, for the user."""

    version: ModelVersion
    before: str | None
    """The active version before (None: the model was new)."""
    announced: str
    """What the workers were told (or why not)."""
    notes: tuple[str, ...] = ()
    """Warnings and the quality comparison, one line each."""


class ModelCatalog:
    """The models of ``settings``' registry, the configured default and the shipped files."""

    def __init__(self, settings: Settings, *, weights_dir: Path = WEIGHTS_DIR,
                 inspector: FileInspector | None = None) -> None:
        self.settings = settings
        self.inspector = inspector
        self.registry = Registry(settings.resolved_models_dir)
        self.weights_dir = Path(weights_dir)
        self._lock = threading.Lock()
        self._files: dict[tuple[str, int, int], ModelRef] = {}
        self._offered: tuple[tuple[Any, ...], list[ModelRef]] | None = None

    # --- start-up -----------------------------------------------------------------
    def seed(self) -> list[ModelVersion]:
        """Put the shipped models the registry lacks into it (a read-only registry is only logged)."""
        root = self.registry.root
        try:
            added = self.registry.seed(self.weights_dir)
        except (OSError, ModelError) as exc:
            log.warning("could not seed the registry %s with the shipped models: %s", root, exc)
            return []
        for v in added:
            log.info("registry %s: added the shipped model %s%s", root, v.ref, " (active)" if v.active else "")
        return added

    # --- reading ------------------------------------------------------------------
    def describe_file(self, path: Path) -> ModelRef:
        """Name, version and scale stored in an ONNX file's contract (cached per file version)."""
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key in self._files:
                return self._files[key]
        contract = ModelContract.of_proto(load_proto(path))
        card_path = find_card(path)
        try:
            card = read_card(card_path) if card_path else {}
        except ModelError:
            card = {}
        info = ModelRef(
            name=(contract.name if contract and contract.name else path.stem),
            version=contract.version if contract else "",
            scale=contract.scale if contract else None,
            path=path,
            metrics=dict(contract.metrics) if contract else {},
            detail_base=str(card["detail_base"]) if card.get("detail_base") else None,
            denoise_base=str(card["denoise_base"]) if card.get("denoise_base") else None,
        )
        with self._lock:
            self._files[key] = info
        return info

    def _file(self, spec: str) -> ModelRef:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        return self.describe_file(path)

    def resolve(self, spec: str | None = None) -> ModelRef:
        """The model ``spec`` names now: ``None`` (the configured default), a path, ``name`` or ``name:version``.

        A name is looked up in the registry (its active version), then
        compared with a configured default file's contract, then among the
        shipped files. Nothing is written.

        Raises:
            ModelError: nothing matches; the message says what exists.
        """
        spec = spec or self.settings.model
        if is_path(spec):
            return self._file(spec)
        name, _, version = spec.partition(":")
        if self.registry.has(name):
            return ModelRef.from_version(self.registry.get(name, version or None))
        default = self.settings.model
        if spec != default and is_path(default):
            info = self._file(default)
            if info.name == name and version in ("", info.version):
                return info
        in_registry = f"the registry {self.registry.root} has {', '.join(self.registry.names()) or 'no models'}"
        shipped = shipped_file(name, self.weights_dir)
        if version or shipped is None:
            names = ", ".join(shipped_models(self.weights_dir)) or "none"
            raise ModelError(f"unknown model {spec!r}: not a .onnx file, not in the registry and not a shipped "
                             f"model ({in_registry}; shipped: {names})")
        return self.describe_file(shipped)

    def offered(self) -> list[ModelRef]:
        """Every version jobs may ask for, the configured default marked; re-read only when the registry changed.

        Raises:
            ModelError: no model at all.
        """
        default_path = Path(self.settings.model).expanduser() if is_path(self.settings.model) else None
        stamp = (self.registry.fingerprint(),
                 default_path.stat().st_mtime_ns if default_path and default_path.is_file() else None)
        with self._lock:
            cached = self._offered
        if cached is not None and cached[0] == stamp:
            return cached[1]
        offered = self._read_offered()
        with self._lock:
            self._offered = (stamp, offered)
        return offered

    def _read_offered(self) -> list[ModelRef]:
        offered = [ModelRef.from_version(v) for v in self.registry.list()]
        try:
            default = self.resolve(None)
        except ModelError:
            if not offered:
                raise
            log.warning("the configured default model %r is not available", self.settings.model)
            return offered
        if default.source == "file":
            offered.insert(0, default)
        return [replace(m, default=m.name == default.name and m.active) for m in offered]

    def select(self, *, model: str | None, scale: int | None, detail: bool = False,
               denoise: bool = False) -> ModelRef:
        """The model for a job asking for ``model`` (``name`` or ``name:version``) and/or ``scale``.

        A model made for ``scale`` is preferred among the active ones when no
        model is named; otherwise the worker resamples the model's output to the
        requested scale. With ``detail``, the model's detail base must be offered too; with ``denoise`` (a strength
        asked for, not ``auto``), its denoise base.

        Raises:
            InvalidParameter: no offered model matches; the message lists what is offered.
            ModelError: no model is named and the configured default is missing.
        """
        offered = self.offered()
        chosen = self._pick(offered, model, scale)
        if detail:
            self._pick(offered, require_detail_base(chosen), None)
        if denoise:
            clean = self._pick(offered, require_denoise_base(chosen), None)
            if detail:
                self._pick(offered, require_detail_base(clean), None)
        return chosen

    def _pick(self, offered: list[ModelRef], model: str | None, scale: int | None) -> ModelRef:
        if model:
            name, _, version = model.partition(":")
            matches = [m for m in offered if m.name == name and (m.version == version if version else m.active)]
            if not matches:
                listed = ", ".join(m.ref + (" (active)" if m.active and m.source == "registry" else "")
                                   for m in offered)
                raise InvalidParameter(f"unknown model {model!r}; offered: {listed}")
            return matches[0]
        default = next((m for m in offered if m.default), None)
        if default is None:
            default = self.resolve(None)
        if scale is not None and default.scale != scale:
            native = [m for m in offered if m.active and m.scale == scale]
            if native:
                return native[0]
        return default

    def listing(self, engines: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """What ``GET /v1/models`` and ``srgan models --json`` answer: :meth:`offered`, each with the precision a
        worker last loaded it in (``engines``, from ``core.model_updates.loaded_engines``), and the configured
        precision. Raises ModelError when there is no model."""
        models = []
        for m in self.offered():
            engine = engines.get(m.ref) or {}
            models.append({**m.to_json(), "precision": engine.get("precision"),
                           "precision_note": engine.get("precision_note")})
        return {"models": models, "precision": self.settings.precision}

    # --- publishing -------------------------------------------------------------------
    def publish(
        self,
        file: Path,
        name: str,
        *,
        version: str | None = None,
        card: dict[str, Any] | None = None,
        scale: int | None = None,
        layout: Literal["NHWC", "NCHW"] | None = None,
        value_range: tuple[float, float] | None = None,
        activate: bool = True,
        eval_data: Path | None = None,
        force: bool = False,
        tolerance_db: float = QUALITY_TOLERANCE_DB,
        source: str | None = None,
    ) -> Published:
        """Check ``file``, compare it with the active version, copy it in as ``name``, activate it, tell the workers.

        ``card`` defaults to the one beside the file. ``layout``/``value_range``
        declare the contract of a file that lacks one (a copy with the contract
        stored is published). The quality gate: the candidate's PSNR-Y on a
        bench set (``eval_data``, measured now for both; else the card metrics
        both versions share) must not be lower than the active version's by
        more than ``tolerance_db``, unless ``force``.

        Raises:
            DeployRefused: a check failed or the candidate is worse; the registry is unchanged.
        """
        if self.inspector is None:
            raise DeployRefused("this catalog cannot publish: it was made without a FileInspector "
                                "(model.deploy.EngineInspector)")
        file = Path(file)
        if card is None:
            found = find_card(file)
            card = read_card(found) if found else {}
        card = dict(card)
        notes: list[str] = []
        given = file
        try:
            registry_sync.pull(self.settings)  # with an object store: start from the registry every host shares
        except OSError as exc:
            raise DeployRefused(f"the object store failed: {exc}") from exc
        before = self.registry.active_version(name)
        with tempfile.TemporaryDirectory(prefix="srgan-publish-") as tmp:
            if layout is not None or value_range is not None:
                file = self._declare(file, Path(tmp), card, scale, layout, value_range)
                card.pop("sha256", None)
                notes.append(f"declared {layout or 'the inferred layout'}, values {value_range or (0, 255)} "
                             "in the published copy's contract")
            checked = self.inspector.check(file, card=card, scale=scale)
            exported_as = card.get("name") or (checked.contract.name if checked.contract else None)
            if exported_as and exported_as != name:
                notes.insert(0, f"warning: {given.name} was exported as {exported_as!r}; publishing it as {name!r} "
                                "(the card keeps the exported name under registry.exported_as)")
            if not card.get("metrics") and checked.contract is not None and checked.contract.metrics:
                card["metrics"] = dict(checked.contract.metrics)
            if eval_data is not None:
                card["metrics"] = {**(card.get("metrics") or {}), **self._measure(file, eval_data)}
            if activate and before is not None:
                notes.append(self._quality_gate(name, before, card, eval_data, force, tolerance_db))
            published = self.registry.publish(file, name=name, version=version, card=card, checked=checked,
                                              activate=activate, source=source or str(Path(file).resolve()))
        try:
            registry_sync.push(self.settings, name)  # before the announcement: workers pull what it names
        except OSError as exc:
            raise DeployRefused(f"{published.ref} is published here but not in the object store ({exc}); "
                                f"run the deploy again") from exc
        if not activate:
            return Published(published, before, "not activated", tuple(notes))
        from core.model_updates import announce_change

        return Published(published, before, announce_change(self.settings, name, published.version), tuple(notes))

    def rollback(self, name: str, to: str | None = None) -> tuple[str | None, str, str]:
        """Make the previous (or ``to``) version of ``name`` active, through the store as :meth:`publish` does:
        ``(version before, version now, what the workers were told)``.

        Raises ``ModelError`` (nothing to roll back to, unknown version) and ``OSError`` (the object store).
        """
        from core.model_updates import announce_change

        registry_sync.pull(self.settings)  # with an object store: start from the registry every host shares
        before = self.registry.active_version(name)
        now = self.registry.rollback(name, to=to)
        registry_sync.push(self.settings, name)  # before the announcement: workers pull what it names
        return before, now.version, announce_change(self.settings, name, now.version)

    @staticmethod
    def _declare(file: Path, tmp: Path, card: dict[str, Any], scale: int | None,
                 layout: Literal["NHWC", "NCHW"] | None, value_range: tuple[float, float] | None) -> Path:
        import onnx

        from model.contract import infer_layout

        proto = load_proto(file)
        old = ModelContract.of_proto(proto)
        declared = scale or card.get("scale") or (old.scale if old else None)
        if declared is None:
            raise DeployRefused(f"{file} declares no scale (no srgan contract, no card); pass --scale")
        dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
        base = old or ModelContract(scale=int(declared), input_name=proto.graph.input[0].name,
                                    output_name=proto.graph.output[0].name, layout=infer_layout(dims))
        try:
            contract = replace(base, scale=int(declared), layout=layout or base.layout,
                               value_range=value_range or base.value_range)
        except ValueError as exc:
            raise DeployRefused(str(exc)) from None
        contract.store_in(proto)
        out = tmp / file.name
        onnx.save(proto, str(out))
        return out

    def _measure(self, file: Path, folder: Path) -> dict[str, float]:
        assert self.inspector is not None
        try:
            return self.inspector.measure(file, folder)
        except (OSError, ModelError) as exc:
            raise DeployRefused(f"cannot measure {file} on {folder}: {exc}") from exc

    def _quality_gate(self, name: str, before: str, card: dict[str, Any], eval_data: Path | None, force: bool,
                      tolerance_db: float) -> str:
        """A line comparing the candidate with the active version; raises DeployRefused when it is worse."""
        active = self.registry.get(name, before)
        candidate = {k: float(v) for k, v in (card.get("metrics") or {}).items()}
        if eval_data is not None:
            from model.quality import metric_tag

            keys = [f"{metric_tag(eval_data)}_psnr_y"]
            theirs = active.metrics if keys[0] in active.metrics else self._measure(active.path, eval_data)
        else:
            theirs = active.metrics
            keys = sorted(k for k in candidate if k.endswith("_psnr_y") and "bicubic" not in k and k in theirs)
        if not keys:
            return (f"quality not compared: the candidate and {active.ref} share no measured bench set; "
                    "pass --eval-data FOLDER to measure both")
        worse = [(k, candidate[k], theirs[k]) for k in keys if candidate[k] < theirs[k] - tolerance_db]
        lines = ", ".join(f"{k} {candidate[k]:.2f} dB vs {theirs[k]:.2f}" for k in keys)
        if worse and not force:
            raise DeployRefused(f"the candidate is worse than the active {active.ref} by more than "
                                f"{tolerance_db:g} dB ({lines}); pass --force to publish it anyway")
        return f"quality against the active {active.ref}: {lines}" + (" (worse; --force)" if worse else "")
