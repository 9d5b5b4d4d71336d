"""Where `srgan deploy` announces a change, and what it says when no Redis answers (no servers needed)."""

from __future__ import annotations

import pytest

from core.catalog.announce import EMBEDDED_URL_FILE, announce_change, service_redis_url
from core.redis_server import free_port
from core.settings import Settings

pytestmark = pytest.mark.unit


def test_the_configured_url_wins_then_the_embedded_servers(tmp_path):
    assert service_redis_url(Settings(_env_file=None, redis_url="redis://r:6379/0", data_dir=tmp_path)) == \
        "redis://r:6379/0"
    settings = Settings(_env_file=None, data_dir=tmp_path)
    assert service_redis_url(settings) is None
    (tmp_path / EMBEDDED_URL_FILE).parent.mkdir()
    (tmp_path / EMBEDDED_URL_FILE).write_text("redis://127.0.0.1:7777/0\n")
    assert service_redis_url(settings) == "redis://127.0.0.1:7777/0"


def test_no_redis_is_reported_not_raised(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path, model_refresh_s=12)
    assert "within 12 s" in announce_change(settings, "sr", "v2")
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    told = announce_change(down, "sr", "v2")
    assert told.startswith("could not reach Redis") and "within 12 s" in told
