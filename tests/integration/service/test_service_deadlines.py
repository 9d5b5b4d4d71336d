"""Deadlines (`Cancel-After`, `deadline`): not started in time ends `aborted`, running past it is canceled."""

from __future__ import annotations

import time

import pytest

from tests.utils.service import image_bytes, wait_for, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def submit(client, data: bytes, headers=None, **fields):
    return client.post("/v1/jobs", files={"file": ("pic.png", data, "image/png")},
                       data={k: str(v) for k, v in fields.items()}, headers=headers or {})


def test_a_job_not_started_by_its_deadline_is_aborted_without_running(client, service):
    busy = submit(client, image_bytes(320, 160)).headers["location"]  # ~2 s of tiles: the worker is taken
    wait_until(lambda: client.get(busy).json()["status"] == "running", what="the first job to start")
    submitted = time.time()
    late = submit(client, image_bytes(16, 16), headers={"Cancel-After": "300ms"})
    assert late.status_code == 202, late.text
    assert late.json()["deadline_at"]
    ended = wait_for(client, late.headers["location"], timeout_s=10)
    aborted_after = time.time() - submitted
    assert ended["status"] == "aborted", ended
    assert ended["error"]["code"] == "deadline_exceeded"
    assert ended["started_at"] is None and ended["attempts"] == 0 and ended["progress"] == 0
    assert aborted_after < 1.8, f"aborted {aborted_after:.2f} s after the submission, not at the deadline"
    assert client.get(busy).json()["status"] == "running", "aborted while the worker was still busy"
    assert wait_for(client, busy)["status"] == "succeeded"
    time.sleep(0.5)  # the worker has now taken the aborted job's message: it must leave it alone
    again = client.get(late.headers["location"]).json()
    assert (again["status"], again["attempts"], again["started_at"]) == ("aborted", 0, None)
    result = client.get(late.headers["location"] + "/result")
    assert result.status_code == 409 and result.json()["error"]["code"] == "job_aborted"
    metrics = client.get("/metrics").text
    assert 'srgan_jobs_total{status="aborted"}' in metrics


def test_a_job_running_past_its_deadline_is_canceled_at_the_next_tile(client):
    response = submit(client, image_bytes(320, 160), deadline="1s")  # 50 tiles, ~2 s
    assert response.status_code == 202, response.text
    ended = wait_for(client, response.headers["location"], timeout_s=20)
    assert ended["status"] == "canceled", ended
    assert ended["error"]["code"] == "deadline_exceeded"
    assert ended["started_at"] is not None and 0 < ended["progress"] < 1
    assert ended["cancel_requested"] is False


def test_a_job_that_ends_in_time_is_untouched(client):
    ended = submit(client, image_bytes(16, 16), headers={"Cancel-After": "30s", "Prefer": "wait=20"}).json()
    assert ended["status"] == "succeeded" and ended["error"] is None


@pytest.mark.parametrize(("headers", "fields", "message"), [
    ({"Cancel-After": "soon"}, {}, "duration"),
    ({"Cancel-After": "5s"}, {"deadline": "5s"}, "not both"),
    ({}, {"deadline": "2020-01-01T00:00:00Z"}, "already passed"),
    ({}, {"deadline": "2030-01-01T00:00:00"}, "time zone"),
    ({"Cancel-After": "100000h"}, {}, "lifetime"),
])
def test_bad_deadlines_are_422(client, headers, fields, message):
    response = submit(client, image_bytes(8, 8), headers=headers, **fields)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_parameter"
    assert message in response.json()["error"]["message"]
