"""The engines of one worker process: each model version is loaded once and reused by every job.

Hot reload: a job names a model (``None`` for the configured default, a
registry name, ``name:version`` or a path); a bare name means the registry's
active version *when the job starts*. Which version that is gets re-read from
the registry only when the generation counter on Redis moved (``srgan
deploy``/``rollback`` bump it, see ``core.model_updates``) or after
``model_refresh_s``, so a job costs one Redis ``GET``, not a file-system scan.
A running job keeps the engine it started with; the cache keeps the few most
recently used versions, so switching back and forth does not reload.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import redis

from core.catalog import ModelInfo, resolve_spec
from core.model_updates import generation
from core.settings import Settings

if TYPE_CHECKING:
    from model.engine import Upscaler

log = logging.getLogger(__name__)

MAX_ENGINES = 3
"""Loaded model versions kept per worker process (the least recently used is dropped)."""


class EngineCache:
    """Upscalers keyed by model file, and what each job's model spec resolves to right now.

    ``get(spec)`` takes what a job record names. ``client`` is the service's
    Redis (for the generation counter); without it, resolutions are re-read
    every ``model_refresh_s``.
    """

    def __init__(self, settings: Settings, client: redis.Redis | None = None, *, max_engines: int = MAX_ENGINES) -> None:
        self.settings = settings
        self.client = client
        self.max_engines = max_engines
        self._engines: OrderedDict[tuple[str, int], Upscaler] = OrderedDict()
        self._resolved: dict[str | None, ModelInfo] = {}
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
            self._resolved.clear()
            self._generation, self._checked_at = current, now

    def resolve(self, spec: str | None) -> ModelInfo:
        """The model version ``spec`` names now."""
        with self._lock:
            return self._resolve(spec)

    def _resolve(self, spec: str | None) -> ModelInfo:
        self._forget_stale_resolutions()
        info = self._resolved.get(spec)
        if info is None:
            info = self._resolved[spec] = resolve_spec(self.settings, spec)
        return info

    def get(self, spec: str | None = None) -> Upscaler:
        """The engine for ``spec``'s current version, loaded on first use."""
        with self._lock:
            info = self._resolve(spec)
            key = (str(info.path), info.path.stat().st_mtime_ns)
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                return engine
            from model.engine import Upscaler

            s = self.settings
            engine = Upscaler.from_file(
                info.path, backend=s.backend, providers=s.providers, threads=s.threads,
                tile=s.tile, overlap=s.overlap, tile_batch=s.tile_batch,
            )
            if info.source == "registry":  # the registry's name and version, whatever the file was exported as
                engine.contract = engine.contract.with_identity(info.name, info.version, info.metrics)
            for stale in [k for k in self._engines if k[0] == key[0]]:  # the same path, replaced on disk
                del self._engines[stale]
            self._engines[key] = engine
            while len(self._engines) > self.max_engines:
                self._engines.popitem(last=False)
            log.info("loaded %s (%s, x%d) on %s", info.ref, info.path, engine.scale, engine.backend_name)
            return engine
