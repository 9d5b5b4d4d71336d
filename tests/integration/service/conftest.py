"""A running service for the integration tests: real Redis, a real `celery worker` process, the API on uvicorn.

The job files live in a folder by default. A module runs its tests on both storage backends with
``STORAGE_BACKENDS = BACKENDS`` (its tests that use ``service`` are parametrized) or, for the stacks a
test makes itself, by taking ``backend`` and ``storage_settings(backend)``: the folder, and a bucket of
the session's SeaweedFS server (``s3``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from core.settings import Settings
from core.storage import Storage, open_storage
from tests.utils.service import LiveApi, WorkerProc

TILE_DELAY_S = 0.04
"""Each tile takes at least this long in the test workers: a 160x160 image (25 tiles of 32) runs ~1 s."""


BACKENDS = ["folder", "s3"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module's ``STORAGE_BACKENDS``: its tests that use ``service`` run once on each backend named."""
    backends = getattr(metafunc.module, "STORAGE_BACKENDS", None)
    if backends and "service" in metafunc.fixturenames:
        metafunc.parametrize("service", backends, indirect=True, scope="session")


@pytest.fixture(scope="session")
def storage_settings(request: pytest.FixtureRequest) -> Callable[[str], dict[str, object]]:
    """``storage_settings(backend)``: the settings that put a service's files there (a new bucket for s3)."""

    def make(backend: str) -> dict[str, object]:
        if backend == "folder":
            return {}
        store = request.getfixturevalue("object_store")
        return {"storage_url": f"s3://{store.new_bucket()}/jobs", "s3_endpoint_url": store.endpoint_url}

    return make


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each storage backend in turn, for a test that makes its own stacks (``storage_settings(backend)``)."""
    return str(request.param)


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
        """The job folders (folder backend), or this host's spool for uploads (s3)."""
        return self.settings.resolved_storage_dir

    @property
    def storage(self) -> Storage:
        return open_storage(self.settings)


@pytest.fixture(scope="session")
def service(request: pytest.FixtureRequest, redis_db, make_settings, storage_settings,
            tmp_path_factory) -> Iterator[Service]:
    """The API and one worker; on the folder backend, or each of a module's ``STORAGE_BACKENDS``."""
    backend = getattr(request, "param", "folder")
    settings = make_settings(redis_db(), max_upload_bytes=256 * 1024, max_output_pixels=2_000_000,
                             **storage_settings(backend))
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
