"""`GET /v1/jobs/{id}/events`: Server-Sent Events from the worker's updates, in order, resumable."""

from __future__ import annotations

import json
import time

import pytest

from tests.utils.service import image_bytes, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def submit(client, data: bytes, **fields):
    return client.post("/v1/jobs", files={"file": ("pic.png", data, "image/png")},
                       data={k: str(v) for k, v in fields.items()})


def iter_sse(response):
    """Parse a text/event-stream into ``{"id", "event", "data", "received"}`` dicts (comments skipped)."""
    current: dict = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in current:
                current["received"] = time.time()
                current["data"] = json.loads(current["data"])
                yield current
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            current[field] = value[1:] if value.startswith(" ") else value


def read_sse(response, limit: int | None = None) -> list[dict]:
    events = []
    for event in iter_sse(response):
        events.append(event)
        if limit is not None and len(events) >= limit:
            break
    return events


def test_the_stream_shows_every_step_in_order_and_ends_with_the_final_state(client, service):
    job = submit(client, image_bytes(160, 160)).json()  # 25 tiles of ~40 ms
    with client.stream("GET", job["links"]["events"]) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_sse(response)  # returns when the server ends the stream
    seqs = [int(e["id"]) for e in events]
    assert seqs == list(range(1, len(events) + 1)), "every event, numbered without gaps"
    assert [e["data"]["seq"] for e in events] == seqs
    statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    progress = [e["data"]["progress"] for e in events if e["event"] == "progress"]
    assert len(progress) >= 5 and progress == sorted(progress) and 0 < progress[0] and progress[-1] == 1
    assert events[-1]["event"] == "status" and events[-1]["data"]["status"] == "succeeded"
    stored = [json.loads(raw) for raw in service.redis.lrange(f"srgan:job:{job['id']}:events", 0, -1)]
    assert [e["data"] for e in events] == stored, "the stream is the job's recorded log, nothing skipped"
    lateness = [e["received"] - e["data"]["at"] for e in events[1:]]
    assert max(lateness) < 1.0, f"events arrived late: {lateness}"


def test_last_event_id_resumes_where_the_client_left(client):
    job = submit(client, image_bytes(160, 160)).json()
    with client.stream("GET", job["links"]["events"]) as response:
        first = read_sse(response, limit=4)  # then the connection drops
    last = first[-1]["id"]
    with client.stream("GET", job["links"]["events"], headers={"Last-Event-ID": last}) as response:
        rest = read_sse(response)
    assert int(rest[0]["id"]) == int(last) + 1
    seqs = [int(e["id"]) for e in first + rest]
    assert seqs == list(range(1, len(seqs) + 1))
    assert rest[-1]["data"]["status"] == "succeeded"
    # a finished job's stream replays its log and ends; after its last event it ends at once
    with client.stream("GET", job["links"]["events"]) as response:
        assert [int(e["id"]) for e in read_sse(response)] == seqs
    with client.stream("GET", job["links"]["events"], headers={"Last-Event-ID": str(seqs[-1])}) as response:
        assert read_sse(response) == []


def test_a_canceled_job_ends_its_stream_with_the_final_state(client):
    job = submit(client, image_bytes(160, 160)).json()
    events = []
    with client.stream("GET", job["links"]["events"]) as response:
        for event in iter_sse(response):
            events.append(event)
            if event["event"] == "progress" and len(events) == 3:
                assert client.delete(job["links"]["self"]).status_code == 202
    assert events[-1]["event"] == "status"
    assert events[-1]["data"]["status"] == "canceled" and events[-1]["data"]["progress"] < 1
    assert wait_for(client, job["links"]["self"])["status"] == "canceled"


def test_bad_last_event_id_and_unknown_jobs(client):
    job = submit(client, image_bytes(8, 8)).json()
    response = client.get(job["links"]["events"], headers={"Last-Event-ID": "abc"})
    assert response.status_code == 422
    assert client.get("/v1/jobs/00000000-0000-4000-8000-000000000000/events").status_code == 404
