"""The Celery app is configured from the settings with the delivery guarantees the service relies on."""

from __future__ import annotations

import pytest

from core.settings import Settings
from worker.celery_app import TASK_NAME, celery_config, make_celery

pytestmark = pytest.mark.unit


def test_delivery_guarantees():
    settings = Settings(_env_file=None, redis_url="redis://r:1/3", queue="q", soft_time_limit_s=50,
                        time_limit_s=60, visibility_timeout_s=90, worker_concurrency=2)
    conf = celery_config(settings)
    assert conf["broker_url"] == "redis://r:1/3" and conf["task_default_queue"] == "q"
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert (conf["task_soft_time_limit"], conf["task_time_limit"]) == (50, 60)
    assert conf["broker_transport_options"]["visibility_timeout"] == 90 > conf["task_time_limit"]
    assert conf["worker_concurrency"] == 2
    assert conf["task_ignore_result"] is True, "results live in the job record, not a result backend"
    assert conf["accept_content"] == ["json"]


def test_the_task_is_registered_by_name():
    app = make_celery(Settings(_env_file=None, redis_url="redis://r:1/0"))
    app.loader.import_default_modules()
    assert TASK_NAME == "srgan.upscale" and TASK_NAME in app.tasks
    task = app.tasks[TASK_NAME]
    assert task.acks_late and task.reject_on_worker_lost
