"""The model registry: published versions of each model, their cards, and one active version per name.

Layout (``Settings.resolved_models_dir``, a volume in compose)::

    <root>/<name>/<version>/model.onnx   the file, never changed once published
    <root>/<name>/<version>/card.json    scale, architecture, training, metrics, opset, sha256, when published
    <root>/<name>/active.json            the pointer: {"version", "previous": [...], "changed_at"}
    <root>/.lock                         held (flock) while anything above changes

A version appears all at once (written in a hidden folder, then renamed) and
the pointer is replaced atomically (temporary file, fsync, rename), so a
reader sees the old state or the new one, never half of either.
:meth:`Registry.publish` takes the result of a file's check, made before
anything changes (``core.catalog.checks.check_model_file``: a valid ONNX graph, the
engine runs a small image through it, the output is the declared scale, the
sha256 is the card's); a refused file leaves the registry as it was.

Telling the workers is not done here: callers announce a change on Redis
(``core.catalog.announce``). Nothing here imports the engine or ONNX Runtime, so
the API can read the registry.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.catalog.shipped import WEIGHTS_DIR
from model.contract import ModelContract, Tiling, load_proto
from model.errors import ModelError

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
CARD_FILE = "card.json"
POINTER_FILE = "active.json"
HISTORY_LIMIT = 50
SHIPPED = "shipped: "
"""Prefix of ``card["registry"]["source"]`` of the versions seeded from the package's weights."""

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")


class DeployRefused(ModelError):
    """A file failed a check (or the request is impossible); the registry is unchanged."""

    code = "deploy_refused"


@dataclass(frozen=True)
class ModelVersion:
    """One published version: where its file is, its card, and whether it is the active one."""

    name: str
    version: str
    path: Path
    card: dict[str, Any] = field(default_factory=dict)
    active: bool = False

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def scale(self) -> int | None:
        scale = self.card.get("scale")
        return int(scale) if scale is not None else None

    @property
    def metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in (self.card.get("metrics") or {}).items()}

    @property
    def published_at(self) -> str | None:
        return (self.card.get("registry") or {}).get("published_at")

    @property
    def detail_base(self) -> str | None:
        """The PSNR model this one (a GAN fine-tune) interpolates with for ``detail`` (its card's ``detail_base``)."""
        base = self.card.get("detail_base")
        return str(base) if base else None

    @property
    def denoise_base(self) -> str | None:
        """The clean model this one (a real-world restoration fine-tune) interpolates with for ``denoise``."""
        base = self.card.get("denoise_base")
        return str(base) if base else None

    @property
    def tiling(self) -> Tiling:
        """What the model needs from the tiling, as its card's contract states it (``srgan import`` writes it; the
        engine reads the file's contract, which the card mirrors)."""
        return Tiling.from_json((self.card.get("contract") or {}).get("tiling"))

    @property
    def seq(self) -> int:
        return int((self.card.get("registry") or {}).get("seq", 0))


@dataclass(frozen=True)
class FileCheck:
    """What a file's check found out (``core.catalog.checks.check_model_file`` or :func:`check_file`)."""

    sha256: str
    scale: int
    opset: int | None
    contract: ModelContract | None
    probe: str


# --- checks ------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_path_for(model_file: Path) -> Path:
    """Where the card of ``model_file`` is written beside it: ``<stem>.card.json`` (:func:`find_card` looks first)."""
    return model_file.with_name(f"{model_file.stem}.card.json")


def find_card(model_file: Path) -> Path | None:
    """The card beside ``model_file``: ``<stem>.card.json``, ``<stem>.json``, or a ``card.json`` naming it."""
    for candidate in (card_path_for(model_file), model_file.with_suffix(".json")):
        if candidate.is_file():
            return candidate
    shared = model_file.with_name(CARD_FILE)
    if shared.is_file():
        try:
            named = (json.loads(shared.read_text()).get("onnx") or {}).get("file")
        except (OSError, ValueError):
            return shared  # let the caller report it as unreadable
        if named in (None, model_file.name):
            return shared
    return None


def read_card(path: Path) -> dict[str, Any]:
    try:
        card = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DeployRefused(f"cannot read the model card {path}: {exc}") from exc
    if not isinstance(card, dict):
        raise DeployRefused(f"the model card {path} is not a JSON object")
    return card


