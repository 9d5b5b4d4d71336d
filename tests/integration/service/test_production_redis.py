"""The production Redis of docker-compose.yml (and deploy/k8s, which the unit tests keep equal): its one ACL
user with a password, no admin or dangerous commands, the default user off. A real redis-server started with
exactly those rules runs the whole service (the API, a real worker, readiness, a signed link), refuses what
the service never runs and anyone without the password, and never holds the link-signing secret."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import redis
import yaml

from core.keyspace import LINK_SECRET as SECRET_KEY
from core.redis_server import die_with_parent, free_port, redis_executable
from tests.utils.compose import interpolate
from tests.utils.service import api_and_worker, image_bytes, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[3]
PASSWORD = "pw" + "0123456789abcdef" * 2


def compose_redis_rules() -> list[str]:
    """The ACL arguments of docker-compose.yml's redis command, with the password of this test."""
    command = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["redis"]["command"]
    rules = command[command.index("--user"):]
    return [interpolate(arg, {"SRGAN_REDIS_PASSWORD": PASSWORD}) for arg in rules]


@pytest.fixture
def production_redis(tmp_path: Path):
    port = free_port()
    process = subprocess.Popen(  # noqa: S603
        [redis_executable(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path), "--logfile", str(tmp_path / "redis.log"), *compose_redis_rules()],
        stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
    client = redis.Redis(port=port, username="srgan", password=PASSWORD)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "redis.log").read_text()
            time.sleep(0.05)
    try:
        yield port, client
    finally:
        client.close()
        process.terminate()
        process.wait(10)


def test_the_service_runs_on_the_production_redis_user(production_redis, make_settings, tmp_path: Path):
    port, admin_probe = production_redis
    settings = make_settings(f"redis://srgan@127.0.0.1:{port}/0", redis_password=PASSWORD,
                             link_secret="link-secret-" + "x" * 32)
    log_path = tmp_path / "worker.log"
    with api_and_worker(settings, log_path) as client:
        assert client.get("/readyz").status_code == 200
        created = client.post("/v1/jobs", files={"file": ("a.png", image_bytes(24, 16), "image/png")})
        assert created.status_code == 202, created.text
        job = wait_for(client, created.headers["location"])
        assert job["status"] == "succeeded", job
        assert client.get(job["links"]["result"]).status_code == 200
        assert client.get(job["links"]["share"]).status_code == 200  # signed with the configured secret
        assert "srgan_queue_depth" in client.get("/metrics").text
    assert "NOPERM" not in log_path.read_text()
    assert not admin_probe.exists(SECRET_KEY), "the link-signing secret is never kept in Redis"


def test_the_production_redis_refuses_strangers_and_admin_commands(production_redis):
    port, client = production_redis
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port).ping()  # the default user is off
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port, username="srgan", password="wrong").ping()
    for command in (("CONFIG", "GET", "port"), ("FLUSHALL",), ("KEYS", "*"),
                    ("ACL", "LIST"), ("SHUTDOWN",), ("MODULE", "LIST"), ("REPLICAOF", "NO", "ONE")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
