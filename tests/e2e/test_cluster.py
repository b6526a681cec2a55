"""One register for two Asterisk servers: two callrec nodes, each beside its own real Asterisk
22, sharing one PostgreSQL and one S3 store (SeaweedFS). Any node plays, exports and destroys
any recording; an outage of the store loses nothing; a node killed mid-sweep leaves nothing
half done (docs/archive.md#stores, docs/retention.md#several-nodes)."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from tests.e2e.conftest import (
    Daemon,
    archive_key,
    archived_audio,
    settings_of,
    start_daemon,
    wait_archived,
    wait_no_channels,
    wait_rows,
)
from tests.harness.asterisk import REPO, TEST_AMI_USER, Asterisk
from tests.harness.audio import decoded_pcm
from tests.harness.driver import Driver
from tests.harness.seaweed import Seaweed

from callrec.archive import reading
from callrec.archive.store import object_name

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def asterisk_b(asterisk: Asterisk, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Asterisk]:
    """A second PBX from the same cached root: its own config, run and spool folders, ports."""
    ast = Asterisk(recordings_dir=tmp_path_factory.mktemp("pbx-b") / "recordings")
    ast.start()
    yield ast
    ast.destroy()


@pytest.fixture
def nodes(
    tmp_path: Path, asterisk: Asterisk, asterisk_b: Asterisk, db_dsn: str, seaweed: Seaweed
) -> Iterator[tuple[Daemon, Daemon]]:
    key = archive_key(tmp_path / "shared" / "state")  # every node shares the key-encryption key
    prefix = f"cluster-{uuid.uuid4().hex[:8]}/"
    a = start_daemon(
        tmp_path / "a", asterisk, db_dsn, node="pbx-a", key_file=key, storage=seaweed.toml(prefix)
    )
    b = start_daemon(
        tmp_path / "b", asterisk_b, db_dsn, node="pbx-b", key_file=key, storage=seaweed.toml(prefix)
    )
    yield a, b
    for d, ast in ((a, asterisk), (b, asterisk_b)):
        wait_no_channels(ast, timeout=60)
        assert d.stop() == 0, d.log()[-3000:]
        assert "Traceback" not in d.log(), d.log()[-3000:]


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callrec.cli", *args, "--config", str(daemon.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(REPO / "daemon")),
    )


def token(daemon: Daemon, name: str, role: str) -> str:
    assert cli(daemon, "users", "add", name, "--role", role).returncode == 0
    out = cli(daemon, "users", "token", name)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def api(daemon: Daemon, path: str, tok: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = settings_of(daemon).api_listen or ("", 0)
    req = urllib.request.Request(
        f"http://{host}:{port}{path}",
        data=body,
        headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, dict(resp.headers), resp.read()


def one(dsn: str, sql: str, *params: object) -> tuple[Any, ...] | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchone()


def driver_of(ast: Asterisk) -> Driver:
    return Driver(ast.ami_port, TEST_AMI_USER, ast.ami_secret)


def node_rows(dsn: str, node: str, count: int, timeout: float = 60) -> list[dict[str, object]]:
    rows = wait_rows(dsn, count, timeout=timeout, where=f"node = '{node}' AND archived_at IS NOT NULL")
    assert len(rows) >= count, f"{len(rows)} archived rows of {node}, expected {count}"
    return rows


def test_each_node_serves_exports_and_destroys_the_others_recordings(
    nodes: tuple[Daemon, Daemon], asterisk: Asterisk, asterisk_b: Asterisk, db_dsn: str
) -> None:
    a, b = nodes
    with driver_of(asterisk) as da, driver_of(asterisk_b) as db:
        da.inbound("0300", "+358 40 123 4567", talk=3)
        db.inbound("0300", "+358 50 765 4321", talk=4)
    (row_a,) = node_rows(db_dsn, "pbx-a", 1)
    (row_b,) = node_rows(db_dsn, "pbx-b", 1)
    assert row_b["customer_number_masked"] == "+358507654***"

    # Node A plays node B's recording: the object is in the shared store, the key in PostgreSQL.
    dpo = token(a, "dana", "dpo")
    status, headers, body = api(a, f"/api/recordings/{row_b['id']}/audio", dpo)
    assert status == 200 and headers["Content-Type"] == "audio/ogg"
    assert abs(len(decoded_pcm(body)) / 8000 - float(row_b["duration_seconds"])) < 1.5  # type: ignore[arg-type]
    request = (
        b'{"recording_ids": ["' + str(row_b["id"]).encode() + b'"], "recipient": "the data subject",'
        b' "legal_basis": "GDPR Art. 15", "case_reference": "DSAR-7"}'
    )
    status, _, bundle = api(a, "/api/exports", dpo, request)
    with zipfile.ZipFile(io.BytesIO(bundle)) as z:
        (member,) = [n for n in z.namelist() if n.startswith("audio/")]
        assert z.read(member) == body

    # Node A's sweep destroys node B's due recording: row, key and object.
    rid = row_b["id"]
    one(db_dsn, "UPDATE recordings SET retain_until = now() - interval '1 s' WHERE id = %s RETURNING id", rid)
    out = cli(a, "retention")
    assert out.returncode == 0, out.stderr
    assert one(db_dsn, "SELECT count(*) FROM recordings WHERE id = %s", rid) == (0,)
    assert one(db_dsn, "SELECT count(*) FROM recording_keys WHERE recording_id = %s", rid) == (0,)
    logged = one(
        db_dsn,
        "SELECT node, audio_deleted_from, key_destroyed_at IS NOT NULL FROM disposal_log"
        " WHERE recording_id = %s",
        rid,
    )
    assert logged == ("pbx-b", "archive", True)
    store = reading.open_store(settings_of(a))

    async def gone() -> bool:
        try:
            await store.size(object_name(uuid.UUID(str(row_b["id"]))))
        except FileNotFoundError:
            return True
        finally:
            await store.close()
        return False

    assert asyncio.run(gone())
    assert archived_audio(db_dsn, settings_of(b), row_a["id"])[:4] == b"OggS"  # and B reads A's


def test_the_store_down_for_30_s_during_calls_loses_nothing(
    nodes: tuple[Daemon, Daemon], asterisk: Asterisk, asterisk_b: Asterisk, db_dsn: str, seaweed: Seaweed
) -> None:
    a, b = nodes
    seaweed.stop()
    stopped = time.monotonic()
    try:
        with driver_of(asterisk) as da, driver_of(asterisk_b) as db:
            for n in range(3):
                da.inbound(f"03{n}0", "0401112222", talk=3)
                db.inbound(f"03{n}1", "0403334444", talk=3)
        rows = wait_rows(db_dsn, 6, timeout=60)
        assert len(rows) == 6
        a.wait_log('"archive step waits; the WAVs stay until it can go on"', timeout=60)
        # The outage goes on for 30 s in all (a fault's length, not a wait for a result).
        time.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            assert conn.execute(
                "SELECT count(*) FROM recordings WHERE archived_at IS NOT NULL"
            ).fetchone() == (0,)
        for d, ast in ((a, asterisk), (b, asterisk_b)):
            for r in rows:
                if r["node"] == settings_of(d).node:
                    assert (ast.recordings_dir / str(r["file_path"])).exists(), "a WAV went before its object"
    finally:
        seaweed.start()
    for r in rows:
        wait_archived(db_dsn, r, timeout=120)
    for r in rows:
        reader = a if r["node"] == "pbx-b" else b  # each read through the other node's settings
        assert archived_audio(db_dsn, settings_of(reader), r["id"])[:4] == b"OggS"


def put_file(path: Path, data: bytes) -> None:
    """Write a file into a day folder long past: a running node's sweep removes such a folder
    whenever it finds it empty (retention/files.py), which it may do between our mkdir and our
    write. The folder is then made again, a few times at most."""
    for _ in range(5):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.write_bytes(data)
            return
        except FileNotFoundError:
            continue
    raise FileNotFoundError(path)


def test_a_node_killed_mid_sweep_leaves_nothing_half_done(
    nodes: tuple[Daemon, Daemon], asterisk_b: Asterisk, db_dsn: str
) -> None:
    """Many due recordings of node B (rows and WAVs); node B's `callrec retention` is killed with
    SIGKILL mid-pass; the next passes of A and B destroy every one, exactly once."""
    a, b = nodes
    s_b = settings_of(b)

    async def make(n: int) -> list[uuid.UUID]:
        from datetime import UTC, datetime, timedelta

        from callrec.db import recordings
        from callrec.recording.facts import Recording

        pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
        ids = []
        try:
            for _ in range(n):
                rid = uuid.uuid4()
                ended = datetime.now(UTC) - timedelta(days=400)
                rel = f"{ended:%Y/%m/%d}/{rid}.wav"
                path = s_b.asterisk.recordings_dir / rel
                put_file(path, b"RIFF" + bytes(40))
                row = Recording(
                    id=rid,
                    call_id="x",
                    register_name="customer-service",
                    direction="inbound",
                    started_at=ended - timedelta(seconds=10),
                    ended_at=ended,
                    duration_seconds=10.0,
                    service_number=None,
                    customer_number_masked=None,
                    customer_number_hmac=None,
                    agent_name=None,
                    file_path=rel,
                    file_size=44,
                    sha256="0" * 64,
                    node="pbx-b",
                    recovered=False,
                    interrupted=False,
                )
                assert await recordings.insert(pool, row, "6 months")
                ids.append(rid)
        finally:
            await pool.close()
        return ids

    ids = asyncio.run(make(3000))
    env = dict(os.environ, PYTHONPATH=str(REPO / "daemon"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "callrec.cli", "retention", "--config", str(b.config_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        # Mid-pass: some recordings destroyed and logged, others not yet claimed.
        while conn.execute("SELECT count(*) FROM disposal_log WHERE node = 'pbx-b'").fetchone() == (0,):
            assert time.monotonic() < deadline and proc.poll() is None, "the pass did not get going"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert conn.execute("SELECT count(*) FROM recordings WHERE id = ANY(%s)", (ids,)).fetchone() != (0,)
    for d in (a, b):  # A's pass claims what is left (B's files wait for B), B's deletes them
        assert cli(d, "retention").returncode == 0
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM recordings WHERE id = ANY(%s)", (ids,)).fetchone()
        pending = conn.execute(
            "SELECT count(*) FROM disposal_pending WHERE recording_id = ANY(%s)", (ids,)
        ).fetchone()
        logged = conn.execute(
            "SELECT count(*), count(DISTINCT recording_id) FROM disposal_log WHERE recording_id = ANY(%s)",
            (ids,),
        ).fetchone()
    assert (left, pending, logged) == ((0,), (0,), (len(ids), len(ids)))
    assert not [
        p for p in s_b.asterisk.recordings_dir.rglob("*.wav") if p.name.split(".")[0] in {str(i) for i in ids}
    ]
