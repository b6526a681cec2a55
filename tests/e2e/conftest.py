"""End-to-end fixtures: the real Asterisk 22 (chroot) and the real daemon as a process."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import psycopg
import pytest
from tests.harness.asterisk import REPO, TEST_AMI_USER, Asterisk, ensure_root, free_port
from tests.harness.daemon import DaemonProcess
from tests.harness.driver import Driver
from tests.harness.postgres import owner_of

from callrec import config
from callrec.archive import reading
from callrec.archive.store import object_name
from callrec.config import Settings
from callrec.db import recordings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def asterisk() -> Iterator[Asterisk]:
    if os.geteuid() != 0:
        pytest.skip("the real-Asterisk tests need root (chroot and bind mounts); CI runs them as root")
    ensure_root()
    rec = Path(tempfile.mkdtemp(prefix="callrec-e2e-")) / "recordings"
    ast = Asterisk(recordings_dir=rec)
    ast.start()
    yield ast
    ast.destroy()


@pytest.fixture
def driver(asterisk: Asterisk) -> Iterator[Driver]:
    d = Driver(asterisk.ami_port, TEST_AMI_USER, asterisk.ami_secret)
    yield d
    d.close()


@dataclass
class Daemon(DaemonProcess):
    config_path: Path
    metrics_port: int
    stop_timeout: ClassVar[float] = 40.0

    def wait_log(self, needle: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log():
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{needle!r} not logged in {timeout}s:\n{self.log()[-3000:]}")
            time.sleep(0.05)


def archive_key(state_dir: Path) -> Path:
    """The key-encryption key of the daemons sharing ``state_dir``, made once."""
    key = state_dir.parent / "archive.key"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(os.urandom(32))
        key.chmod(0o600)
    return key


def write_config(
    path: Path,
    asterisk: Asterisk,
    dsn: str,
    metrics_port: int,
    *,
    drain_timeout: float = 30,
    state_dir: Path | None = None,
    extra: str = "",
    storage: str | None = None,
    node: str | None = None,
    key_file: Path | None = None,
    daemon_keys: str = "",
    mode: str = "event",
    archive: bool = True,
) -> None:
    """``extra`` is appended as it is (more TOML tables, e.g. ``[agi]``); ``daemon_keys`` are
    more lines of ``[daemon]`` (e.g. ``max_pause = 2``). The archive is encrypted, its key and
    store beside the state: runs that share a state share both. ``storage`` replaces the
    ``[storage]`` table (e.g. SeaweedFS's, tests/harness/seaweed.py). ``archive=False``: the
    archive step is off and MixMonitor's WAV stays (tests that read it sample by sample)."""
    state_dir = state_dir or path.parent / "state"
    # A node of its own per state: the tests share one Asterisk and its recordings_dir, and a
    # daemon's start-up scan takes only files named for its node (recording/strays.py).
    node = node or "e2e-" + hashlib.sha256(str(state_dir).encode()).hexdigest()[:8]
    key_file = key_file or archive_key(state_dir)
    storage = storage or f'[storage]\npath = "{state_dir.parent / "archive"}"\n'
    archive_table = f'[archive]\nkey_file = "{key_file}"' if archive else "[archive]\nenabled = false"

    path.write_text(f"""
[asterisk]
ari_url = "{asterisk.ari_url}"
ari_username = "callrec"
ari_password = "{asterisk.ari_password}"
ari_app = "callrec"
ami_host = "127.0.0.1"
ami_port = {asterisk.ami_port}
ami_username = "callrec"
ami_secret = "{asterisk.ami_secret}"
recordings_dir = "{asterisk.recordings_dir}"
[database]
dsn = "{dsn}"
owner_dsn = "{owner_of(dsn)}"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[api]
listen = "127.0.0.1:{free_port()}"
[daemon]
{f'mode = "{mode}"' if mode != "event" else ""}
drain_timeout = {drain_timeout}
file_wait_timeout = 10
state_dir = "{state_dir}"
node = "{node}"
{daemon_keys}
{archive_table}
{storage}
[registers.customer-service]
direction = "inbound"
retention = "6 months"
[registers.telesales]
direction = "outbound"
retention = "1 month"
""")
    if extra:
        with path.open("a") as f:
            f.write(extra)


def start_daemon(
    tmp_path: Path,
    asterisk: Asterisk,
    dsn: str,
    *,
    drain_timeout: float = 30,
    state_dir: Path | None = None,
    extra_config: str = "",
    daemon_keys: str = "",
    quiet: bool = True,
    mode: str = "event",
    **config: Any,
) -> Daemon:
    """Run ``callrec run`` as a process with its config and log in ``tmp_path``.

    ``quiet``: first wait until the shared Asterisk has no channels, so a call a previous
    test left up is not adopted by this daemon (and does not hold up its drain)."""
    if quiet:
        wait_no_channels(asterisk, timeout=60)
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "callrec.toml"
    port = free_port()
    write_config(
        cfg,
        asterisk,
        dsn,
        port,
        drain_timeout=drain_timeout,
        state_dir=state_dir,
        extra=extra_config,
        daemon_keys=daemon_keys,
        mode=mode,
        **config,
    )
    log_path = tmp_path / "daemon.log"
    env = dict(os.environ, PYTHONPATH=str(REPO / "daemon"))
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "callrec.cli", "run", "--config", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    daemon = Daemon(proc, log_path, cfg, port)
    daemon.wait_log('"callrec ready"')
    return daemon


def run_daemon(tmp_path: Path, asterisk: Asterisk, db_dsn: str, **config: Any) -> Iterator[Daemon]:
    """The body of a ``daemon`` fixture: started, then stopped cleanly once Asterisk is quiet."""
    d = start_daemon(tmp_path, asterisk, db_dsn, **config)
    yield d
    wait_no_channels(asterisk, timeout=60)
    code = d.stop()
    assert code == 0, d.log()[-3000:]
    assert "Traceback" not in d.log(), d.log()[-3000:]


@pytest.fixture
def daemon(tmp_path: Path, asterisk: Asterisk, db_dsn: str) -> Iterator[Daemon]:
    yield from run_daemon(tmp_path, asterisk, db_dsn)


def wait_rows(dsn: str, count: int, timeout: float = 40, where: str = "TRUE") -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            cur = conn.execute(f"SELECT * FROM recordings WHERE {where} ORDER BY started_at")
            cols = [c.name for c in cur.description or []]
            rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)


