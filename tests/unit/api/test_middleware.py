"""The browser-facing edges: CORS only for listed origins, the Host allow-list, nosniff."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import Settings

pytestmark = pytest.mark.unit

PREFLIGHT = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}


def client_for(tmp_path, **settings: Any) -> TestClient:
    """The real app without its lifespan (no Redis): /healthz and preflights answer without it."""
    return TestClient(create_app(Settings(_env_file=None, data_dir=tmp_path, **settings)))


def test_no_cors_headers_unless_origins_are_listed(tmp_path):
    client = client_for(tmp_path)
    answer = client.get("/healthz", headers={"Origin": "https://app.example.com"})
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers
    assert "access-control-allow-origin" not in client.options("/v1/jobs", headers=PREFLIGHT).headers


def test_listed_origins_get_cors_and_read_the_api_headers(tmp_path):
    client = client_for(tmp_path, cors_origins=["https://app.example.com"])
    preflight = client.options("/v1/jobs", headers={**PREFLIGHT, "Access-Control-Request-Headers": "x-api-key"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
    asked = "idempotency-key, prefer, cancel-after, last-event-id"
    integrations = client.options("/v1/jobs", headers={**PREFLIGHT, "Access-Control-Request-Headers": asked})
    assert integrations.status_code == 200, integrations.text
    allowed = {h.strip() for h in integrations.headers["access-control-allow-headers"].lower().split(",")}
    assert {"idempotency-key", "prefer", "cancel-after", "last-event-id"} <= allowed
    simple = client.get("/healthz", headers={"Origin": "https://app.example.com"})
    exposed = {h.strip() for h in simple.headers["access-control-expose-headers"].lower().split(",")}
    assert {"location", "retry-after", "ratelimit-remaining", "preference-applied", "idempotent-replayed"} <= exposed
    other = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_the_host_allow_list_refuses_other_host_names(tmp_path):
    client = client_for(tmp_path, allowed_hosts=["sr.example.com", "*.internal.example"])
    for host in ("sr.example.com", "sr.example.com:8000", "api.internal.example", "127.0.0.1:8000", "[::1]:80"):
        assert client.get("/healthz", headers={"Host": host}).status_code == 200, host
    for host in ("attacker.example", "10.0.0.3:8000", "example.com", "internal.example.evil"):
        refused = client.get("/healthz", headers={"Host": host})
        assert refused.status_code == 400, host
        assert refused.json()["error"]["code"] == "invalid_host"
        assert refused.headers["x-content-type-options"] == "nosniff"


def test_no_host_check_by_default_on_loopback(tmp_path):
    assert client_for(tmp_path).get("/healthz", headers={"Host": "anything.example"}).status_code == 200
