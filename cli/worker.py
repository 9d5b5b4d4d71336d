"""``srgan worker``: a Celery worker that runs upscaling jobs (``celery -A worker.celery_app worker``)."""

from __future__ import annotations

import argparse
import uuid

from cli.exits import USAGE, fail
from core.settings import get_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run a Celery worker for the service's jobs",
                       description="Run upscaling jobs from the queue. Needs SRGAN_REDIS_URL; the model, "
                                   "limits and time limits come from the SRGAN_ settings.")
    p.add_argument("--concurrency", type=int, help="jobs at once, each in its own process "
                                                   "(default SRGAN_WORKER_CONCURRENCY, 1)")
    p.add_argument("--loglevel", default="INFO", help="Celery log level (default INFO)")
    p.add_argument("--name", help="node name (default srgan-<random>@<host>)")
    p.add_argument("--webhooks", action="store_true",
                   help="deliver webhooks instead of running jobs: the webhook queue, a pool of threads "
                        "(--concurrency, default 8)")
    p.set_defaults(func=run)


WEBHOOK_THREADS = 8


def celery_argv(*, concurrency: int | None = None, loglevel: str = "INFO", name: str | None = None,
                webhooks: bool = False) -> list[str]:
    """Arguments after ``celery``: the worker of ``worker.celery_app`` on the configured queue.

    ``webhooks``: a worker that delivers webhook messages (its own queue, a thread pool) instead.
    """
    settings = get_settings()
    if webhooks:
        return ["-A", "worker.celery_app", "worker", "--loglevel", loglevel,
                "--queues", settings.webhook_queue, "--concurrency", str(concurrency or WEBHOOK_THREADS),
                "--pool", "threads", "--hostname", name or f"srgan-webhooks-{uuid.uuid4().hex[:8]}@%h",
                "--without-gossip", "--without-mingle"]
    return [
        "-A", "worker.celery_app", "worker",
        "--loglevel", loglevel,
        "--queues", settings.queue,
        "--concurrency", str(concurrency or settings.worker_concurrency),
        "--pool", "prefork",
        "--hostname", name or f"srgan-{uuid.uuid4().hex[:8]}@%h",
        "--without-gossip", "--without-mingle",
    ]


def run(args: argparse.Namespace) -> int:
    if not get_settings().redis_url:
        return fail("SRGAN_REDIS_URL is not set; a worker needs the service's Redis "
                    "(`srgan serve` starts one of its own with a worker beside it)", USAGE)
    from celery.bin.celery import celery as celery_command  # start-up: Celery

    argv = celery_argv(concurrency=args.concurrency, loglevel=args.loglevel, name=args.name, webhooks=args.webhooks)
    try:
        celery_command.main(args=argv, prog_name="celery")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0
