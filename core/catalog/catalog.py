"""The model catalog: what a model name means now, and which models the service offers.

One :class:`ModelCatalog` per process (the API's services, a worker's engine
cache, one ``srgan`` command) over the registry of ``Settings.resolved_models_dir``
(``core.catalog.registry``, a file store that knows nothing of settings):

- :meth:`ModelCatalog.resolve`: a spec (what a user types: ``None`` for the
  configured default, a registry name for its active version, ``name:version``,
  or a path) -> :class:`ModelRef`. Names not in the registry fall back to the
  configured default file, then to the shipped files. The one resolve of the
  project; a catalog made with ``follow=True`` (a worker's) keeps what it
  resolved until the generation counter on Redis moves or ``model_refresh_s``
  passes (``core.catalog.announce``), so a job costs one Redis ``GET``.
- :meth:`ModelCatalog.blend`: what a job's network is: a model and, for a
  ``detail`` request, its detail base (:class:`Blend`; ``core.catalog.load``
  builds the engine from it).
- :meth:`ModelCatalog.offered`: every version jobs may ask for, the default
  marked; cached until the registry changes (:meth:`core.catalog.registry.Registry.fingerprint`),
  so a request reads no card.
- :meth:`ModelCatalog.seed`: put the shipped models into the registry; an
  explicit start-up step (API lifespan, worker start, ``srgan deploy``).
  Nothing else here writes: reads never seed. Publishing and rolling back are
  ``core.catalog.publish``.

Nothing here imports the engine (the API reads the catalog).
``GET /v1/models`` and ``srgan models --json`` both print :meth:`ModelCatalog.listing`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from core.catalog import store_sync
from core.catalog.announce import generation_or
from core.catalog.registry import ModelVersion, Registry, find_card, read_card
from core.catalog.shipped import WEIGHTS_DIR, is_path, shipped_file, shipped_models
from core.settings import Settings
from model.contract import ModelContract, Tiling
from model.errors import InvalidParameter, ModelError
from model.images import JPEG_QUALITY_KEY
from model.knobs import round_denoise, round_detail
from model.strength import AUTO, AutoThresholds, Strength, auto_denoise, noise_sigma, thresholds_of

if TYPE_CHECKING:
    import redis
    from PIL import Image

log = logging.getLogger(__name__)

Source = Literal["registry", "file"]


def _round(value: float) -> float:
    return round(float(value), 4)


def card_fields(card: dict[str, Any]) -> dict[str, Any]:
    """What a :class:`ModelRef` reads off a model card beside its registry fields, the same for a registry version
    and a file: how int8 was measured, ``denoise auto``'s thresholds."""
    return {"int8": card.get("int8") if isinstance(card.get("int8"), dict) else None,
            "denoise_auto": thresholds_of(card.get("denoise_auto"))}


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
    tiling: Tiling = Tiling()
    """What the model needs from the tiling (its contract's; the default: nothing, the configured tiling)."""
    int8: dict[str, Any] | None = None
    """How the card says int8 was measured for this version (``model.int8``'s scheme, Set5/Set14 cost)."""
    denoise_auto: AutoThresholds = AUTO
    """``denoise auto``'s thresholds for this model (its card's ``denoise_auto``, else those fitted on realworld_x4)."""

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}" if self.version else self.name

    @property
    def spec(self) -> str:
        """What :meth:`ModelCatalog.resolve` takes to find this version again: its ref, or a file's path."""
        return self.ref if self.source == "registry" else str(self.path)

    @classmethod
    def from_version(cls, v: ModelVersion) -> ModelRef:
        return cls(name=v.name, version=v.version, scale=v.scale, path=v.path, active=v.active, metrics=v.metrics,
                   source="registry", published_at=v.published_at, sha256=v.card.get("sha256"),
                   detail_base=v.detail_base, denoise_base=v.denoise_base, tiling=v.tiling,
                   **card_fields(v.card))

    def to_json(self) -> dict[str, Any]:
        """What ``GET /v1/models`` and ``srgan models --json`` show of one version (metrics to 4 decimals)."""
        return {"name": self.name, "version": self.version, "ref": self.ref, "scale": self.scale,
                "active": self.active, "default": self.default,
                "metrics": {k: _round(v) for k, v in self.metrics.items()}, "source": self.source,
                "published_at": self.published_at, "sha256": self.sha256, "detail_base": self.detail_base,
                "denoise_base": self.denoise_base,
                "tiling": self.tiling.to_json() if self.tiling != Tiling() else None, "int8": self.int8}


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


