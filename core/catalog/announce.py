"""Announcing a change of a model's active version on Redis, so workers load it for their next job.

The registry's pointer files are the truth; Redis only says that they changed (the
``srgan:models:*`` keys of ``core.keyspace``): a counter every change increments (a worker reads it
before each job and re-reads the pointers only when it moved), each model's active version, a pub/sub
channel, and the engine a worker last loaded for each version (``GET /v1/models`` shows it).

``srgan deploy`` and ``srgan rollback`` announce through :func:`announce_change`. With
no ``SRGAN_REDIS_URL`` they use the embedded Redis of a running ``srgan serve``
(its URL is in ``<data_dir>/redis/url``). When no Redis answers, workers still
notice within ``model_refresh_s``.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.keyspace import MODELS_ACTIVE, MODELS_CHANGED, MODELS_ENGINES, MODELS_GENERATION
from core.settings import Settings

if TYPE_CHECKING:  # start-up: the catalog (and so `srgan upscale`) needs no Redis client until it announces
    import redis

log = logging.getLogger(__name__)

EMBEDDED_URL_FILE = Path("redis") / "url"
"""Where ``srgan serve`` leaves the URL of its embedded Redis, under ``data_dir``."""


def announce(client: redis.Redis, name: str, version: str) -> int:
    """Record and publish that ``name`` now runs ``version``; returns the new generation."""
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(MODELS_ACTIVE, name, version)
        pipe.incr(MODELS_GENERATION)
        _, generation = pipe.execute()
    client.publish(MODELS_CHANGED, json.dumps({"name": name, "version": version, "generation": int(generation)}))
    return int(generation)


def generation(client: redis.Redis) -> int:
    """The current generation (0 before any change)."""
    return int(client.get(MODELS_GENERATION) or 0)


def generation_or(client: redis.Redis, default: int | None) -> int | None:
    """:func:`generation`, or ``default`` (with a warning) when Redis does not answer."""
    try:
        return generation(client)
    except _redis().RedisError as exc:
        log.warning("cannot read the model generation from Redis: %s", exc)
        return default


def record_engine(client: redis.Redis, ref: str, engine: dict) -> None:
    """Note what a worker loaded ``ref`` (name:version) as: precision, how it was chosen, backend."""
    client.hset(MODELS_ENGINES, ref, json.dumps(engine))


def loaded_engines(client: redis.Redis) -> dict[str, dict]:
    """name:version -> what a worker last loaded it as (see :func:`record_engine`)."""
    out = {}
    for ref, raw in client.hgetall(MODELS_ENGINES).items():
        try:
            out[ref.decode() if isinstance(ref, bytes) else ref] = json.loads(raw)
        except ValueError:
            continue
    return out


def service_engines(settings: Settings) -> dict[str, dict]:
    """:func:`loaded_engines` of the service's Redis (see :func:`service_redis_url`); empty when none answers."""
    url = service_redis_url(settings)
    if not url:
        return {}
    lib = _redis()
    client = lib.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    try:
        return loaded_engines(client)
    except lib.RedisError as exc:
        log.warning("cannot read the loaded engines from %s: %s", url, exc)
        return {}
    finally:
        client.close()


def _redis() -> Any:  # noqa: ANN401 - the module
    """The redis client library, imported when a command first talks to Redis (about 0.1 s of CPU that
    ``srgan upscale``, which never does, is spared)."""
    return importlib.import_module("redis")


def service_redis_url(settings: Settings) -> str | None:
    """``SRGAN_REDIS_URL``, else the embedded Redis of a ``srgan serve`` running on this data folder."""
    if settings.redis_url:
        return settings.redis_url
    path = Path(settings.data_dir) / EMBEDDED_URL_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def announce_change(settings: Settings, name: str, version: str) -> str:
    """Tell the workers; never raises. Returns a sentence for the user."""
    url = service_redis_url(settings)
    if not url:
        return (f"no Redis configured (SRGAN_REDIS_URL) and no running `srgan serve` found; "
                f"running workers pick the change up within {settings.model_refresh_s:g} s")
    lib = _redis()
    client = lib.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    try:
        gen = announce(client, name, version)
    except lib.RedisError as exc:
        log.warning("could not announce %s:%s on %s: %s", name, version, url, exc)
        return (f"could not reach Redis at {url} ({exc}); running workers pick the change up "
                f"within {settings.model_refresh_s:g} s")
    finally:
        client.close()
    return f"workers notified (generation {gen}): jobs for {name} that start from now on run {name}:{version}"