def wait_audio_flowing(asterisk: Asterisk, count: int, before: set[Path], timeout: float = 20) -> None:
    """Until ``count`` recordings not in ``before`` have audio past their WAV header: MixMonitor
    opens its file on the first frame, a moment after it was asked to start."""
    deadline = time.monotonic() + timeout
    while True:
        fresh = [
            p for p in asterisk.recordings_dir.rglob("*.wav") if p not in before and p.stat().st_size > 44
        ]
        if len(fresh) >= count:
            return
        assert time.monotonic() < deadline, f"{len(fresh)} of {count} recordings have audio"
        time.sleep(0.05)


def settings_of(daemon: Daemon) -> Settings:
    return config.load(daemon.config_path)


def wait_archived(dsn: str, row: dict[str, object], timeout: float = 30) -> dict[str, object]:
    """The row once the archive step has its recording (the WAV is gone from then on)."""
    found = wait_rows(dsn, 1, timeout=timeout, where=f"id = '{row['id']}' AND archived_at IS NOT NULL")
    assert found, f"recording {row['id']} not archived in {timeout}s"
    return found[0]


def archived_audio(dsn: str, settings: Settings, recording_id: object) -> bytes:
    """The decrypted archived audio, read as the API reads it (archive/reading.py)."""

    async def read() -> bytes:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        try:
            record = await pool.fetchrow(recordings.SELECT + " WHERE r.id = $1", recording_id)
            assert record is not None
            rec = recordings.from_record(record)
            archive = reading.open_archive(settings)
            assert archive is not None
            try:
                sound = await reading.open_audio(pool, rec, archive, settings.asterisk.recordings_dir)
                with sound:
                    return b"".join([b async for b in sound.read(0, sound.size - 1)])
            finally:
                await archive.store.close()
        finally:
            await pool.close()

    return asyncio.run(read())


def audio_kind(settings: Settings, row: dict[str, object]) -> str | None:
    """Where the row's audio is now: its WAV, its archive object, or nowhere (a lost call)."""
    if (settings.asterisk.recordings_dir / str(row["file_path"])).exists():
        return "wav"
    if (settings.storage.path / object_name(uuid.UUID(str(row["id"])))).exists():
        return "object"
    return None


def wait_no_channels(asterisk: Asterisk, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while "0 active channels" not in asterisk.cli_output("core show channels count"):
        if time.monotonic() > deadline:
            raise TimeoutError(asterisk.cli_output("core show channels"))
        time.sleep(0.2)
