"""Tenants and admission over real HTTP and real Redis: jobs belong to their API key; per-key rate limit
and quotas; the global queue limit admits exactly its number under concurrent uploads."""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import redis

from core.keyspace import job_key
from core.settings import hash_api_key
from tests.utils.service import LiveApi, image_bytes, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ALICE, BOB = "alice-key-0123", "bob-key-4567"
KEYS = {"alice": hash_api_key(ALICE), "bob": BOB}  # a hash, and a plain key (hashed on load)


def submit(client: httpx.Client, data: bytes, key: str | None, name: str = "cat.png") -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    return client.post("/v1/jobs", files={"file": (name, data, "application/octet-stream")}, headers=headers)


@pytest.fixture(scope="module")
def idle_db(redis_db) -> str:
    """One database for this module's APIs that no worker serves (each test flushes it first)."""
    return redis_db()


@pytest.fixture
def idle_api(idle_db, make_settings):
    """``idle_api(**settings)``: a started API on the flushed idle database; stopped after the test."""
    started: list[LiveApi] = []

    def start(**overrides: object) -> LiveApi:
        if not started:
            redis.Redis.from_url(idle_db).flushdb()
        api = LiveApi(make_settings(idle_db, **overrides)).start()
        started.append(api)
        return api

    yield start
    for api in started:
        api.stop()


@pytest.fixture(scope="module")
def keyed_api(service) -> Iterator[LiveApi]:
    """An API with two keys beside the session's service (same Redis, storage and worker)."""
    settings = type(service.settings)(**{**service.settings.model_dump(), "api_keys": KEYS, "rate_limit_per_minute": 0})
    api = LiveApi(settings).start()
    yield api
    api.stop()


def test_a_job_belongs_to_the_key_that_made_it(keyed_api, service, caplog):
    caplog.set_level(logging.INFO, logger="api.admission")
    with keyed_api.client(headers={"X-API-Key": ALICE}) as alice, keyed_api.client(headers={"X-API-Key": BOB}) as bob:
        made = submit(alice, image_bytes(12, 10, seed=3), None)
        assert made.status_code == 202, made.text
        job = made.json()
        assert job["owner"] == "alice"
        assert wait_for(alice, made.headers["location"])["status"] == "succeeded"
        assert alice.get(f"/v1/jobs/{job['id']}/result").status_code == 200

        unknown = str(uuid.uuid4())
        for method, suffix in (("GET", ""), ("GET", "/result"), ("DELETE", "")):
            theirs = bob.request(method, f"/v1/jobs/{job['id']}{suffix}")
            nobody = bob.request(method, f"/v1/jobs/{unknown}{suffix}")
            assert theirs.status_code == nobody.status_code == 404, (method, suffix, theirs.text)
            assert theirs.json()["error"]["code"] == nobody.json()["error"]["code"] == "not_found"
            assert theirs.json()["error"]["message"].replace(job["id"], unknown) == nobody.json()["error"]["message"]
        assert alice.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded", "bob's cancel did nothing"

        assert job["id"] in [j["id"] for j in alice.get("/v1/jobs").json()["jobs"]]
        assert job["id"] not in [j["id"] for j in bob.get("/v1/jobs").json()["jobs"]]
    with service.client() as anonymous:  # the keyless API on the same store: the job is not the anonymous'
        assert anonymous.get(f"/v1/jobs/{job['id']}").status_code == 404

    record = service.redis.hgetall(job_key(job["id"]))
    assert record["owner"] == "alice"
    stored = " ".join(service.redis.keys("srgan:*")) + " ".join(record.values())
    logged = caplog.text
    assert "alice" in logged
    for secret in (ALICE, BOB, hash_api_key(ALICE)[7:]):
        assert secret not in stored and secret not in logged


def test_the_list_is_newest_first_and_pages(idle_api):
    api = idle_api(api_keys=KEYS, max_queued_jobs=50, key_max_queued_jobs=50)
    with api.client(headers={"X-API-Key": BOB}) as bob:
        ids = [submit(bob, image_bytes(8, 8, seed=i), None).json()["id"] for i in range(5)]
        page = bob.get("/v1/jobs", params={"limit": 2, "offset": 1}).json()
        assert [j["id"] for j in page["jobs"]] == ids[::-1][1:3]
        assert bob.get("/v1/jobs", params={"limit": 0}).status_code == 422


