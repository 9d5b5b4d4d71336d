"""``/metrics``: this API process's requests, plus the service's jobs as recorded in Redis.

Job counters and duration histograms live in Redis (``core.jobs``; workers
and every API replica update them), so any replica reports the same totals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.job_states import STATUSES
from core.job_stats import DURATION_BUCKETS
from core.jobs import JobStore


class JobsCollector(Collector):
    def __init__(self, store: JobStore, queue_depth: Callable[[], int], live_workers: Callable[[], int]) -> None:
        self.store, self.queue_depth, self.live_workers = store, queue_depth, live_workers

    def collect(self) -> Iterator[Metric]:
        stats = self.store.stats()
        total = CounterMetricFamily("srgan_jobs", "Jobs that entered each status", labels=["status"])
        for status in STATUSES:
            total.add_metric([status], float(stats.get(f"jobs_total:{status}", 0)))
        yield total
        recovered = CounterMetricFamily("srgan_jobs_recovered", "Jobs the reaper queued again (their run was lost) "
                                        "or sent again (their message was lost)", labels=["reason"])
        recovered.add_metric(["run_lost"], float(stats.get("requeues_total", 0)))
        recovered.add_metric(["message_lost"], float(stats.get("resends_total", 0)))
        yield recovered
        current = GaugeMetricFamily("srgan_jobs_current", "Jobs now queued or running", labels=["status"])
        for state, jobs in self.store.state_counts().items():
            current.add_metric([state], jobs)
        yield current
        yield GaugeMetricFamily("srgan_queue_depth", "Messages waiting in the broker queue",
                                value=self.queue_depth())
        yield GaugeMetricFamily("srgan_workers_alive", "Workers with a fresh heartbeat", value=self.live_workers())
        hist = HistogramMetricFamily("srgan_job_duration_seconds",
                                     "Job durations: run = start to end, total = upload to end",
                                     labels=["phase", "status"])
        for phase in ("run", "total"):
            for status in ("succeeded", "failed", "canceled"):
                prefix = f"duration:{phase}:{status}"
                count = float(stats.get(f"{prefix}:count", 0))
                if not count:
                    continue
                cumulative, buckets = 0.0, []
                for bound in DURATION_BUCKETS:
                    cumulative += float(stats.get(f"{prefix}:bucket:{bound}", 0))
                    buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
                hist.add_metric([phase, status], buckets, float(stats.get(f"{prefix}:sum", 0)))
        yield hist


class RequestMetrics:
    """ASGI middleware counting requests by route template (not raw path) and timing them."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("srgan_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=registry)
        self.latency = Histogram("srgan_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], registry=registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.requests.labels(scope["method"], route, str(status)).inc()
            self.latency.labels(scope["method"], route).observe(time.perf_counter() - start)