@dataclass(frozen=True)
class Blend:
    """What a job's network is: ``target`` (the model asked for), blended for ``detail`` with its PSNR model
    ``base`` and for ``denoise`` with its clean model ``clean`` (and, with both knobs, ``clean``'s PSNR model
    ``clean_base``): the bilinear blend of up to four models of one family (``model.interpolate``)."""

    target: ModelRef
    base: ModelRef | None = None
    detail: float | None = None
    denoise: Strength | None = None
    clean: ModelRef | None = None
    clean_base: ModelRef | None = None

    def parts(self) -> list[tuple[ModelRef, float]]:
        """The models and their weights (each > 0, adding up to 1; the target last when it takes part)."""
        t = 1.0 if self.detail is None else self.detail
        n = 1.0 if self.denoise is None else self.denoise.value
        corners = [(self.clean_base, (1 - t) * (1 - n)), (self.clean, t * (1 - n)), (self.base, (1 - t) * n),
                   (self.target, t * n)]
        return [(m, round(w, 6)) for m, w in corners if m is not None and w > 1e-9]

    def describe(self) -> dict[str, Any]:
        """The job record's and the result's account of the blend (empty when no knob was asked)."""
        out: dict[str, Any] = {}
        if self.detail is not None:
            out.update(detail=self.detail, detail_base=self.base.ref if self.base else None,
                       detail_target=self.target.ref)
        if self.denoise is not None:
            out.update(denoise=self.denoise.to_json(), denoise_base=self.clean.ref if self.clean else None)
        return out


def choose_denoise(target: ModelRef, requested: float | str | None, img: Image.Image) -> Strength | None:
    """The denoise strength a request for ``target`` runs at on the decoded upload ``img``.

    ``requested``: a number 0..1 (rounded to 0.05), or ``auto``/None: estimated from the upload's JPEG tables and
    noise (``model.strength``; a clean image gets 0, which is the clean model itself). A model without denoise
    control runs as it is under ``auto`` (None) and refuses a number (``InvalidParameter``).
    """
    if requested is None or requested == "auto":
        if not target.denoise_base:
            return None
        pixels = np.asarray(img.convert("RGB"))
        strength = auto_denoise(img.info.get(JPEG_QUALITY_KEY), noise_sigma(pixels), target.denoise_auto)
        return Strength(round_denoise(strength.value), f"auto: {strength.reason}")
    if isinstance(requested, str):
        try:
            requested = float(requested)
        except ValueError:
            raise InvalidParameter(f"denoise must be a number between 0 and 1 or auto, got {requested!r}") from None
    require_denoise_base(target)
    return Strength(round_denoise(requested), "asked")


def family_of(name: str) -> str | None:
    """The family a model name says it belongs to: ``realworld`` for ``realworld_x2`` and ``realworld_x4`` (a name
    ending in ``_x`` and its native scale), else None. A job may name the family: :meth:`ModelCatalog.select` then
    runs its member for the job's scale (:func:`by_scale` among the family; no scale asked: its largest)."""
    stem, sep, scale = name.rpartition("_x")
    return stem if sep and stem and scale.isdigit() else None


def by_scale(default: ModelRef, offered: list[ModelRef], scale: float | None) -> ModelRef:
    """The model a job naming none runs to reach ``scale`` (None: ``default``, the configured default).

    The smallest native scale that reaches it, among ``default`` and the active versions: the least work, and
    its output is then only resampled down (antialiased, ``model.images.resample``), never enlarged by the
    filter; on a tie the default, else a member of the default's family (:func:`family_of`: srresnet_x4's x2 is
    srresnet_x2, not realworld_x2), else one without denoise control (a clean model before a real-world one), else
    the first offered. When none reaches it (x6 with only x4 models), the
    largest, whose output is then resampled up. A model of unknown scale is not a candidate.
    """
    if scale is None:
        return default
    candidates = [m for m in [default, *offered] if m.scale and (m is default or m.active)]
    if not candidates:
        return default
    family = family_of(default.name)
    kin = [m for m in candidates if m is default or (family is not None and family_of(m.name) == family)]
    rest = [m for m in candidates if all(m is not k for k in kin)]
    candidates = kin + sorted(rest, key=lambda m: m.denoise_base is not None)  # ties: default, family, clean ones
    reaching = [m for m in candidates if m.scale is not None and m.scale >= scale]
    if reaching:
        return min(reaching, key=lambda m: m.scale or 0)  # min and max keep the first of equals
    return max(candidates, key=lambda m: m.scale or 0)


