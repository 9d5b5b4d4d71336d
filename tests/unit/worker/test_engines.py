"""The worker's engine cache: which version a job gets, and when it looks again (real tiny ONNX files)."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
import redis

from bench.tiny_models import make_conv_model, make_nearest_model
from core.catalog.registry import Registry
from core.settings import Settings
from tests.utils.models import publish_checked
from worker.engines import EngineCache

pytestmark = pytest.mark.unit


class CountingRedis:
    """The Redis calls the cache makes: ``GET`` of the generation per job (counted), ``HSET`` of a loaded engine."""

    def __init__(self) -> None:
        self.generation, self.reads = 0, 0
        self.engines: dict[str, dict] = {}

    def get(self, key: str) -> str:
        assert key == "srgan:models:generation"
        self.reads += 1
        return str(self.generation)

    def hset(self, key: str, field: str, value: str) -> None:
        assert key == "srgan:models:engines"
        self.engines[field] = json.loads(value)


@pytest.fixture
def setup(tmp_path):
    registry = Registry(tmp_path / "models")
    publish_checked(registry, make_nearest_model(tmp_path / "a.onnx"), name="sr", version="v1")
    publish_checked(registry, make_conv_model(tmp_path / "b.onnx"), name="sr", version="v2", activate=False)
    settings = Settings(_env_file=None, models_dir=registry.root, model="sr", backend="onnxruntime", threads=1,
                        tile=32, overlap=4, model_refresh_s=3600)
    client = CountingRedis()
    return registry, EngineCache(settings, cast(redis.Redis, client)), client


def test_engine_is_named_by_the_registry_and_reused(setup):
    registry, cache, client = setup
    engine = cache.get(None)
    assert (engine.contract.name, engine.contract.version) == ("sr", "v1"), "not the file's own 'nearest:1'"
    assert cache.get("sr") is engine and cache.get("sr:v1") is engine
    assert client.reads == 3, "one Redis read per job, nothing else"
    assert client.engines == {"sr:v1": {"precision": "f32", "backend": "onnxruntime:CPUExecutionProvider",
                                        "precision_note": "auto: onnxruntime:CPUExecutionProvider runs f32 natively",
                                        "at": client.engines["sr:v1"]["at"]}}, "loaded once, recorded once"


def test_a_new_active_version_is_used_once_the_generation_moves(setup):
    registry, cache, client = setup
    v1 = cache.get(None)
    registry.activate("sr", "v2")
    assert cache.get(None) is v1, "no announcement yet: the file system is not looked at"
    client.generation += 1
    v2 = cache.get(None)
    assert v2.contract.version == "v2"
    assert v1.contract.version == "v1", "an engine a running job holds is not changed"
    assert cache.get("sr:v1") is v1, "the previous version stays loaded for a quick rollback"


def test_without_redis_the_pointer_is_reread_after_model_refresh_s(setup):
    registry, cache, _ = setup
    cache = EngineCache(cache.settings.model_copy(update={"model_refresh_s": 0.01}), None)
    assert cache.get(None).contract.version == "v1"
    registry.activate("sr", "v2")
    import time

    time.sleep(0.02)
    assert cache.get(None).contract.version == "v2"


def test_least_recently_used_versions_are_dropped(setup, tmp_path):
    registry, cache, client = setup
    last = cache.max_engines + 1
    for i in range(3, last + 1):
        publish_checked(registry, make_nearest_model(tmp_path / f"{i}.onnx"), name="sr", version=f"v{i}",
                        activate=False)
    first = cache.get("sr:v1")
    for i in range(2, last + 1):
        cache.get(f"sr:v{i}")
    assert len(cache._engines) == cache.max_engines
    assert cache.get("sr:v1") is not first, "v1 was dropped and is loaded again"


def _rss_mb() -> float:
    return int([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmRSS")][0]) / 1024


def test_openvino_gives_back_its_run_buffers_and_runs_the_same_after(tmp_path):
    """``release_memory``: the buffers OpenVINO keeps after a run (here a 16-filter network on a 384x384 input:
    tens of MB) go back to the system, the next run makes them again and computes the same picture."""
    import numpy as np

    from bench.tiny_models import make_srresnet_model
    from model.engine import Upscaler

    up = Upscaler.from_file(make_srresnet_model(tmp_path / "s.onnx", blocks=2, filters=16), backend="openvino",
                            precision="f32", tile=0)
    img = np.random.default_rng(0).integers(0, 256, (384, 384, 3), dtype=np.uint8)
    first = up.upscale(img)
    held = _rss_mb()
    up.release_memory()
    released = _rss_mb()
    assert held - released > 20, f"RSS {held:.0f} MB after the run, {released:.0f} MB after release_memory"
    np.testing.assert_array_equal(up.upscale(img), first)


def test_the_engines_a_job_does_not_use_give_back_their_buffers(setup, tmp_path):
    """A worker's cache keeps up to ``max_engines`` networks; taking one makes the others give back their
    runtime buffers (a mix of detail/denoise values held every engine's and broke the 1.5 GB goal); the engine
    taken keeps its own (the next job of the same kind reuses them)."""
    registry, cache, _ = setup
    cache = EngineCache(cache.settings.model_copy(update={"backend": "openvino"}), None)
    released: list[str] = []
    engines = {}
    for version in ("v1", "v2"):
        engine = engines[version] = cache.get(f"sr:{version}")
        backend: Any = engine.backend  # an OpenVinoBackend
        real = backend.release_memory

        def counting(version=version, real=real):
            released.append(version)
            return real()

        backend.release_memory = counting
    released.clear()
    assert cache.get("sr:v1") is engines["v1"] and released == ["v2"]
    assert cache.get("sr:v2") is engines["v2"] and released == ["v2", "v1"]
