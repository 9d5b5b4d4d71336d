"""Standard Webhooks signing, events and the retry schedule (core.webhooks)."""

from __future__ import annotations

import base64
import json

import pytest

from core.job_record import Job
from core.links import LinkSigner
from core.settings import Settings
from core.webhooks import WebhookConfigError, backoff_s, headers, message, parse_events, secret_key, sign, wants

pytestmark = pytest.mark.unit


def test_the_signature_matches_the_standard_webhooks_test_vector():
    # the example of the Standard Webhooks specification and its reference libraries
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}') == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_and_secret():
    settings = Settings(webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    key = secret_key(settings)
    assert key == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    got = headers(key, "msg_1", b"{}", now=1700000000.7)
    assert got["webhook-id"] == "msg_1" and got["webhook-timestamp"] == "1700000000"
    assert got["webhook-signature"] == sign(key, "msg_1", 1700000000, b"{}")
    for bad in (None, "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(WebhookConfigError):
            secret_key(Settings(webhook_secret=bad))


def test_events():
    assert parse_events(None) == ["completed"] and parse_events(" ") == ["completed"]
    assert parse_events("completed, STARTED,progress") == ["started", "progress", "completed"]
    with pytest.raises(WebhookConfigError, match="finished"):
        parse_events("started,finished")
    job = Job(id="j", status="queued", webhook={"url": "https://x", "events": ["started"]})
    assert wants(job, "started") and not wants(job, "completed")
    assert not wants(Job(id="j", status="queued"), "completed")


def test_backoff_doubles_to_a_cap_and_an_hour_takes_about_fifteen_tries():
    settings = Settings()
    waits = [backoff_s(i, settings) for i in range(20)]
    assert waits[:4] == [5, 10, 20, 40] and max(waits) == 450  # capped at half the 900 s visibility timeout
    tries_in_an_hour = next(n for n in range(20) if sum(waits[:n]) >= 3600) + 1
    assert tries_in_an_hour == 15


def test_the_message_carries_the_job_and_a_signed_link_once_succeeded():
    job = Job(id="00000000-0000-4000-8000-000000000001", status="succeeded", progress=1.0, created_at=1.7e9,
              finished_at=1.7e9 + 3, output={"width": 8, "height": 8, "media_type": "image/png", "ext": "png"})
    msg = message(job, "completed", signer=LinkSigner(b"k", 60), public_url="https://sr.example.com/")
    body = json.loads(msg["body"])
    assert msg["id"].startswith("msg_") and body["type"] == "job.completed"
    assert body["data"]["links"]["self"] == f"https://sr.example.com/v1/jobs/{job.id}"
    assert body["data"]["links"]["share"].startswith(f"https://sr.example.com/v1/links/{job.id}?expires=")
    assert body["data"]["output"]["width"] == 8 and body["data"]["finished_at"].endswith("Z")
    failed = json.loads(message(Job(id="x", status="failed", error={"code": "c", "message": "m"}), "completed",
                                signer=None, public_url=None)["body"])
    assert "share" not in failed["data"]["links"] and failed["data"]["error"]["code"] == "c"
