"""What KEDA's Redis scaler sees, on a real Redis with the API's queue and a real worker: the list the
ScaledObjects of deploy/k8s watch holds exactly the jobs waiting, and srgan_queue_depth counts the same."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.metrics_core import Metric

from api.metrics import JobsCollector
from api.queue import JobQueue
from core.jobs import UPSCALE_TASK, JobStore, connect
from core.redis_server import RedisServer
from tests.utils.kustomize import build
from tests.utils.service import WorkerProc

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

K8S = Path(__file__).resolve().parents[3] / "deploy" / "k8s"
PRIORITY_SEP = "\x06\x16"
"""kombu's Redis transport keeps messages with a priority in lists named ``<queue>\\x06\\x16<priority>``."""


def watched_lists() -> set[str]:
    return {trigger["metadata"]["listName"] for doc in build(K8S) if doc["kind"] == "ScaledObject"
            for trigger in doc["spec"]["triggers"]}


def queue_depth_metric(store: JobStore, queue: JobQueue) -> float:
    collector = JobsCollector(store, queue_depth=lambda: queue.depth(store.redis), live_workers=lambda: 0)
    (family,) = [m for m in collector.collect() if isinstance(m, Metric) and m.name == "srgan_queue_depth"]
    return family.samples[0].value


def lists_of(client: redis.Redis) -> set[str]:
    return {key for key in client.scan_iter() if client.type(key) == "list"}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[str]:
    """A Redis of this test's own (the session's has no database to spare): every list in it is ours."""
    with RedisServer(tmp_path / "redis", appendonly=False) as server:
        yield server.url


def test_the_watched_list_holds_the_waiting_jobs_and_the_metric_agrees(own_redis, make_settings, tmp_path):
    settings = make_settings(own_redis)
    (listname,) = watched_lists()
    assert listname == settings.queue
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    store = JobStore(connect(settings.redis_url), ttl_s=settings.job_ttl_s)
    queue = JobQueue(settings)
    worker = None
    try:
        for n in range(3):
            queue.send(f"keda-{n}")
        assert lists_of(client) == {listname}, "every job lands in the one list the scaler watches"
        assert client.llen(listname) == 3 == queue.depth(store.redis) == queue_depth_metric(store, queue)

        # a message with a priority would land in another list, which neither KEDA nor the metric counts
        queue.app.send_task(UPSCALE_TASK, args=["prioritised"], queue=settings.queue, priority=5)
        (other,) = lists_of(client) - {listname}
        assert other.startswith(listname + PRIORITY_SEP)
        assert client.llen(listname) == 3 == queue_depth_metric(store, queue)
        client.delete(other)

        # a worker takes the jobs (unknown to the job store: each ends at once); taken, they leave the list
        worker = WorkerProc(settings, tmp_path / "worker.log").start()
        deadline = time.monotonic() + 60
        while client.llen(listname) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.llen(listname) == 0 == queue_depth_metric(store, queue), worker.log_tail()
    finally:
        if worker is not None:
            worker.stop()
        queue.close()
        store.redis.close()
        client.close()
