"""The engines of one worker process: each model version is loaded once and reused by every job.

Hot reload: a job names a model (``None`` for the configured default, a
registry name, ``name:version`` or a path); a bare name means the registry's
active version *when the job starts*. Which version that is gets re-read from
the registry only when the generation counter on Redis moved (``srgan
deploy``/``rollback`` bump it, see ``core.model_updates``) or after
``model_refresh_s``, so a job costs one Redis ``GET``, not a file-system scan.
A running job keeps the engine it started with; the cache keeps the few most
recently used versions, so switching back and forth does not reload. With the
job files on an object store, each re-read first syncs this host's registry
from the store's (``core.registry_sync``): workers on other hosts see a deploy
the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import redis

from core import registry_sync
from core.catalog import ModelCatalog, ModelRef
from core.model_updates import generation, record_engine
from core.settings import Settings
from core.upscalers import Blend, build_upscaler, resolve_blend

if TYPE_CHECKING:
    from model.engine import Upscaler
    from model.strength import Strength

log = logging.getLogger(__name__)

MAX_ENGINES = 4
"""Loaded networks kept per worker process (model versions and detail blends; the least recently used goes)."""


class EngineCache:
    """Upscalers keyed by model file, and what each job's model spec resolves to right now.

    ``get(spec)`` takes what a job record names. ``client`` is the service's
    Redis (for the generation counter); without it, resolutions are re-read
    every ``model_refresh_s``.
    """

    def __init__(
        self, settings: Settings, client: redis.Redis | None = None, *, max_engines: int = MAX_ENGINES,
    ) -> None:
        self.settings = settings
        self.catalog = ModelCatalog(settings)
        self.client = client
        self.max_engines = max_engines
        self._engines: OrderedDict[tuple, Upscaler] = OrderedDict()
        self._resolved: dict[str | None, ModelRef] = {}
        self._generation: int | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def _forget_stale_resolutions(self) -> None:
        current = self._generation
        if self.client is not None:
            try:
                current = generation(self.client)
            except redis.RedisError as exc:
                log.warning("cannot read the model generation from Redis: %s", exc)
        now = time.monotonic()
        if current != self._generation or now - self._checked_at >= self.settings.model_refresh_s:
            if self._resolved and current != self._generation:
                log.info("model generation %s -> %s: re-reading the active versions", self._generation, current)
            if self.settings.uses_s3:
                try:
                    registry_sync.pull(self.settings)
                except Exception as exc:  # noqa: BLE001 - the registry here still serves; try again next time
                    log.warning("cannot sync the model registry from the store: %s", exc)
                    current = self._generation  # so the next job tries again
            self._resolved.clear()
            self._generation, self._checked_at = current, now

    def resolve(self, spec: str | None) -> ModelRef:
        """The model version ``spec`` names now."""
        with self._lock:
            return self._resolve(spec)

    def _resolve(self, spec: str | None) -> ModelRef:
        self._forget_stale_resolutions()
        info = self._resolved.get(spec)
        if info is None:
            info = self._resolved[spec] = self.catalog.resolve(spec)
        return info

    def get(self, spec: str | None = None, detail: float | None = None) -> Upscaler:
        """The engine for ``spec``'s current version (blended with its detail base at ``detail``), loaded once."""
        return self.get_blend(spec, detail)[0]

    def get_blend(self, spec: str | None = None, detail: float | None = None,
                  denoise: Strength | None = None) -> tuple[Upscaler, Blend]:
        """:meth:`get`, and what it resolved to (the record says which models, which detail and denoise ran).

        One engine per blend of model files (the weights, not how the denoise value was chosen): an ``auto``
        strength and an asked one of the same value share it."""
        with self._lock:
            blend = resolve_blend(self.settings, spec, detail, denoise=denoise, resolve=self._resolve)
            parts = blend.parts()
            files = tuple((str(m.path), m.path.stat().st_mtime_ns) for m, _ in parts)
            key = (*files, tuple(w for _, w in parts))
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                return engine, blend
            engine = build_upscaler(self.settings, blend)
            current = dict(files)  # path -> mtime of the files this engine was built from
            for stale in [k for k in self._engines if any(p in current and m != current[p] for p, m in k[:-1])]:
                del self._engines[stale]  # built from a file since replaced on disk
            self._engines[key] = engine
            while len(self._engines) > self.max_engines:
                self._engines.popitem(last=False)
            what = " + ".join(f"{w:.2f} {m.ref}" for m, w in parts) if len(parts) > 1 else parts[0][0].ref
            log.info("loaded %s (%s, x%d) on %s in %s (%s)", what, blend.target.path, engine.scale,
                     engine.backend_name, engine.precision, engine.precision_note or "as configured")
            if self.client is not None and len(parts) == 1:
                try:
                    record_engine(self.client, parts[0][0].ref, {
                        "precision": engine.precision, "precision_note": engine.precision_note,
                        "backend": engine.backend_name, "at": round(time.time(), 3)})
                except redis.RedisError as exc:
                    log.warning("cannot record the engine of %s on Redis: %s", blend.target.ref, exc)
            return engine, blend