def test_requests_per_minute_are_counted_per_key_across_api_processes(idle_api):
    first = idle_api(api_keys=KEYS, rate_limit_per_minute=4)
    second = idle_api(api_keys=KEYS, rate_limit_per_minute=4)
    headers = {"X-API-Key": ALICE}
    with first.client(headers=headers) as one, second.client(headers=headers) as two:
        answers = [client.get("/v1/models") for client in (one, two, one, two)]
        assert [a.status_code for a in answers] == [200] * 4
        assert [a.headers["ratelimit-remaining"] for a in answers] == ["3", "2", "1", "0"]
        assert answers[0].headers["ratelimit-limit"] == "4" and answers[0].headers["ratelimit-policy"] == "4;w=60"
        assert 0 < int(answers[-1].headers["ratelimit-reset"]) <= 60

        over = one.get("/v1/jobs/" + str(uuid.uuid4()))
        assert over.status_code == 429, over.text
        assert over.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(over.headers["retry-after"]) <= 15  # one request back every 60/4 s
        assert over.headers["ratelimit-remaining"] == "0"
        assert two.post("/v1/jobs").status_code == 429, "refused before the upload is read"
        with first.client(headers={"X-API-Key": BOB}) as bob:
            assert bob.get("/v1/models").status_code == 200, "another key has its own allowance"


def test_queued_jobs_per_key_are_limited(idle_api):
    api = idle_api(api_keys=KEYS, key_max_queued_jobs=2)
    with api.client() as client:
        assert [submit(client, image_bytes(8, 8), ALICE).status_code for _ in range(2)] == [202, 202]
        third = submit(client, image_bytes(8, 8), ALICE)
        assert third.status_code == 429 and third.json()["error"]["code"] == "quota_exceeded", third.text
        assert "key_max_queued_jobs" in third.json()["error"]["message"] and int(third.headers["retry-after"]) > 0
        assert submit(client, image_bytes(8, 8), BOB).status_code == 202, "bob has his own quota"
        alice_jobs = client.get("/v1/jobs", headers={"X-API-Key": ALICE}).json()["jobs"]
        assert client.delete(alice_jobs[0]["links"]["self"], headers={"X-API-Key": ALICE}).status_code == 200
        assert submit(client, image_bytes(8, 8), ALICE).status_code == 202, "a canceled job frees its place"
    inputs = list(api.settings.resolved_storage_dir.glob("*/input"))
    assert len(inputs) == 4, "the 4 accepted jobs' uploads (the canceled one's until the sweep); none refused"


def test_input_pixels_per_hour_are_limited(idle_api):
    api = idle_api(api_keys=KEYS, key_max_pixels_per_hour=100)
    with api.client() as client:
        assert submit(client, image_bytes(8, 8), ALICE).status_code == 202  # 64 of 100
        again = submit(client, image_bytes(8, 8), ALICE)
        assert again.status_code == 429 and again.json()["error"]["code"] == "quota_exceeded", again.text
        # 36 pixels are left; the 28 more it needs come back at 100 an hour: in 1008 s
        assert 1000 <= int(again.headers["retry-after"]) <= 1010
        assert submit(client, image_bytes(5, 5), ALICE).status_code == 202, "a smaller image still fits"
        never = submit(client, image_bytes(11, 10), ALICE)
        assert never.status_code == 422 and never.json()["error"]["code"] == "quota_exceeded"
        assert submit(client, image_bytes(8, 8), BOB).status_code == 202