# --- the registry ---------------------------------------------------------------
def validate_name(kind: str, value: str) -> str:
    if not _NAME.match(value or ""):
        raise DeployRefused(f"bad model {kind} {value!r}: use letters, digits, '_', '.' and '-' "
                            "(not first), at most 100 characters")
    return value


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Registry:
    """The models under ``root``. Reads need no lock; every change holds ``root/.lock``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # --- reading ----------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name))

    def has(self, name: str) -> bool:
        return bool(_NAME.match(name)) and (self.root / name).is_dir() and bool(self._version_dirs(name))

    def _version_dirs(self, name: str) -> list[Path]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        return [p for p in folder.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / MODEL_FILE).is_file()]

    def _pointer(self, name: str) -> dict[str, Any]:
        path = self.root / name / POINTER_FILE
        try:
            pointer = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ModelError(f"the registry's pointer {path} is unreadable: {exc}") from exc
        return pointer if isinstance(pointer, dict) else {}

    def active_version(self, name: str) -> str | None:
        """The active version of ``name`` (None: nothing published, or no version made active)."""
        if not _NAME.match(name):
            return None
        version = self._pointer(name).get("version")
        return str(version) if version else None

    def versions(self, name: str) -> list[ModelVersion]:
        """Published versions of ``name``, oldest first."""
        active = self.active_version(name)
        found = []
        for folder in self._version_dirs(name):
            try:
                card = json.loads((folder / CARD_FILE).read_text())
            except (OSError, ValueError):
                card = {}
            found.append(ModelVersion(name, folder.name, folder / MODEL_FILE, card, folder.name == active))
        return sorted(found, key=lambda v: (v.seq, v.published_at or "", v.version))

    def fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        """Changes whenever a version is published or a pointer moves (stat only, no file is read).

        A version appears by a rename into ``<name>/`` and a pointer is
        replaced by a rename, so each changes its folder's entry list; the
        pointers' own stats are kept too.
        """
        stats: list[tuple[str, int, int]] = []
        for folder in [self.root, *(self.root / n for n in self.names())]:
            for path in (folder, folder / POINTER_FILE):
                try:
                    st = path.stat()
                except OSError:
                    continue
                stats.append((str(path), st.st_mtime_ns, st.st_ino))
        return tuple(stats)

    def list(self) -> list[ModelVersion]:
        return [v for name in self.names() for v in self.versions(name)]

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """A published version; ``version=None`` is the active one. Raises ModelError listing what exists."""
        if version is None:
            version = self.active_version(name)
            if version is None:
                known = ", ".join(self.names()) or "none"
                raise ModelError(f"model {name!r} has no active version in the registry {self.root} "
                                 f"(models: {known})")
        for candidate in self.versions(name):
            if candidate.version == version:
                return candidate
        listed = ", ".join(v.version for v in self.versions(name)) or "none"
        raise ModelError(f"model {name}:{version} is not in the registry {self.root} (versions of {name}: {listed})")

    # --- changing -----------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def publish(
        self,
        file: Path,
        *,
        name: str,
        checked: FileCheck,
        card: dict[str, Any],
        version: str | None = None,
        activate: bool = True,
        source: str | None = None,
    ) -> ModelVersion:
        """Copy ``file`` in as ``name:version`` with its card, and (by default) make it active.

        ``checked`` is what the file's check found (``core.catalog.checks.check_model_file``,
        or :func:`check_file` for the shipped files); the copy must have its
        sha256. ``version`` defaults to the card's or the contract's version
        when that is free, else the next number. Raises :class:`DeployRefused`.
        """
        file = Path(file)
        validate_name("name", name)
        with self._locked():
            taken = {v.version for v in self.versions(name)}
            if version is not None:
                validate_name("version", version)
                if version in taken:
                    raise DeployRefused(f"{name}:{version} is already published; pick another --version "
                                        f"(or `srgan rollback {name} --to {version}` to make it active)")
            else:
                version = self._default_version(card, checked.contract, taken)
            for knob in ("detail", "denoise"):
                self._check_pair(file, name, card, knob)
            new_card = self._card_for(name, version, card, checked, source or str(file))
            folder = self.root / name
            staging = folder / f".incoming-{uuid.uuid4().hex[:8]}"
            staging.mkdir(parents=True)
            try:
                shutil.copyfile(file, staging / MODEL_FILE)
                if sha256_of(staging / MODEL_FILE) != checked.sha256:
                    raise DeployRefused(f"{file} changed while it was being published; try again")
                with open(staging / MODEL_FILE, "rb") as f:
                    os.fsync(f.fileno())
                _write_atomic(staging / CARD_FILE, json.dumps(new_card, indent=2) + "\n")
                os.rename(staging, folder / version)
                _fsync_dir(folder)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            log.info("published %s:%s (%s)", name, version, checked.probe)
            if activate:
                self._set_active(name, version)
        return self.get(name, version)

    def _check_pair(self, file: Path, name: str, card: dict[str, Any], knob: str) -> None:
        """A model whose card names a ``detail_base`` (``denoise_base``) must interpolate with that model's active
        version."""
        base = card.get(f"{knob}_base")
        if not base:
            return
        base_name = str(base).partition(":")[0]
        if base_name == name:
            raise DeployRefused(f"{name} names itself as its {knob}_base")
        if not self.has(base_name) or self.active_version(base_name) is None:
            log.warning("%s names %s_base %s, which is not in the registry yet: %s is checked when used",
                        name, knob, base, knob)
            return
        from model.interpolate import PairMismatch, check_pair  # start-up: onnx, for a detail pair only

        try:
            check_pair(self.get(base_name).path, file)
        except PairMismatch as exc:
            raise DeployRefused(f"{name} cannot serve {knob} with {base}: {exc.message}") from None

    def activate(self, name: str, version: str) -> ModelVersion:
        """Make ``name:version`` (already published) the active version."""
        validate_name("name", name)
        with self._locked():
            self.get(name, version)
            self._set_active(name, version)
        return self.get(name, version)

    def rollback(self, name: str, to: str | None = None) -> ModelVersion:
        """Make the previously active version of ``name`` active again (or ``to``).

        Without history (e.g. the first version ever activated), the version
        published just before the active one is taken.
        """
        validate_name("name", name)
        with self._locked():
            pointer = self._pointer(name)
            current = pointer.get("version")
            if to is None:
                previous = [v for v in pointer.get("previous", []) if v != current]
                published = [v.version for v in self.versions(name)]
                existing = [v for v in previous if v in published]
                if existing:
                    to = existing[-1]
                elif current in published and published.index(current) > 0:
                    to = published[published.index(current) - 1]
                else:
                    raise DeployRefused(f"model {name!r} has no earlier version to roll back to "
                                        f"(versions: {', '.join(published) or 'none'}; active: {current})")
            self.get(name, to)
            history = [v for v in pointer.get("previous", []) if v != to]
            if history and history[-1] == current:
                history.pop()
            self._write_pointer(name, to, history)
        return self.get(name, to)

    def adopt(self, name: str, version: str, staging: Path) -> None:
        """Take a version received from elsewhere (a folder with its model file and card, checked by the
        caller) in as ``name:version``; a version already here is left as it is (versions never change)."""
        validate_name("name", name)
        validate_name("version", version)
        with self._locked():
            target = self.root / name / version
            if (target / MODEL_FILE).is_file():
                shutil.rmtree(staging, ignore_errors=True)
                return
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, target)
            _fsync_dir(target.parent)

    def pointer(self, name: str) -> dict[str, Any]:
        """The active pointer of ``name`` as stored (``{}`` when there is none)."""
        return self._pointer(validate_name("name", name))

    def replace_pointer(self, name: str, pointer: dict[str, Any]) -> None:
        """Make ``pointer`` (another registry's, with a version published here) the active pointer of ``name``."""
        version = str(pointer.get("version") or "")
        with self._locked():
            self.get(name, version)
            body = {"version": version, "previous": [str(v) for v in pointer.get("previous", [])][-HISTORY_LIMIT:],
                    "changed_at": str(pointer.get("changed_at") or _now())}
            _write_atomic(self.root / name / POINTER_FILE, json.dumps(body, indent=2) + "\n")

    def _set_active(self, name: str, version: str) -> None:
        pointer = self._pointer(name)
        current = pointer.get("version")
        history = [v for v in pointer.get("previous", []) if v != version]
        if current and current != version:
            history.append(current)
        self._write_pointer(name, version, history)

    def _write_pointer(self, name: str, version: str, history: builtins.list[str]) -> None:
        body = {"version": version, "previous": history[-HISTORY_LIMIT:], "changed_at": _now()}
        _write_atomic(self.root / name / POINTER_FILE, json.dumps(body, indent=2) + "\n")
        log.info("%s: active version is now %s", name, version)

    @staticmethod
    def _default_version(card: dict[str, Any], contract: ModelContract | None, taken: set[str]) -> str:
        for candidate in (card.get("version"), contract.version if contract else None):
            if candidate and _NAME.match(str(candidate)) and str(candidate) not in taken:
                return str(candidate)
        numbers = [int(v) for v in taken if v.isdigit()]
        return str(max(numbers, default=len(taken)) + 1)

    def _card_for(
        self, name: str, version: str, card: dict[str, Any], result: FileCheck, source: str,
    ) -> dict[str, Any]:
        metrics = card.get("metrics") or (result.contract.metrics if result.contract else {}) or {}
        onnx_info = {**(card.get("onnx") or {}), "file": MODEL_FILE, "opset": result.opset}
        seq = max((v.seq for v in self.versions(name)), default=0) + 1
        return {
            **card,
            "name": name,
            "version": version,
            "scale": result.scale,
            "architecture": card.get("architecture"),
            "training": card.get("training"),
            "metrics": metrics,
            "onnx": onnx_info,
            "sha256": result.sha256,
            "registry": {"published_at": _now(), "seq": seq, "source": source,
                         "exported_as": {"name": card.get("name")
                                         or (result.contract.name if result.contract else None),
                                         "version": card.get("version")
                                         or (result.contract.version if result.contract else None)},
                         "check": result.probe},
        }

    # --- the shipped default --------------------------------------------------------
    def seed(self, weights_dir: Path = WEIGHTS_DIR) -> builtins.list[ModelVersion]:
        """Publish the models shipped in ``weights_dir`` that the registry lacks; returns those added.

        A shipped version is added once; it becomes active when its name has
        no active version yet or when the active one was shipped too (a newer
        package brings a newer default), never over a version someone deployed.
        No inference is run (the files ship with the package); the sha256 is
        still compared with the card's.
        """
        added: list[ModelVersion] = []
        if not Path(weights_dir).is_dir():
            return added
        shipped = []
        for file in sorted(Path(weights_dir).glob("*.onnx")):
            found = find_card(file)
            shipped.append((file, read_card(found) if found else {}))
        # a clean model before its real-world fine-tune, a PSNR model before its GAN model
        shipped.sort(key=lambda item: (bool(item[1].get("denoise_base")), bool(item[1].get("detail_base"))))
        for file, card in shipped:
            checked = check_file(file, card)
            contract = checked.contract
            version = str(card.get("version") or (contract.version if contract else "") or "1")
            digest = card.get("sha256") or sha256_of(file)
            if any(v.version == version or v.card.get("sha256") == digest for v in self.versions(file.stem)):
                continue
            try:
                added.append(self.publish(file, name=file.stem, version=version, card=card, checked=checked,
                                          activate=self._only_shipped_active(file.stem),
                                          source=f"{SHIPPED}{file.name}"))
            except DeployRefused as exc:
                if "already published" not in exc.message:  # else another process seeded it first
                    raise
        return added

    def _only_shipped_active(self, name: str) -> bool:
        version = self.active_version(name)
        if version is None:
            return True
        try:
            active = self.get(name, version)
        except ModelError:
            return True
        return str((active.card.get("registry") or {}).get("source", "")).startswith(SHIPPED)


def check_file(path: Path, card: dict[str, Any] | None = None, scale: int | None = None) -> FileCheck:
    """The checks every published file passes, without running it: the one file check of the registry.

    The sha256 must equal the card's (when the card has one); the file must be
    a valid ONNX graph; the scales declared by its contract, the card and
    ``scale`` (those given) must agree. ``core.catalog.checks.check_model_file``
    adds a probe run through the engine; the shipped files are seeded with
    this check alone. Raises :class:`DeployRefused` saying what is wrong.
    """
    import onnx  # start-up: onnx, for checks only

    path = Path(path)
    card = card or {}
    if not path.is_file():
        raise DeployRefused(f"model file not found: {path}")
    digest = sha256_of(path)
    if card.get("sha256") and str(card["sha256"]).lower() != digest:
        raise DeployRefused(f"{path}: sha256 {digest} differs from the card's {card['sha256']}; "
                            "the file differs from its card (damaged or replaced)")
    try:
        proto = load_proto(path)
        onnx.checker.check_model(proto)
    except (ModelError, onnx.checker.ValidationError) as exc:
        raise DeployRefused(f"{path} is not a valid ONNX model: {exc}") from exc
    contract = ModelContract.of_proto(proto)
    declared = {"the file's contract": contract.scale if contract else None,
                "the card": card.get("scale"), "--scale": scale}
    given = {k: int(v) for k, v in declared.items() if v is not None}
    if not given:
        raise DeployRefused(f"{path} declares no scale (no srgan contract, no card); pass --scale")
    if len(set(given.values())) > 1:
        raise DeployRefused(f"{path}: the declared scales disagree: "
                            + ", ".join(f"{k} says x{v}" for k, v in given.items()))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return FileCheck(sha256=digest, scale=next(iter(given.values())), opset=opset, contract=contract,
                     probe="not run (shipped)")