class ModelCatalog:
    """The models of ``settings``' registry, the configured default and the shipped files."""

    def __init__(self, settings: Settings, *, weights_dir: Path = WEIGHTS_DIR, follow: bool = False,
                 client: redis.Redis | None = None) -> None:
        """``follow``: keep resolutions until ``client``'s generation counter moves (without ``client``: until
        ``model_refresh_s`` passes), syncing the registry from the object store first when there is one."""
        self.settings = settings
        self.registry = Registry(settings.resolved_models_dir)
        self.weights_dir = Path(weights_dir)
        self.follow = follow
        self.client = client
        self._lock = threading.Lock()
        self._files: dict[tuple[str, int, int], ModelRef] = {}
        self._offered: tuple[tuple[Any, ...], list[ModelRef]] | None = None
        self._resolve_lock = threading.RLock()
        self._resolved: dict[str | None, ModelRef] = {}
        self._generation: int | None = None
        self._checked_at = float("-inf")

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
        contract = ModelContract.read(path)
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
            tiling=contract.tiling if contract else Tiling(),
            **card_fields(card),
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
        shipped files. Nothing is written (but a following catalog may sync
        the registry from the object store: :meth:`_forget_stale_resolutions`).

        Raises:
            ModelError: nothing matches; the message says what exists.
        """
        if not self.follow:
            return self._lookup(spec)
        with self._resolve_lock:
            self._forget_stale_resolutions()
            info = self._resolved.get(spec)
            if info is None:
                info = self._resolved[spec] = self._lookup(spec)
            return info

    def _forget_stale_resolutions(self) -> None:
        current = self._generation if self.client is None else generation_or(self.client, self._generation)
        now = time.monotonic()
        if current != self._generation or now - self._checked_at >= self.settings.model_refresh_s:
            if self._resolved and current != self._generation:
                log.info("model generation %s -> %s: re-reading the active versions", self._generation, current)
            if self.settings.uses_s3:
                try:
                    store_sync.pull(self.settings)
                except Exception as exc:  # noqa: BLE001 - the registry here still serves; try again next time
                    log.warning("cannot sync the model registry from the store: %s", exc)
                    current = self._generation  # so the next job tries again
            self._resolved.clear()
            self._generation, self._checked_at = current, now

    def blend(self, spec: str | None, detail: float | None = None, denoise: Strength | None = None) -> Blend:
        """The network a job asking for ``spec`` (``detail``, ``denoise``) runs: the model and, with ``detail``, its
        detail base; with ``denoise``, its clean model (and that one's detail base when both are given).

        Raises ``InvalidParameter`` for a bad ``detail`` or a model without
        detail or denoise control, ``ModelError`` when a model is missing.
        """
        with self._resolve_lock:  # every part from one generation
            target = self.resolve(spec)
            base = clean = clean_base = None
            if detail is not None:
                detail = round_detail(detail)
                base = self.resolve(require_detail_base(target))
            if denoise is not None:
                clean = self.resolve(require_denoise_base(target))
                if detail is not None:
                    clean_base = self.resolve(require_detail_base(clean))
            return Blend(target, base, detail, denoise, clean, clean_base)

    def _lookup(self, spec: str | None) -> ModelRef:
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
        # a registry not seeded (a local srgan upscale writes none): the shipped files themselves, so that a job
        # asking x2 finds srresnet_x2 there as it does in the service
        named = {m.name for m in offered}
        offered += [self.describe_file(path) for name in shipped_models(self.weights_dir)
                    if name not in named and (path := shipped_file(name, self.weights_dir)) is not None]
        return [replace(m, default=m.name == default.name and m.active) for m in offered]

    def select(self, *, model: str | None, scale: float | None, detail: bool = False,
               denoise: bool = False) -> ModelRef:
        """The model for a job asking for ``model`` (``name`` or ``name:version``) and/or needing ``scale``.

        A named model is the one (the worker resamples its output to the asked size). With no model named,
        :meth:`by_scale` picks among the active ones; a family named (``realworld``, :func:`family_of`), among its
        members. With ``detail``, the model's detail base must be offered
        too; with ``denoise`` (a strength asked for, not ``auto``), its denoise base.

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

    def spec_for(self, model: str | None, scale: float | None) -> str | None:
        """What :meth:`resolve` and :meth:`blend` take for a local run asking for ``model`` (a name, ``name:version``,
        a family's name or a path; None: the default) at ``scale`` (None: the model's own): the model
        :meth:`select` picks where the choice is the catalog's (no model or a family named), else ``model``."""
        if model is None:
            if scale is None:
                return None
            chosen = self.select(model=None, scale=scale)
            return None if chosen.default else chosen.spec
        offered = self.offered()
        if ":" not in model and all(m.name != model for m in offered) and \
                any(family_of(m.name) == model for m in offered):
            return self._pick(offered, model, scale).spec
        return model

    def _pick(self, offered: list[ModelRef], model: str | None, scale: float | None) -> ModelRef:
        if model:
            name, _, version = model.partition(":")
            matches = [m for m in offered if m.name == name and (m.version == version if version else m.active)]
            members = [m for m in offered if m.active and family_of(m.name) == name] if not version else []
            if not matches and members:  # a family's name: its member for the scale
                return by_scale(max(members, key=lambda m: m.scale or 0), members, scale)
            if not matches:
                listed = ", ".join(m.ref + (" (active)" if m.active and m.source == "registry" else "")
                                   for m in offered)
                raise InvalidParameter(f"unknown model {model!r}; offered: {listed}")
            return matches[0]
        default = next((m for m in offered if m.default), None)
        if default is None:
            default = self.resolve(None)
        return by_scale(default, offered, scale)

    def listing(self, engines: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """What ``GET /v1/models`` and ``srgan models --json`` answer: :meth:`offered`, each with the precision a
        worker last loaded it in (``engines``, from ``core.catalog.announce.loaded_engines``), and the configured
        precision. Raises ModelError when there is no model."""
        models = []
        for m in self.offered():
            engine = engines.get(m.ref) or {}
            models.append({**m.to_json(), "precision": engine.get("precision"),
                           "precision_note": engine.get("precision_note")})
        return {"models": models, "precision": self.settings.precision}
