"""The OpenAPI document lists each route's real statuses and error codes (as enums), its headers and the
API key schemes; /docs and /redoc are served with assets from the app; a 405 names every allowed method."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import Settings

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def doc(app):
    return TestClient(app).get("/openapi.json").json()


def codes(doc, path, method, status):
    schema = doc["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    return set(schema["properties"]["error"]["properties"]["code"]["enum"])


def test_upload_route_lists_every_status_and_code_it_answers(doc):
    responses = doc["paths"]["/v1/jobs"]["post"]["responses"]
    assert {"202", "400", "401", "403", "408", "413", "415", "422", "429", "503"} <= set(responses)
    assert codes(doc, "/v1/jobs", "post", 400) == {"bad_multipart", "client_disconnected"}
    assert codes(doc, "/v1/jobs", "post", 422) == {"invalid_parameter", "too_many_fields", "image_too_large",
                                                   "multi_frame", "too_expensive", "url_refused", "url_fetch_failed",
                                                   "webhook_refused", "webhooks_disabled"}
    assert codes(doc, "/v1/jobs", "post", 409) == {"idempotency_conflict", "idempotency_in_progress"}
    assert codes(doc, "/v1/jobs", "post", 415) == {"unsupported_media_type", "unsupported_format", "invalid_image"}
    assert {"queue_full", "rate_limited", "quota_exceeded"} <= codes(doc, "/v1/jobs", "post", 429)
    assert {"200", "201"} <= set(responses), "an Idempotency-Key replay; Prefer: wait and the job ended"
    assert "Location" in responses["202"]["headers"]
    rate_headers = {"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"}
    assert rate_headers <= set(responses["429"]["headers"])
    assert "Retry-After" in responses["503"]["headers"]


def test_job_routes_list_their_own_codes(doc):
    assert codes(doc, "/v1/jobs/{job_id}/result", "get", 409) == {"not_ready", "job_failed", "job_canceled",
                                                                  "job_aborted"}
    assert "Retry-After" in doc["paths"]["/v1/jobs/{job_id}/result"]["get"]["responses"]["409"]["headers"]
    assert codes(doc, "/v1/jobs/{job_id}", "delete", 409) == {"job_finished"}
    assert "202" in doc["paths"]["/v1/jobs/{job_id}"]["delete"]["responses"]
    assert codes(doc, "/v1/jobs/{job_id}", "get", 404) == {"not_found"}
    assert "413" not in doc["paths"]["/v1/jobs/{job_id}"]["get"]["responses"], "only what the route can answer"


def test_integration_routes_list_their_own_codes(doc):
    assert codes(doc, "/v1/links/{job_id}", "get", 403) == {"link_invalid", "link_expired"}
    assert {"not_ready", "job_failed", "job_canceled", "job_aborted"} == codes(doc, "/v1/links/{job_id}", "get", 409)
    assert codes(doc, "/v1/batches", "post", 409) == {"idempotency_conflict", "idempotency_in_progress"}
    assert {"too_many_files", "webhook_refused", "webhooks_disabled"} <= codes(doc, "/v1/batches", "post", 422)
    assert codes(doc, "/v1/batches", "post", 408) == {"upload_timeout"}
    assert codes(doc, "/v1/batches/{batch_id}/archive", "get", 409) == {"nothing_ready"}
    assert codes(doc, "/v1/jobs/{job_id}/events", "get", 404) == {"not_found"}
    assert {"rate_limited", "quota_exceeded", "queue_full"} <= codes(doc, "/v1/batches", "post", 429)
    assert codes(doc, "/v1/jobs", "get", 429) == {"rate_limited"}
    assert {p["name"] for p in doc["paths"]["/v1/jobs"]["get"]["parameters"]} == {"limit", "offset"}


def test_api_key_schemes_are_documented_and_optional_without_keys(doc, tmp_path):
    assert doc["components"]["securitySchemes"]["ApiKey"] == {
        **doc["components"]["securitySchemes"]["ApiKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert doc["components"]["securitySchemes"]["Bearer"]["scheme"] == "bearer"
    assert {} in doc["paths"]["/v1/jobs"]["post"]["security"]
    keyed = TestClient(create_app(Settings(_env_file=None, data_dir=tmp_path, api_keys=["k"]))).get("/openapi.json")
    assert keyed.json()["paths"]["/v1/jobs"]["post"]["security"] == [{"ApiKey": []}, {"Bearer": []}]
    assert "security" not in doc["paths"]["/healthz"]["get"]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_use_only_assets_served_by_the_app(app, page):
    client = TestClient(app)
    html = client.get(page)
    assert html.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html.text)
    assets = [u for u in urls if u.endswith((".js", ".css", ".png"))]
    assert assets and all(u.startswith("/docs-assets/") for u in assets), urls
    assert "cdn." not in html.text and "fonts.googleapis" not in html.text
    for url in assets:
        response = client.get(url)
        assert response.status_code == 200 and len(response.content) > 100, url


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/v1/jobs/3f1b7e1c-0000-4000-8000-000000000000", "GET, DELETE"),
    ("PATCH", "/v1/jobs", "GET, POST"),
    ("DELETE", "/v1/models", "GET"),
])
def test_405_names_every_allowed_method(app, method, path, allowed):
    response = TestClient(app).request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json()["error"]["code"] == "method_not_allowed" and allowed in response.json()["error"]["message"]
