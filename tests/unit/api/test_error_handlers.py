"""Errors no route handles still answer in the JSON error shape: 500 for a bug, 503 while Redis is away."""

from __future__ import annotations

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def client(tmp_path):
    """The real app (its handlers and middleware, no lifespan: no Redis) with two throwaway routes that fail."""
    app = create_app(Settings(_env_file=None, data_dir=tmp_path))

    @app.get("/_test/bug")
    def bug() -> None:
        raise RuntimeError("a bug in a route")

    @app.get("/_test/redis-down")
    def redis_down() -> None:
        raise redis.ConnectionError("Error 111 connecting to localhost:6379. Connection refused.")

    # Not entered as a context manager: the lifespan (Redis, the sweeper) is not started.
    # The unexpected-error handler answers, then Starlette re-raises for the server's log; don't re-raise here.
    return TestClient(app, raise_server_exceptions=False)


def test_an_unhandled_exception_answers_500_in_the_json_error_shape(client):
    response = client.get("/_test/bug")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == "internal_error"
    assert error["message"] and "a bug in a route" not in error["message"], "no internals in the answer"


def test_a_redis_error_answers_503_unavailable_with_retry_after(client):
    response = client.get("/_test/redis-down")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert int(response.headers["retry-after"]) > 0
    assert "6379" not in response.text and "localhost" not in response.text, "no internal address in the answer"


def test_every_answer_says_nosniff(client):
    for path in ("/_test/bug", "/_test/redis-down", "/no-such-route", "/static/app.js", "/"):
        assert client.get(path).headers["x-content-type-options"] == "nosniff", path
