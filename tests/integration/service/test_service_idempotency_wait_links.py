"""`Idempotency-Key`, `Prefer: wait=N` and signed result links over real HTTP, Redis and a worker process."""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from core.keyspace import LINK_SECRET
from core.links import LinkSigner
from tests.integration.service.conftest import BACKENDS
from tests.utils.service import LiveApi, image_bytes, wait_for, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
STORAGE_BACKENDS = BACKENDS


def submit(client, data: bytes, headers=None, **fields):
    return client.post("/v1/jobs", files={"file": ("pic.png", data, "image/png")},
                       data={k: str(v) for k, v in fields.items()}, headers=headers or {})


def job_count(service) -> int:
    return sum(1 for key in service.redis.scan_iter("srgan:job:*") if not key.endswith(":events"))


def keyed_settings(service, make_settings, keys: list[str], **overrides):
    """A second API on the service's Redis and storage (so its worker runs the jobs), with API keys on."""
    s = service.settings
    return make_settings(s.redis_url, data_dir=s.data_dir, api_keys=keys, storage_url=s.storage_url,
                         s3_endpoint_url=s.s3_endpoint_url, **overrides)


def raw_post(url: str, data: bytes, headers: dict[str, str]) -> socket.socket:
    """Send a whole multipart POST on a plain socket; the caller hangs up without reading the answer."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"pic.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    parts = urlsplit(url)
    head = ["POST /v1/jobs HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}",
            f"Content-Type: multipart/form-data; boundary={boundary}", "Connection: close",
            *(f"{k}: {v}" for k, v in headers.items())]
    sock = socket.create_connection((parts.hostname, parts.port))
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return sock


def test_a_retry_after_a_dropped_connection_gets_the_first_job(client, service):
    key = str(uuid.uuid4())
    data = image_bytes(40, 40, seed=11)
    before = job_count(service)
    sock = raw_post(service.api.url, data, {"Idempotency-Key": key, "Prefer": "wait=30"})
    wait_until(lambda: job_count(service) == before + 1, what="the first request's job to be made")
    sock.close()  # the connection drops before the client has read a byte of the answer

    retry = submit(client, data, headers={"Idempotency-Key": key})
    assert retry.status_code in (200, 202), retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    first = retry.json()
    again = submit(client, data, headers={"Idempotency-Key": key})
    assert again.json()["id"] == first["id"]
    assert job_count(service) == before + 1, "a retry never makes a second job"
    assert wait_for(client, retry.headers["location"])["status"] == "succeeded"
    done = submit(client, data, headers={"Idempotency-Key": key})
    assert done.status_code == 200 and done.json()["status"] == "succeeded"


def test_the_same_key_with_another_upload_is_a_conflict(client):
    key = str(uuid.uuid4())
    first = submit(client, image_bytes(16, 16, seed=1), headers={"Idempotency-Key": key})
    assert first.status_code == 202
    other_file = submit(client, image_bytes(16, 16, seed=2), headers={"Idempotency-Key": key})
    assert other_file.status_code == 409 and other_file.json()["error"]["code"] == "idempotency_conflict"
    other_params = submit(client, image_bytes(16, 16, seed=1), headers={"Idempotency-Key": key}, scale=2)
    assert other_params.status_code == 409
    fresh = submit(client, image_bytes(16, 16, seed=1), headers={"Idempotency-Key": str(uuid.uuid4())})
    assert fresh.status_code == 202 and fresh.json()["id"] != first.json()["id"]
    assert submit(client, image_bytes(16, 16, seed=1)).json()["id"] != first.json()["id"]  # no key: a new job


def test_keys_are_kept_per_api_key(service, make_settings):
    api = LiveApi(keyed_settings(service, make_settings, ["alice-key", "bob-key"])).start()
    try:
        with api.client() as c:
            key, data = str(uuid.uuid4()), image_bytes(16, 16, seed=5)
            alice = submit(c, data, headers={"Idempotency-Key": key, "X-API-Key": "alice-key"}).json()
            bob = submit(c, data, headers={"Idempotency-Key": key, "X-API-Key": "bob-key"}).json()
            alice_again = submit(c, data, headers={"Idempotency-Key": key, "X-API-Key": "alice-key"}).json()
            assert alice["id"] != bob["id"] and alice_again["id"] == alice["id"]
    finally:
        api.stop()


def test_prefer_wait_answers_with_the_finished_job(client):
    quick = submit(client, image_bytes(24, 24), headers={"Prefer": "wait=30"})
    assert quick.status_code == 201, quick.text
    assert quick.headers["preference-applied"] == "wait=30"
    assert quick.json()["status"] == "succeeded" and quick.json()["links"]["share"]
    assert quick.headers["location"] == f"/v1/jobs/{quick.json()['id']}"

    started = time.monotonic()
    slow = submit(client, image_bytes(160, 160), headers={"Prefer": "respond-async, wait=0.3"})
    assert slow.status_code == 202 and slow.json()["status"] in ("queued", "running")
    assert slow.headers["preference-applied"] == "wait=0.3"
    assert 0.3 <= time.monotonic() - started < 5
    wait_for(client, slow.headers["location"])

    capped = submit(client, image_bytes(8, 8), headers={"Prefer": "wait=3600"})
    assert capped.status_code == 201 and capped.headers["preference-applied"] == "wait=60"
    plain = submit(client, image_bytes(8, 8))
    assert plain.status_code == 202 and "preference-applied" not in plain.headers


def test_signed_links_download_without_a_key_until_they_expire(service, make_settings):
    api = LiveApi(keyed_settings(service, make_settings, ["k1"])).start()
    try:
        with api.client(headers={"X-API-Key": "k1"}) as keyed, api.client() as anonymous:
            job = submit(keyed, image_bytes(20, 12, seed=3), headers={"Prefer": "wait=30"}).json()
            assert job["status"] == "succeeded"
            share = job["links"]["share"]
            assert share.startswith(api.url + "/v1/links/" + job["id"] + "?")
            expires = int(parse_qs(urlsplit(share).query)["expires"][0])
            assert abs(expires - (time.time() + service.settings.link_ttl_s)) < 5
            assert job["links"]["share_expires_at"]

            assert anonymous.get(job["links"]["result"]).status_code == 401  # the plain result needs the key
            shared = anonymous.get(share)
            assert shared.status_code == 200, shared.text
            assert shared.content == keyed.get(job["links"]["result"]).content
            assert shared.headers["content-type"] == "image/png"

            signature = parse_qs(urlsplit(share).query)["signature"][0]
            path = f"/v1/links/{job['id']}"
            for params in ({"expires": expires + 3600, "signature": signature},       # a longer life
                           {"expires": expires, "signature": "0" * 64},               # another signature
                           {"expires": expires, "signature": signature[:-1] + ("0" if signature[-1] != "0" else "1")}):
                tampered = anonymous.get(path, params=cast("dict[str, Any]", params))
                assert (tampered.status_code, tampered.json()["error"]["code"]) == (403, "link_invalid")
            other = submit(keyed, image_bytes(8, 8), headers={"Prefer": "wait=30"}).json()
            moved = anonymous.get(f"/v1/links/{other['id']}", params={"expires": expires, "signature": signature})
            assert moved.status_code == 403, "a signature is for one job only"

            signer = LinkSigner(service.redis.get(LINK_SECRET).encode(), ttl_s=1)
            stale, _ = signer.sign(job["id"], now=time.time() - 10)
            expired = anonymous.get(stale)
            assert (expired.status_code, expired.json()["error"]["code"]) == (403, "link_expired")
            unfinished = submit(keyed, image_bytes(160, 160)).json()
            assert unfinished["links"]["share"] is None
            wait_for(keyed, unfinished["links"]["self"])
    finally:
        api.stop()


def test_presigned_links_redirect_to_the_object_store_which_keeps_type_and_name(service, make_settings):
    """With s3_presign_links a signed link is a 307 to a presigned object URL (S3); a folder serves it itself."""
    api = LiveApi(keyed_settings(service, make_settings, ["k1"], s3_presign_links=True)).start()
    try:
        with api.client(headers={"X-API-Key": "k1"}) as keyed, api.client() as anonymous:
            job = keyed.post("/v1/jobs", files={"file": ("été.png", image_bytes(20, 12, seed=4), "image/png")},
                             headers={"Prefer": "wait=30"}).json()
            assert job["status"] == "succeeded"
            expected = keyed.get(job["links"]["result"])
            shared = anonymous.get(job["links"]["share"])
            if not service.settings.uses_s3:
                assert shared.status_code == 200 and shared.content == expected.content
                return
            assert shared.status_code == 307, shared.text
            target = shared.headers["location"]
            assert target.startswith(service.settings.s3_endpoint_url + "/") and "X-Amz-Signature" in target
            direct = httpx.get(target)  # no API key, no credentials: the signature is the permission
            assert direct.status_code == 200, direct.text
            assert direct.content == expected.content
            assert direct.headers["content-type"] == "image/png"
            assert direct.headers["content-disposition"] == expected.headers["content-disposition"]
            assert "filename*=UTF-8''%C3%A9t%C3%A9_x4.png" in direct.headers["content-disposition"]
            tampered = httpx.get(target.replace("X-Amz-Expires=", "X-Amz-Expires=9"))
            assert tampered.status_code == 403, "the store checks the signature"
    finally:
        api.stop()


def test_a_refused_request_releases_its_key(client):
    key = str(uuid.uuid4())
    refused = submit(client, b"not an image", headers={"Idempotency-Key": key})
    assert refused.status_code == 415
    fixed = submit(client, image_bytes(8, 8, seed=21), headers={"Idempotency-Key": key})
    assert fixed.status_code == 202, "the key was free again, not a conflict with the refused upload"
    again = submit(client, image_bytes(8, 8, seed=21), headers={"Idempotency-Key": key})
    assert again.json()["id"] == fixed.json()["id"]
