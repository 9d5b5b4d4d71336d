"""The model registry shared through the object store, so hosts that share nothing but Redis and the store
(``storage_url=s3://...``) run the same models.

The store keeps a mirror of the registry under ``<prefix>models/``, in the registry's own layout::

    models/<name>/<version>/model.onnx, models/<name>/<version>/card.json   never changed once there
    models/<name>/active.json                                            the pointer

Every host keeps its own registry folder (``models_dir``, its model cache) and syncs it from the mirror:
:func:`pull` downloads the versions it lacks (streamed to disk, checked against the card's sha256, then
renamed into place) and takes the mirror's pointers. ``srgan deploy`` and ``srgan rollback`` pull, change
the local registry, then :func:`push` the model (files first, the pointer last) before they announce the
change on Redis. A worker pulls whenever it re-reads the active versions (the generation counter moved,
or ``model_refresh_s`` passed: ``worker.engines``), the API every few seconds while the generation moves,
so a deploy reaches every host the way it reaches one: jobs that start after the announcement run the new
version, jobs in flight keep theirs.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
from pathlib import Path

from core.catalog.registry import CARD_FILE, MODEL_FILE, POINTER_FILE, Registry, sha256_of, validate_name
from core.settings import Settings
from core.storage import S3Storage, open_storage
from model.errors import ModelError

log = logging.getLogger(__name__)

MIRROR = "models/"
_lock = threading.Lock()


_mirrors: dict[tuple[str | None, ...], S3Storage] = {}
_mirrors_lock = threading.Lock()
"""One store (and so one boto3 client per process) per S3 configuration: pulls run on every job's path."""


def mirror_of(settings: Settings) -> S3Storage | None:
    """The store that holds the registry's mirror; None with the folder backend (the registry is a folder
    the hosts share, as before)."""
    if not settings.uses_s3:
        return None
    key = (settings.storage_url, settings.s3_endpoint_url, settings.s3_region, settings.s3_public_endpoint_url,
           str(settings.resolved_storage_dir))
    with _mirrors_lock:
        store = _mirrors.get(key)
        if store is None:
            opened = open_storage(settings)
            assert isinstance(opened, S3Storage), "uses_s3 opens an S3Storage"
            store = _mirrors[key] = opened
    return store


def push(settings: Settings, name: str) -> int:
    """Copy ``name``'s versions the mirror lacks, then its pointer, to the store; returns the files copied."""
    store = mirror_of(settings)
    if store is None:
        return 0
    registry = Registry(settings.resolved_models_dir)
    present = set(store.object_keys(f"{MIRROR}{name}/"))
    copied = 0
    for version in registry.versions(name):
        base = f"{MIRROR}{name}/{version.version}/"
        if base + MODEL_FILE not in present:
            store.write_object(base + MODEL_FILE, version.path)
            copied += 1
        if base + CARD_FILE not in present:  # written after the model: a card in the mirror means a whole version
            store.write_object(base + CARD_FILE, version.path.with_name(CARD_FILE), "application/json")
            copied += 1
    pointer = registry.pointer(name)
    if pointer:
        store.write_object(f"{MIRROR}{name}/{POINTER_FILE}", json.dumps(pointer).encode(), "application/json")
    log.info("pushed %s to the store's registry (%d file(s), active %s)", name, copied, pointer.get("version"))
    return copied


def pull(settings: Settings) -> list[str]:
    """Bring this host's registry up to the mirror's: the versions it lacks and the pointers. Returns the
    ``name:version`` refs downloaded. A version whose file does not match its card is skipped (logged)."""
    store = mirror_of(settings)
    if store is None:
        return []
    registry = Registry(settings.resolved_models_dir)
    keys = store.object_keys(MIRROR)
    cards = [k for k in keys if k.count("/") == 3 and k.endswith("/" + CARD_FILE)]
    pointers = [k for k in keys if k.count("/") == 2 and k.endswith("/" + POINTER_FILE)]
    fetched = []
    with _lock:  # one download per version, even with several threads asking
        for key in cards:
            _, name, version, _ = key.split("/")
            try:
                validate_name("name", name)
                validate_name("version", version)
            except ModelError:
                continue
            if (registry.root / name / version / MODEL_FILE).is_file():
                continue
            if _fetch(store, registry, name, version):
                fetched.append(f"{name}:{version}")
        for key in pointers:
            name = key.split("/")[1]
            raw = store.read_object(key)
            try:
                pointer = json.loads(raw or b"{}")
                if pointer.get("version") and registry.pointer(name) != pointer:
                    registry.replace_pointer(name, pointer)
                    log.info("registry: %s is now %s (from the store)", name, pointer["version"])
            except (ValueError, ModelError) as exc:
                log.warning("registry: cannot take the store's pointer of %s: %s", name, exc)
    return fetched


def _fetch(store: S3Storage, registry: Registry, name: str, version: str) -> bool:
    base = f"{MIRROR}{name}/{version}/"
    (registry.root / name).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=registry.root / name))
    try:
        card_bytes = store.read_object(base + CARD_FILE)
        card = json.loads(card_bytes or b"{}")
        store.download_object(base + MODEL_FILE, staging / MODEL_FILE)
        if card.get("sha256") and sha256_of(staging / MODEL_FILE) != card["sha256"]:
            log.warning("registry: %s:%s in the store does not match its card's sha256; not used", name, version)
            shutil.rmtree(staging, ignore_errors=True)
            return False
        (staging / CARD_FILE).write_bytes(card_bytes or b"{}")
        registry.adopt(name, version, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("registry: downloaded %s:%s from the store", name, version)
    return True
