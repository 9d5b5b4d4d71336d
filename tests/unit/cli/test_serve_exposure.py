"""`srgan serve` beyond loopback refuses to start without API keys and a host allow-list, unless --insecure."""

from __future__ import annotations

from typing import Any

import pytest

from cli.main import main
from cli.serve import refuse_exposure
from core.settings import Settings, get_settings

pytestmark = pytest.mark.unit

KEYED: dict[str, Any] = dict(api_keys={"alice": "k"}, allowed_hosts=["sr.example.com"])


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.5"])
def test_loopback_needs_nothing(host):
    assert refuse_exposure(host, Settings(_env_file=None), insecure=False) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "sr.example.com"])
def test_beyond_loopback_needs_keys_and_hosts_or_insecure(host):
    bare = refuse_exposure(host, Settings(_env_file=None), insecure=False)
    assert bare and "SRGAN_API_KEYS" in bare and "SRGAN_ALLOWED_HOSTS" in bare and "--insecure" in bare
    only_keys = refuse_exposure(host, Settings(_env_file=None, api_keys={"a": "k"}), insecure=False)
    assert only_keys and "SRGAN_ALLOWED_HOSTS" in only_keys and "SRGAN_API_KEYS" not in only_keys
    assert refuse_exposure(host, Settings(_env_file=None, **KEYED), insecure=False) is None
    assert refuse_exposure(host, Settings(_env_file=None), insecure=True) is None


def test_the_command_exits_before_starting_anything(monkeypatch, tmp_path, capsys):
    for key in [k for k in __import__("os").environ if k.startswith("SRGAN_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SRGAN_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    get_settings.cache_clear()
    try:
        assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    finally:
        get_settings.cache_clear()
    assert "refusing to serve on 0.0.0.0" in capsys.readouterr().err
    assert not (tmp_path / "redis").exists(), "no Redis was started"

