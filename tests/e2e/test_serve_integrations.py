"""`srgan serve` as shipped runs what integrations use: its own webhook delivery worker, live events,
deadlines, URL inputs and batches, with nothing else started."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import httpx
import pytest

from tests.utils.receiver import Receiver, Reply
from tests.utils.service import image_bytes, wait_for, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SECRET = "whsec_" + base64.b64encode(b"served stack webhook secret 1234").decode()
SERVE_ENV = {"SRGAN_WEBHOOK_SECRET": SECRET, "SRGAN_OUTBOUND_ALLOW": '["127.0.0.1"]', "SRGAN_WEBHOOK_BACKOFF_S": "0.3"}


def signed(headers: dict[str, str], body: bytes) -> bool:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body, hashlib.sha256)
    return headers["webhook-signature"] == "v1," + base64.b64encode(mac.digest()).decode()


def test_serve_starts_a_webhook_worker_that_retries_until_accepted(served):
    names = " ".join(" ".join(p.cmdline()) for p in served.descendants())
    assert "srgan-webhooks" in names and "--pool threads" in names

    def answer(_):
        return Reply(500 if len(receiver.received) <= 2 else 200)

    with Receiver(answer) as receiver, httpx.Client(base_url=served.url, timeout=30) as client:
        job = client.post("/v1/jobs", files={"file": ("a.png", image_bytes(20, 20), "image/png")},
                          data={"webhook": receiver.url + "/done"}).json()
        assert wait_for(client, job["links"]["self"])["status"] == "succeeded"
        wait_until(lambda: len(receiver.received) >= 3, what="three deliveries")
        record = wait_until(lambda: (d := client.get(job["links"]["self"]).json()["webhook"]["deliveries"]
                                     .get("completed")) and d["state"] == "delivered" and d, what="the record")
    assert len(receiver.received) == 3 and len({r.headers["webhook-id"] for r in receiver.received}) == 1
    assert all(signed(r.headers, r.body) for r in receiver.received)
    assert json.loads(receiver.received[0].body)["type"] == "job.completed"
    assert record["attempts"] == 3 and record["last_status"] == 200


def test_serve_streams_events_aborts_late_jobs_and_fetches_urls(served):
    with Receiver(lambda _: Reply(200, image_bytes(16, 12, seed=3), {"Content-Type": "image/png"})) as files, \
            httpx.Client(base_url=served.url, timeout=30) as client:
        busy = client.post("/v1/jobs", files={"file": ("big.png", image_bytes(200, 200), "image/png")}).json()
        late = client.post("/v1/jobs", files={"url": (None, files.url + "/pic.png")},
                           headers={"Cancel-After": "200ms"}).json()
        assert late["source"] == {"url": files.url + "/pic.png"} and late["input"]["width"] == 16
        statuses = []
        with client.stream("GET", busy["links"]["events"]) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    statuses.append(json.loads(line[5:])["status"])
        assert statuses[0] == "queued" and statuses[-1] == "succeeded" and "running" in statuses
        ended = wait_for(client, late["links"]["self"])
        assert ended["status"] == "aborted" and ended["error"]["code"] == "deadline_exceeded"
        batch = client.post("/v1/batches", files=[("file", ("a.png", image_bytes(8, 8), "image/png")),
                                                  ("file", ("b.png", b"nope", "image/png"))]).json()
        assert [j["status"] for j in batch["jobs"]][1] == "failed"


def test_serve_answers_prefer_wait_keeps_idempotency_keys_and_signs_links(served):
    with httpx.Client(base_url=served.url, timeout=30) as client:
        data = image_bytes(10, 10, seed=8)
        headers = {"Prefer": "wait=20", "Idempotency-Key": "serve-e2e-1"}
        first = client.post("/v1/jobs", files={"file": ("p.png", data, "image/png")}, headers=headers)
        assert first.status_code == 201 and first.headers["preference-applied"] == "wait=20"
        again = client.post("/v1/jobs", files={"file": ("p.png", data, "image/png")}, headers=headers)
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        share = first.json()["links"]["share"]
        assert httpx.get(share).status_code == 200
        assert httpx.get(share.replace("signature=", "signature=0")).status_code == 403