def test_the_queue_limit_admits_exactly_its_number_of_concurrent_uploads(idle_api):
    api = idle_api(max_queued_jobs=5)
    data = image_bytes(16, 16)
    start = threading.Barrier(40)
    statuses: list[int] = []
    codes: list[str] = []

    def post() -> None:
        with api.client() as client:
            start.wait()
            answer = submit(client, data, None)
            statuses.append(answer.status_code)
            if answer.status_code != 202:
                codes.append(answer.json()["error"]["code"])

    threads = [threading.Thread(target=post) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert Counter(statuses) == {202: 5, 429: 35}, Counter(statuses)
    assert set(codes) == {"queue_full"}
    client = redis.Redis.from_url(api.settings.redis_url)
    assert client.scard("srgan:jobs:queued") == 5
    assert len(list(api.settings.resolved_storage_dir.glob("*/input"))) == 5, "refused uploads leave no files"


def test_readyz_names_the_failed_check_without_the_redis_address(make_settings, tmp_path):
    from core.redis_server import free_port

    port = free_port()  # nothing listens there
    api = LiveApi(make_settings(f"redis://127.0.0.1:{port}/0")).start()
    try:
        with api.client() as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503
            checks = ready.json()["checks"]
            assert checks["redis"]["ok"] is False and checks["storage"]["ok"] is True
            assert str(port) not in ready.text and "127.0.0.1" not in ready.text
            job = client.get("/v1/jobs/" + str(uuid.uuid4()))
            assert job.status_code == 503 and str(port) not in job.text
    finally:
        api.stop()


def test_idempotency_keys_batches_and_event_streams_belong_to_the_key_too(keyed_api, service):
    """Integration features scope by the key's name: another key's batch or job stream is 404 like an
    unknown one, and the same Idempotency-Key used by two keys makes two jobs."""
    upload = image_bytes(12, 10, seed=5)
    with keyed_api.client(headers={"X-API-Key": ALICE}) as alice, keyed_api.client(headers={"X-API-Key": BOB}) as bob:
        key = {"Idempotency-Key": f"same-{uuid.uuid4()}"}
        first = alice.post("/v1/jobs", files={"file": ("a.png", upload, "image/png")}, headers=key)
        again = alice.post("/v1/jobs", files={"file": ("a.png", upload, "image/png")}, headers=key)
        other = bob.post("/v1/jobs", files={"file": ("a.png", upload, "image/png")}, headers=key)
        assert first.status_code == 202 and again.headers.get("idempotent-replayed") == "true", again.text
        assert again.json()["id"] == first.json()["id"]
        assert other.status_code in (201, 202) and "idempotent-replayed" not in other.headers, other.text
        assert other.json()["id"] != first.json()["id"] and other.json()["owner"] == "bob"
        job = wait_for(alice, first.headers["location"])
        assert job["status"] == "succeeded" and job["owner"] == "alice"

        made = alice.post("/v1/batches", files=[("file", ("a.png", upload, "image/png")),
                                                ("file", ("bad.png", b"not an image", "image/png"))])
        assert made.status_code == 202, made.text
        batch = made.json()
        assert {j["owner"] for j in batch["jobs"]} == {"alice"}
        for done in (wait_for(alice, j["links"]["self"]) for j in batch["jobs"]):
            assert done["status"] in ("succeeded", "failed")
        listed = [j["id"] for j in alice.get("/v1/jobs", params={"limit": 100}).json()["jobs"]]
        assert all(j["id"] in listed for j in batch["jobs"]), "a batch's jobs, the failed one too, are listed"
        assert alice.get(batch["links"]["self"]).status_code == 200
        with alice.stream("GET", job["links"]["events"]) as stream:
            assert stream.status_code == 200 and "event: status" in stream.read().decode()

        unknown = str(uuid.uuid4())
        for theirs, nobody in ((batch["links"]["self"], f"/v1/batches/{unknown}"),
                               (batch["links"]["events"], f"/v1/batches/{unknown}/events"),
                               (batch["links"]["archive"], f"/v1/batches/{unknown}/archive"),
                               (job["links"]["events"], f"/v1/jobs/{unknown}/events")):
            answers = [bob.get(theirs), bob.get(nobody)]
            assert [a.status_code for a in answers] == [404, 404], (theirs, answers[0].text)
            assert answers[0].json()["error"]["code"] == answers[1].json()["error"]["code"] == "not_found"
        with service.client() as anonymous:
            assert anonymous.get(batch["links"]["self"]).status_code == 404
        # a signed link is the owner's to hand out: it works without any key
        assert httpx.get(job["links"]["share"], timeout=10).status_code == 200
