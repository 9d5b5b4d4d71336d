"""Publishing a model version and rolling back: the one path by which a version becomes active.

:class:`Publisher` serves ``srgan deploy``, ``srgan export --publish`` and
``srgan rollback`` (and, later, models imported from other formats): every
change to which version is active goes through :meth:`Publisher.publish` or
:meth:`Publisher.rollback`, each of which

1. syncs this host's registry from the object store's (``core.catalog.store_sync``; none with a folder store),
2. checks the candidate (:class:`FileInspector`: ``core.catalog.checks.EngineInspector`` runs it through the
   engine) and compares its quality with the active version (:meth:`Publisher._quality_gate`),
3. copies it into the registry and moves the active pointer (``core.catalog.registry``),
4. pushes the change to the store, then
5. announces it on Redis so workers load it for their next job (``core.catalog.announce``).

The engine comes in only through the inspector, so this module imports no ONNX Runtime.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from core.catalog import store_sync
from core.catalog.announce import announce_change
from core.catalog.catalog import ModelCatalog
from core.catalog.registry import DeployRefused, FileCheck, ModelVersion, find_card, read_card
from model.contract import ModelContract, Tiling, infer_layout, load_proto
from model.errors import ModelError
from model.quality import metric_tag

QUALITY_TOLERANCE_DB = 0.2
"""How much lower a candidate's PSNR-Y may be than the active version's before ``publish`` refuses it."""

# The gate of a GAN model (a card that names a detail_base): it is for texture, so PSNR alone would refuse
# every better GAN model and pass a noisy one. Its NIQE is compared with the version it replaces, and
# floors keep it faithful.
GAN_NIQE_MARGIN = 0.2
"""How much higher (worse) a GAN candidate's NIQE may be than the active version's: the noise of NIQE
between two fine-tunes of one network on Set5/Set14 (about 5% of srgan_x4's 4.36 on Set14)."""
GAN_MAX_COLOR_SHIFT = 3.0
"""Largest channel-mean shift (levels) a GAN candidate may have on any bench image (srgan_x4: 1.33)."""
GAN_FLAT_MARGIN = 0.5
"""How much more error (levels of Y) a GAN candidate may add on flat regions than the active version."""


class FileInspector(Protocol):
    """What :meth:`Publisher.publish` runs a candidate file through (``core.catalog.checks.EngineInspector``:
    the engine; passed in, so that the API, which never publishes, never imports the engine)."""

    def check(self, path: Path, *, card: dict[str, Any] | None = None, scale: int | None = None) -> FileCheck:
        """The file's checks and probe; raises DeployRefused."""
        ...

    def measure(self, path: Path, folder: Path, *, perceptual: bool = False) -> dict[str, float]:
        """``<tag>_psnr_y``/``<tag>_ssim_y`` of the file on the HR images under ``folder``; with ``perceptual``
        also ``<tag>_bicubic_psnr_y``, ``<tag>_niqe``, ``<tag>_max_color_shift`` and ``<tag>_flat_error``."""
        ...


@dataclass(frozen=True)
class Published:
    """What :meth:`Publisher.publish` did, for the user."""

    version: ModelVersion
    before: str | None
    """The active version before (None: the model was new)."""
    announced: str
    """What the workers were told (or why not)."""
    notes: tuple[str, ...] = ()
    """Warnings and the quality comparison, one line each."""


class Publisher:
    """Publishes to and rolls back ``catalog``'s registry; ``inspector`` checks and measures candidate files."""

    def __init__(self, catalog: ModelCatalog, inspector: FileInspector | None = None) -> None:
        self.catalog = catalog
        self.settings = catalog.settings
        self.registry = catalog.registry
        self.inspector = inspector

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
        detail_base: str | None = None,
    ) -> Published:
        """Check ``file``, compare it with the active version, copy it in as ``name``, activate it, tell the workers.

        ``card`` defaults to the one beside the file. ``layout``/``value_range``
        declare the contract of a file that lacks one (a copy with the contract
        stored is published). The quality gate: the candidate's PSNR-Y on a
        bench set (``eval_data``, measured now for both; else the card metrics
        both versions share) must not be lower than the active version's by
        more than ``tolerance_db``, unless ``force``. ``detail_base`` names the PSNR model a GAN model
        blends with for ``detail`` (it replaces the card's; the registry refuses a pair whose networks
        differ), so a retrained GAN model keeps its detail control.

        Raises:
            DeployRefused: a check failed or the candidate is worse; the registry is unchanged.
        """
        if self.inspector is None:
            raise DeployRefused("this publisher cannot publish: it was made without a FileInspector "
                                "(core.catalog.checks.EngineInspector)")
        file = Path(file)
        if card is None:
            found = find_card(file)
            card = read_card(found) if found else {}
        card = dict(card)
        if detail_base:
            card["detail_base"] = detail_base
        notes: list[str] = []
        given = file
        try:
            store_sync.pull(self.settings)  # with an object store: start from the registry every host shares
        except OSError as exc:
            raise DeployRefused(f"the object store failed: {exc}") from exc
        before = self.registry.active_version(name)
        with tempfile.TemporaryDirectory(prefix="srgan-publish-") as tmp:
            tiling = _card_tiling(file, card)
            if layout is not None or value_range is not None or tiling is not None:
                file = self._declare(file, Path(tmp), card, scale, layout, value_range, tiling)
                card.pop("sha256", None)
                if layout is not None or value_range is not None:
                    notes.append(f"declared {layout or 'the inferred layout'}, values {value_range or (0, 255)} "
                                 "in the published copy's contract")
                if tiling is not None:
                    notes.append(f"declared the card's tiling (min_overlap {tiling.min_overlap}, pre_pad "
                                 f"{tiling.pre_pad}) in the published copy's contract")
            checked = self.inspector.check(file, card=card, scale=scale)
            exported_as = card.get("name") or (checked.contract.name if checked.contract else None)
            if exported_as and exported_as != name:
                notes.insert(0, f"warning: {given.name} was exported as {exported_as!r}; publishing it as {name!r} "
                                "(the card keeps the exported name under registry.exported_as)")
            if not card.get("metrics") and checked.contract is not None and checked.contract.metrics:
                card["metrics"] = dict(checked.contract.metrics)
            if eval_data is not None:
                measured = self._measure(file, eval_data, perceptual=bool(card.get("detail_base")))
                card["metrics"] = {**(card.get("metrics") or {}), **measured}
            if activate and before is not None:
                notes.append(self._quality_gate(name, before, card, eval_data, force, tolerance_db))
            published = self.registry.publish(file, name=name, version=version, card=card, checked=checked,
                                              activate=activate, source=source or str(Path(file).resolve()))
        try:
            store_sync.push(self.settings, name)  # before the announcement: workers pull what it names
        except OSError as exc:
            raise DeployRefused(f"{published.ref} is published here but not in the object store ({exc}); "
                                f"run the deploy again") from exc
        if not activate:
            return Published(published, before, "not activated", tuple(notes))
        return Published(published, before, announce_change(self.settings, name, published.version), tuple(notes))

    def rollback(self, name: str, to: str | None = None) -> tuple[str | None, str, str]:
        """Make the previous (or ``to``) version of ``name`` active, through the store as :meth:`publish` does:
        ``(version before, version now, what the workers were told)``.

        Raises ``ModelError`` (nothing to roll back to, unknown version) and ``OSError`` (the object store).
        """
        store_sync.pull(self.settings)  # with an object store: start from the registry every host shares
        before = self.registry.active_version(name)
        now = self.registry.rollback(name, to=to)
        store_sync.push(self.settings, name)  # before the announcement: workers pull what it names
        return before, now.version, announce_change(self.settings, name, now.version)

    @staticmethod
    def _declare(file: Path, tmp: Path, card: dict[str, Any], scale: int | None,
                 layout: Literal["NHWC", "NCHW"] | None, value_range: tuple[float, float] | None,
                 tiling: Tiling | None = None) -> Path:
        import onnx  # start-up: `srgan` loads this module; onnx only to declare a contract

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
                               value_range=value_range or base.value_range, tiling=tiling or base.tiling)
        except ValueError as exc:
            raise DeployRefused(str(exc)) from None
        contract.store_in(proto)
        out = tmp / file.name
        onnx.save(proto, str(out))
        return out

    def _measure(self, file: Path, folder: Path, perceptual: bool = False) -> dict[str, float]:
        assert self.inspector is not None
        try:
            return self.inspector.measure(file, folder, perceptual=perceptual)
        except (OSError, ModelError) as exc:
            raise DeployRefused(f"cannot measure {file} on {folder}: {exc}") from exc

    def _quality_gate(self, name: str, before: str, card: dict[str, Any], eval_data: Path | None, force: bool,
                      tolerance_db: float) -> str:
        """A line comparing the candidate with the active version; raises DeployRefused when it is worse."""
        active = self.registry.get(name, before)
        candidate = {k: float(v) for k, v in (card.get("metrics") or {}).items()}
        if card.get("detail_base"):
            return self._gan_gate(active, candidate, eval_data, force)
        if eval_data is not None:
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

    def _gan_gate(self, active: ModelVersion, candidate: dict[str, float], eval_data: Path | None,
                  force: bool) -> str:
        """The gate of a GAN model: NIQE no worse than ``active``'s beyond GAN_NIQE_MARGIN, PSNR-Y not below
        bicubic's, colour shift within GAN_MAX_COLOR_SHIFT, flat-region error within GAN_FLAT_MARGIN of
        ``active``'s; on ``eval_data`` (measured now) or on the bench sets both cards measured NIQE on."""
        if eval_data is not None:
            tags = [metric_tag(eval_data)]
            theirs = active.metrics
            if f"{tags[0]}_niqe" not in theirs:
                theirs = {**theirs, **self._measure(active.path, eval_data, perceptual=True)}
        else:
            theirs = active.metrics
            tags = sorted(k.removesuffix("_niqe") for k in candidate
                          if k.endswith("_niqe") and not k.endswith(("bicubic_niqe", "hr_niqe")) and k in theirs)
        if not tags:
            return (f"quality not compared: a GAN model is compared on NIQE, and the candidate and {active.ref} "
                    "share no bench set with it measured; pass --eval-data FOLDER to measure both")
        lines, problems = [], []
        for tag in tags:
            niqe, their_niqe = candidate.get(f"{tag}_niqe"), theirs.get(f"{tag}_niqe")
            if niqe is not None and their_niqe is not None:
                lines.append(f"{tag} NIQE {niqe:.2f} vs {their_niqe:.2f}")
                if niqe > their_niqe + GAN_NIQE_MARGIN:
                    problems.append(f"{tag} NIQE {niqe:.2f} is worse than {their_niqe:.2f} by more than "
                                    f"{GAN_NIQE_MARGIN:g}")
            psnr, bicubic = candidate.get(f"{tag}_psnr_y"), candidate.get(f"{tag}_bicubic_psnr_y")
            if psnr is not None and bicubic is not None:
                lines.append(f"PSNR-Y {psnr:.2f} dB (bicubic {bicubic:.2f})")
                if psnr < bicubic:
                    problems.append(f"{tag} PSNR-Y {psnr:.2f} dB is below bicubic's {bicubic:.2f}")
            shift = candidate.get(f"{tag}_max_color_shift")
            if shift is not None:
                lines.append(f"colour shift {shift:.2f}")
                if shift > GAN_MAX_COLOR_SHIFT:
                    problems.append(f"{tag} colour shift {shift:.2f} levels is over {GAN_MAX_COLOR_SHIFT:g}")
            flat, their_flat = candidate.get(f"{tag}_flat_error"), theirs.get(f"{tag}_flat_error")
            if flat is not None and their_flat is not None:
                lines.append(f"flat-region error {flat:.2f} vs {their_flat:.2f}")
                if flat > their_flat + GAN_FLAT_MARGIN:
                    problems.append(f"{tag} flat-region error {flat:.2f} is over {their_flat:.2f} by more than "
                                    f"{GAN_FLAT_MARGIN:g} levels")
        if problems and not force:
            raise DeployRefused(f"the GAN candidate fails the gate against the active {active.ref}: "
                                f"{'; '.join(problems)}; pass --force to publish it anyway")
        return (f"GAN gate against the active {active.ref}: {', '.join(lines)}"
                + (" (fails; --force)" if problems else ""))


def _card_tiling(file: Path, card: dict[str, Any]) -> Tiling | None:
    """The tiling ``card``'s contract states where ``file``'s contract says otherwise (the engine reads the file's:
    the published copy carries the card's), else None.

    Raises:
        DeployRefused: the card's tiling is not valid.
    """
    stated = (card.get("contract") or {}).get("tiling")
    if stated is None:
        return None
    try:
        tiling = Tiling.from_json(stated)
    except (TypeError, ValueError) as exc:
        raise DeployRefused(f"the card's contract.tiling {stated!r} is not valid: {exc}") from None
    contract = ModelContract.of_proto(load_proto(file))
    return None if contract is not None and contract.tiling == tiling else tiling
