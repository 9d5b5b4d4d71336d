"""Webhooks over the real stack: a job worker, a delivery worker, and a real HTTP receiver on loopback.

The receiver is reached through ``outbound_allow`` (loopback is refused otherwise, as the last tests show).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from core.settings import Settings
from tests.utils.receiver import Receiver, Reply
from tests.utils.service import LiveApi, WorkerProc, image_bytes, wait_for, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WINDOW_S = 3.0
SECRET = "whsec_" + base64.b64encode(b"a test secret of 32 bytes long!!").decode()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, as docs/service.md shows it (written here on its own, not with the service's code)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, sig.split(",", 1)[1]) for sig in headers["webhook-signature"].split())


@pytest.fixture(scope="module")
def stack(redis_db, make_settings, tmp_path_factory) -> Iterator[tuple[Settings, LiveApi]]:
    settings = make_settings(redis_db(), webhook_secret=SECRET, outbound_allow=["127.0.0.1"], webhook_backoff_s=0.3,
                             webhook_progress_every_s=0, webhook_timeout_s=2, webhook_retry_window_s=WINDOW_S)
    logs = tmp_path_factory.mktemp("webhook-logs")
    worker = WorkerProc(settings, logs / "worker.log").start()
    deliverer = WorkerProc(settings, logs / "webhooks.log", webhooks=True).start()
    api = LiveApi(settings).start()
    try:
        yield settings, api
    finally:
        api.stop()
        deliverer.stop()
        worker.stop()


@pytest.fixture
def client(stack) -> Iterator[httpx.Client]:
    with stack[1].client() as c:
        yield c


def submit(client, data: bytes, **fields):
    return client.post("/v1/jobs", files={"file": ("pic.png", data, "image/png")},
                       data={k: str(v) for k, v in fields.items()})


def test_a_failing_receiver_gets_the_event_again_until_it_accepts(client):
    def answer(request):
        return Reply(500 if len(receiver.received) <= 2 else 204)

    with Receiver(answer) as receiver:
        response = submit(client, image_bytes(24, 24), webhook=receiver.url + "/hooks/sr")
        assert response.status_code == 202, response.text
        assert response.json()["webhook"] == {"url": receiver.url + "/hooks/sr", "events": ["completed"],
                                              "deliveries": {}}
        job = wait_for(client, response.headers["location"])
        assert job["status"] == "succeeded"
        wait_until(lambda: len(receiver.received) >= 3, timeout_s=30, what="three deliveries")
        time.sleep(1.0)  # nothing more comes once one was accepted
    deliveries = receiver.received
    assert len(deliveries) == 3
    assert {d.path for d in deliveries} == {"/hooks/sr"} and {d.method for d in deliveries} == {"POST"}
    assert len({d.headers["webhook-id"] for d in deliveries}) == 1, "one event: the same message id every time"
    assert len({d.body for d in deliveries}) == 1, "the same body every time"
    for d in deliveries:
        assert verify(SECRET, d.headers, d.body), d.headers
        assert abs(int(d.headers["webhook-timestamp"]) - d.at) < 5
    gaps = [b.at - a.at for a, b in zip(deliveries, deliveries[1:])]
    assert gaps[0] >= 0.25 and gaps[1] >= 0.5, f"exponential backoff between tries: {gaps}"
    body = json.loads(deliveries[0].body)
    assert body["type"] == "job.completed" and body["data"]["id"] == job["id"]
    assert body["data"]["status"] == "succeeded" and body["data"]["output"]["width"] == 96
    share = body["data"]["links"]["share"]
    assert share.startswith("/v1/links/" + job["id"]) and client.get(share).status_code == 200

    record = wait_until(lambda: (client.get(job["links"]["self"]).json()["webhook"]["deliveries"].get("completed")
                                 or {}).get("state") == "delivered" and client.get(job["links"]["self"]).json(),
                        what="the delivery to be recorded")
    delivered = record["webhook"]["deliveries"]["completed"]
    assert delivered["attempts"] == 3 and delivered["last_status"] == 204
    assert delivered["id"] == deliveries[0].headers["webhook-id"] and delivered["last_error"] is None


def test_started_progress_and_completed_in_their_order(client):
    with Receiver() as receiver:
        response = submit(client, image_bytes(160, 160), webhook=receiver.url,
                          webhook_events="completed,started,progress")
        assert response.json()["webhook"]["events"] == ["started", "progress", "completed"]
        job = wait_for(client, response.headers["location"])
        wait_until(lambda: any(json.loads(r.body)["type"] == "job.completed" for r in receiver.received),
                   what="the completed event")
    bodies = [json.loads(r.body) for r in receiver.received]
    types = [b["type"] for b in bodies]
    assert types[0] == "job.started" and types[-1] == "job.completed"
    assert types.count("job.started") == 1 and types.count("job.completed") == 1
    progress = [b["data"]["progress"] for b in bodies if b["type"] == "job.progress"]
    assert len(progress) >= 3 and sorted(progress) == sorted(set(progress))
    assert len({r.headers["webhook-id"] for r in receiver.received}) == len(bodies), "one message id per event"
    assert all(verify(SECRET, r.headers, r.body) for r in receiver.received)
    assert job["status"] == "succeeded"


def test_a_slow_receiver_never_holds_up_jobs(client):
    with Receiver(lambda _: Reply(200, delay_s=2.5)) as receiver:
        started = time.monotonic()
        jobs = [submit(client, image_bytes(16, 16, seed=i), webhook=receiver.url,
                       webhook_events="started,completed").json() for i in range(3)]
        for job in jobs:
            assert wait_for(client, job["links"]["self"])["status"] == "succeeded"
        jobs_done = time.monotonic() - started
        wait_until(lambda: len(receiver.received) == 6, timeout_s=60, what="six deliveries")
    # had the job worker sent them, the three `started` deliveries alone would have taken 7.5 s
    assert jobs_done < 5.0, f"the jobs waited for the receiver ({jobs_done:.1f} s)"


def test_deliveries_that_never_succeed_are_given_up_after_the_window(client):
    with Receiver(lambda _: Reply(503)) as receiver:
        job = submit(client, image_bytes(8, 8), webhook=receiver.url).json()
        assert wait_for(client, job["links"]["self"])["status"] == "succeeded"

        def given_up():
            state = client.get(job["links"]["self"]).json()["webhook"]["deliveries"].get("completed") or {}
            return state if state.get("state") == "failed" else None

        state = wait_until(given_up, timeout_s=30, what="the delivery to be given up")
    assert state["attempts"] == len(receiver.received) >= 3
    assert state["last_status"] == 503 and "503" in state["last_error"]
    spread = receiver.received[-1].at - receiver.received[0].at
    assert spread >= WINDOW_S - 0.5, "retried for the whole window"


@pytest.mark.parametrize("url", ["http://127.0.0.2:9/", "http://10.0.0.1/hook", "http://169.254.169.254/latest",
                                 "http://[::1]:8000/", "http://0.0.0.0:80/", "ftp://example.com/", "not a url"])
def test_loopback_private_and_link_local_targets_are_refused(client, url):
    response = submit(client, image_bytes(8, 8), webhook=url)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "webhook_refused"


def test_bad_events_and_a_server_without_a_secret(client, service):
    bad = submit(client, image_bytes(8, 8), webhook="http://127.0.0.1:9/", webhook_events="finished")
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_parameter")
    alone = submit(client, image_bytes(8, 8), webhook_events="completed")
    assert alone.status_code == 422
    with service.client() as plain:  # the shared service has no SRGAN_WEBHOOK_SECRET
        off = submit(plain, image_bytes(8, 8), webhook="https://example.com/hook")
        assert (off.status_code, off.json()["error"]["code"]) == (422, "webhooks_disabled")


def test_the_delivery_worker_sends_no_heartbeat(stack):
    settings, _ = stack
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        assert not any("webhooks" in name for name in client.zrange("srgan:workers", 0, -1))
    finally:
        client.close()
