"""A running service for the integration tests: real Redis, a real `celery worker` process, the API on uvicorn."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from core.settings import Settings
from tests.utils.service import LiveApi, WorkerProc

TILE_DELAY_S = 0.04
"""Each tile takes at least this long in the test workers: a 160x160 image (25 tiles of 32) runs ~1 s."""


@pytest.fixture(scope="session")
def make_settings(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Settings]:
    def make(redis_url: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = dict(
            redis_url=redis_url, model=str(tiny_model), data_dir=tmp_path_factory.mktemp("data"),
            backend="onnxruntime", threads=1, tile=32, overlap=4, heartbeat_s=0.5,
            debug_tile_delay_s=TILE_DELAY_S, sweep_interval_s=3600,
        )
        values.update(overrides)
        return Settings(**values)

    return make


@dataclass
class Service:
    settings: Settings
    api: LiveApi
    worker: WorkerProc
    redis: redis.Redis

    def client(self, **kwargs: Any) -> httpx.Client:
        return self.api.client(**kwargs)

    @property
    def storage_dir(self) -> Path:
        return self.settings.resolved_storage_dir


@pytest.fixture(scope="session")
def service(redis_db, make_settings, tmp_path_factory) -> Iterator[Service]:
    settings = make_settings(redis_db(), max_upload_bytes=256 * 1024, max_output_pixels=2_000_000)
    worker = WorkerProc(settings, tmp_path_factory.mktemp("logs") / "worker.log").start()
    api = LiveApi(settings).start()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        yield Service(settings, api, worker, client)
    finally:
        api.stop()
        worker.stop()
        client.close()


@pytest.fixture
def client(service: Service) -> Iterator[httpx.Client]:
    with service.client() as c:
        yield c
