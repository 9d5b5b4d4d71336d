"""The service's settings: defaults, derived paths, and the combinations that are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import Settings

pytestmark = pytest.mark.unit


def test_defaults_are_safe_for_a_laptop():
    s = Settings(_env_file=None)
    assert s.redis_url is None, "unset: `srgan serve` embeds Redis"
    assert s.job_ttl_s == 24 * 3600
    assert s.resolved_storage_dir == Path(".srgan") / "jobs"
    assert s.soft_time_limit_s < s.time_limit_s < s.visibility_timeout_s
    assert s.max_attempts >= 1 and s.worker_concurrency == 1


def test_environment_variables_set_fields(monkeypatch):
    monkeypatch.setenv("SRGAN_REDIS_URL", "redis://r:6379/2")
    monkeypatch.setenv("SRGAN_API_KEYS", '["a", "b"]')
    monkeypatch.setenv("SRGAN_STORAGE_DIR", "/srv/jobs")
    s = Settings(_env_file=None)
    assert (s.redis_url, s.api_keys, s.resolved_storage_dir) == ("redis://r:6379/2", ["a", "b"], Path("/srv/jobs"))


@pytest.mark.parametrize(
    "limits",
    [
        dict(soft_time_limit_s=10, time_limit_s=10, visibility_timeout_s=20),
        dict(soft_time_limit_s=10, time_limit_s=20, visibility_timeout_s=20),
        dict(soft_time_limit_s=30, time_limit_s=20, visibility_timeout_s=40),
    ],
)
def test_visibility_timeout_must_exceed_the_hard_limit_which_exceeds_the_soft_one(limits):
    with pytest.raises(ValidationError, match="soft_time_limit_s < time_limit_s < visibility_timeout_s"):
        Settings(_env_file=None, **limits)


def test_the_test_delay_is_refused_in_production():
    with pytest.raises(ValidationError, match="debug_tile_delay_s"):
        Settings(_env_file=None, environment="production", debug_tile_delay_s=0.1)


def test_a_worker_counts_as_lost_only_after_its_job_could_have_been_redelivered():
    s = Settings(_env_file=None)
    assert s.worker_lost_s is None and s.resolved_worker_lost_s == 2 * s.visibility_timeout_s
    assert Settings(_env_file=None, worker_lost_s=1000).resolved_worker_lost_s == 1000
    with pytest.raises(ValidationError, match="worker_lost_s .* must exceed visibility_timeout_s"):
        Settings(_env_file=None, worker_lost_s=900)
    with pytest.raises(ValidationError, match="two heartbeats"):
        Settings(_env_file=None, heartbeat_s=1000)
