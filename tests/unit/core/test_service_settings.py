"""The service's settings: defaults, derived paths, and the combinations that are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import Settings, hash_api_key, user_data_dir

pytestmark = pytest.mark.unit


def test_defaults_are_safe_for_a_laptop():
    s = Settings(_env_file=None)
    assert s.redis_url is None, "unset: `srgan serve` embeds Redis"
    assert s.job_ttl_s == 24 * 3600
    assert s.resolved_storage_dir == user_data_dir() / "jobs"
    assert s.soft_time_limit_s < s.time_limit_s < s.visibility_timeout_s
    assert s.max_attempts >= 1 and s.worker_concurrency == 1


def test_environment_variables_set_fields(monkeypatch):
    monkeypatch.setenv("SRGAN_REDIS_URL", "redis://r:6379/2")
    monkeypatch.setenv("SRGAN_API_KEYS", '["a", "b"]')
    monkeypatch.setenv("SRGAN_STORAGE_DIR", "/srv/jobs")
    s = Settings(_env_file=None)
    assert (s.redis_url, s.resolved_storage_dir) == ("redis://r:6379/2", Path("/srv/jobs"))
    assert sorted(s.api_keys.values()) == sorted([hash_api_key("a"), hash_api_key("b")]), "kept as hashes only"


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


PICKUP_S = 10.0
"""Margin for an idle live worker to take a queued job's message and start it (it waits on the queue: ~0 s)."""


def test_with_the_defaults_a_dead_workers_job_runs_again_within_a_minute():
    s = Settings(_env_file=None)
    # a run beats every heartbeat_s; silent for worker_lost_s, it is queued again at the reaper's next pass
    assert s.requeue_within_s == s.worker_lost_s + s.reaper_interval_s == 25.0
    assert s.requeue_within_s + PICKUP_S <= 60, "issue 10: running again on a live worker within 60 s"
    assert s.message_lost_s + s.reaper_interval_s + PICKUP_S <= 60, "a lost message: the same bound"
    assert s.worker_lost_s >= 4 * s.heartbeat_s, "three heartbeats may be missed before a run counts as lost"
    assert s.requeue_within_s < s.visibility_timeout_s, "the visibility timeout stays the last resort"
    assert Settings(_env_file=None, worker_lost_s=1000).requeue_within_s == 1005.0


def test_a_run_counts_as_lost_only_after_two_heartbeats():
    with pytest.raises(ValidationError, match="two heartbeats"):
        Settings(_env_file=None, heartbeat_s=10)
    with pytest.raises(ValidationError, match="two heartbeats"):
        Settings(_env_file=None, worker_lost_s=1.0, heartbeat_s=0.5)


def test_api_keys_are_kept_as_hashes_under_their_names():
    hashed = hash_api_key("k-bob")
    s = Settings(_env_file=None, api_keys={"alice": "k-alice", "bob": hashed.upper().replace("SHA256:", "sha256:")})
    assert s.api_keys == {"alice": hash_api_key("k-alice"), "bob": hashed}
    assert "k-alice" not in s.model_dump_json(), "the plain key is not kept"
    assert hashed.startswith("sha256:") and len(hashed) == 7 + 64


def test_api_keys_from_the_environment_as_a_json_object(monkeypatch):
    monkeypatch.setenv("SRGAN_API_KEYS", json.dumps({"alice": hash_api_key("x")}))
    assert Settings(_env_file=None).api_keys == {"alice": hash_api_key("x")}


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"alice": "same", "bob": "same"}, "same key"),
        ({"anonymous": "k"}, "API key name"),
        ({"a b": "k"}, "API key name"),
        ({"alice": "sha256:1234"}, "64 hex digits"),
        ({"alice": " "}, "empty"),
    ],
)
def test_bad_api_keys_are_refused(keys, message):
    with pytest.raises(ValidationError, match=message):
        Settings(_env_file=None, api_keys=keys)


@pytest.mark.parametrize(("url", "folder", "s3"), [
    ("", Path("/data") / "jobs", False),
    ("/srv/jobs", Path("/srv/jobs"), False),
    ("file:///srv/jobs", Path("/srv/jobs"), False),
    ("s3://bucket/some/prefix", Path("/data") / "jobs", True),  # the folder is then this host's spool
])
def test_storage_url_chooses_the_backend(url, folder, s3):
    from core.storage import FolderStorage, S3Storage, open_storage

    s = Settings(_env_file=None, storage_url=url, data_dir=Path("/data"))
    assert (s.resolved_storage_dir, s.uses_s3) == (folder, s3)
    storage = open_storage(s)
    assert isinstance(storage, S3Storage if s3 else FolderStorage)
    if isinstance(storage, S3Storage):
        assert (storage.bucket, storage.prefix) == ("bucket", "some/prefix/")


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "http://host/bucket", "gs://bucket"])
def test_unusable_storage_urls_are_refused(url):
    with pytest.raises(ValidationError, match="storage_url"):
        Settings(_env_file=None, storage_url=url)


def test_the_data_folder_is_the_users_whatever_the_working_directory(tmp_path, monkeypatch):
    """`srgan models` run from another folder sees the same registry as the service (not ./.srgan)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SRGAN_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    here = Settings(_env_file=None).resolved_models_dir
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert Settings(_env_file=None).resolved_models_dir == here == tmp_path / "xdg" / "srgan" / "models"
    monkeypatch.setenv("SRGAN_DATA_DIR", str(tmp_path / "mine"))
    assert Settings(_env_file=None).resolved_models_dir == tmp_path / "mine" / "models"  # overridable as before


def test_production_needs_a_link_secret_so_it_is_never_kept_in_redis():
    with pytest.raises(ValueError, match="link_secret must be set in production"):
        Settings(_env_file=None, environment="production")
    assert Settings(_env_file=None, environment="production", link_secret="s" * 32).link_secret is not None


def test_redis_password_goes_into_the_url_quoted_and_only_once():
    settings = Settings(_env_file=None, redis_url="redis://srgan@srgan-redis:6379/0", redis_password="p@ss/:w")
    assert settings.redis_url == "redis://srgan:p%40ss%2F%3Aw@srgan-redis:6379/0"
    same = Settings(_env_file=None, redis_url=settings.redis_url, redis_password="p@ss/:w")
    assert same.redis_url == settings.redis_url  # a subprocess given both by a test's environment
    with pytest.raises(ValueError, match="give it once"):
        Settings(_env_file=None, redis_url="redis://:other@h:6379/0", redis_password="p")
