"""The engines of one worker process: each network is loaded once and reused by every job.

Which version a job's model spec means is the catalog's to say
(``core.catalog.catalog.ModelCatalog.blend``; this cache's catalog follows the
generation counter, so a job costs one Redis ``GET``, not a file-system scan);
building the network is ``core.catalog.load.build_upscaler``. This module only
keeps what was built: a running job keeps the engine it started with; the cache
keeps the few most recently used networks, so switching back and forth does not
reload.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

import redis

from core.catalog.announce import record_engine
from core.catalog.catalog import Blend, ModelCatalog
from core.catalog.load import build_upscaler
from core.settings import Settings
from model.engine import Upscaler
from model.strength import Strength

log = logging.getLogger(__name__)

MAX_ENGINES = 4
"""Loaded networks kept per worker process (model versions and detail/denoise blends; the least recently used
goes)."""


class EngineCache:
    """Upscalers keyed by the files (and the ``detail``) they were built from.

    ``get(spec)`` takes what a job record names. ``client`` is the service's
    Redis (the catalog reads the generation counter there; without it,
    resolutions are re-read every ``model_refresh_s``).
    """

    def __init__(
        self, settings: Settings, client: redis.Redis | None = None, *, max_engines: int = MAX_ENGINES,
    ) -> None:
        self.settings = settings
        self.catalog = ModelCatalog(settings, follow=True, client=client)
        self.client = client
        self.max_engines = max_engines
        self._engines: OrderedDict[tuple, Upscaler] = OrderedDict()
        self._lock = threading.Lock()

    def _release_others(self, key: tuple) -> None:
        """The engines other than ``key``'s give back their runtime's buffers: with the default 4 engines, a
        worker whose jobs mix detail and denoise values held each one's (about 0.3 GB after a 1024x1024 image
        with OpenVINO) and a 2048x2048 job peaked at 1.83 GB (AMD EPYC; issue 19 asks <= 1.5 GB). One engine
        runs at a time per worker process; one still running (threads) keeps its buffers."""
        for other, engine in self._engines.items():
            if other != key:
                engine.release_memory()

    def get(self, spec: str | None = None, detail: float | None = None) -> Upscaler:
        """The engine for ``spec``'s current version (blended with its detail base at ``detail``), loaded once."""
        return self.get_blend(spec, detail)[0]

    def get_blend(self, spec: str | None = None, detail: float | None = None,
                  denoise: Strength | None = None) -> tuple[Upscaler, Blend]:
        """:meth:`get`, and what it resolved to (the record says which models, which detail and denoise ran).

        One engine per blend of model files (the weights, not how the denoise value was chosen): an ``auto``
        strength and an asked one of the same value share it."""
        with self._lock:
            blend = self.catalog.blend(spec, detail, denoise)
            parts = blend.parts()
            files = tuple((str(m.path), m.path.stat().st_mtime_ns) for m, _ in parts)
            key = (*files, tuple(w for _, w in parts))
            self._release_others(key)
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
