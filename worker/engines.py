"""The engines of one worker process: each model file is loaded once and reused by every job."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from core.catalog import describe_model_file
from core.settings import Settings
from model.locate import resolve_model

if TYPE_CHECKING:
    from model.engine import Upscaler

log = logging.getLogger(__name__)


class EngineCache:
    """Upscalers keyed by model file (and its modification time, so a replaced file is reloaded).

    ``get(spec)`` takes what a job record names: ``None`` (the configured
    model), its name, ``name:version``, or a shipped model's name.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engines: dict[tuple[Path, int], Upscaler] = {}
        self._lock = threading.Lock()

    def resolve(self, spec: str | None) -> Path:
        default = resolve_model(self.settings.model)
        if not spec or spec == self.settings.model:
            return default
        info = describe_model_file(default)
        if spec in (info.name, info.ref):
            return default
        return resolve_model(spec)

    def get(self, spec: str | None = None) -> Upscaler:
        path = self.resolve(spec)
        key = (path, path.stat().st_mtime_ns)
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                from model.engine import Upscaler

                s = self.settings
                engine = Upscaler.from_file(
                    path, backend=s.backend, providers=s.providers, threads=s.threads,
                    tile=s.tile, overlap=s.overlap, tile_batch=s.tile_batch,
                )
                self._engines = {k: v for k, v in self._engines.items() if k[0] != path}
                self._engines[key] = engine
                log.info("loaded %s (x%d) on %s", path, engine.scale, engine.backend_name)
            return engine
