"""The OpenAPI document describes what integrations use: headers, form fields, statuses, routes."""

from __future__ import annotations

import pytest

from api.main import create_app
from core.settings import Settings

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def spec() -> dict:
    return create_app(Settings(redis_url="redis://unused:1/0")).openapi()


def test_post_jobs_documents_its_headers_fields_and_answers(spec):
    post = spec["paths"]["/v1/jobs"]["post"]
    headers = {p["name"]: p for p in post["parameters"] if p["in"] == "header"}
    assert {"prefer", "idempotency-key", "cancel-after"} <= set(headers)
    assert "wait=N" in headers["prefer"]["description"]
    form = post["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"file", "url", "deadline", "webhook", "webhook_events", "scale", "model", "format", "quality"} <= set(form)
    assert {"200", "201", "202", "409", "422"} <= set(post["responses"])


def test_the_new_routes_are_described(spec):
    paths = spec["paths"]
    assert "text/event-stream" in paths["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert "last-event-id" in {p["name"] for p in paths["/v1/jobs/{job_id}/events"]["get"]["parameters"]}
    assert {"post"} <= set(paths["/v1/batches"]) and "get" in paths["/v1/batches/{batch_id}"]
    assert "application/zip" in paths["/v1/batches/{batch_id}/archive"]["get"]["responses"]["200"]["content"]
    assert "text/event-stream" in paths["/v1/batches/{batch_id}/events"]["get"]["responses"]["200"]["content"]
    link = paths["/v1/links/{job_id}"]["get"]
    assert {"expires", "signature"} <= {p["name"] for p in link["parameters"]} and "403" in link["responses"]
    job = spec["components"]["schemas"]["JobOut"]["properties"]
    assert "aborted" in str(job["status"]) and {"deadline_at", "webhook", "source", "batch_id"} <= set(job)
    assert {"events", "share", "share_expires_at"} <= set(spec["components"]["schemas"]["JobLinks"]["properties"])
