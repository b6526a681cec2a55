"""The archive step on a real PostgreSQL, real files and real codecs: a WAV becomes a sealed
Opus object and its row says so; each failure point leaves the WAV or the object, never
neither; retention and erasure destroy the key before the object; rotation keeps every
recording playable; ``callrec verify`` finds tampering (docs/archive.md)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callrec import cli, config
from callrec.archive import codec, keys, reading
from callrec.archive.crypto import CHUNK, new_kek_file
from callrec.archive.pipeline import Archiver, Outcome
from callrec.archive.reading import Archive
from callrec.archive.store import FilesystemStore, StoreError, object_name
from callrec.config import Settings
from callrec.db import recordings
from callrec.ops.metrics import REGISTRY
from callrec.recording.facts import Recording
from callrec.recording.journal import Journal
from callrec.retention import holds
from callrec.retention.sweep import Sweeper
from tests.harness.audio import speech_pcm, write_wav
from tests.harness.config import offline_toml

REPO = Path(__file__).resolve().parents[2]
SECONDS = 20.0
NOW = datetime.now(UTC)


def write_config(tmp_path: Path, dsn: str, *, key: Path | None, retired: Sequence[Path] = ()) -> Path:
    path = tmp_path / "callrec.toml"
    key_line = f'key_file = "{key}"' if key else ""
    retired_line = f"retired_key_files = {[str(p) for p in retired]!r}".replace("'", '"')
    archive = f'[archive]\n{key_line}\n{retired_line}\n[storage]\npath = "{tmp_path / "archive"}"'
    path.write_text(offline_toml(tmp_path, dsn, archive, node="n1"))
    return path


@pytest.fixture
def kek(tmp_path: Path) -> Path:
    path = tmp_path / "kek1"
    new_kek_file(path)
    return path


@pytest.fixture
def s(tmp_path: Path, db_dsn: str, kek: Path) -> Settings:
    return config.load(write_config(tmp_path, db_dsn, key=kek))


@pytest.fixture
async def journal(s: Settings) -> AsyncIterator[Journal]:
    j = await Journal.open(s.state_dir)
    yield j
    await j.close()


def archive_of(s: Settings) -> Archive:
    a = reading.open_archive(s)
    assert a is not None
    return a


@pytest.fixture
async def archiver(pool: asyncpg.Pool, s: Settings, journal: Journal) -> AsyncIterator[Archiver]:
    a = Archiver(pool, archive_of(s), s.asterisk.recordings_dir, journal)
    yield a
    a.close()


async def add(pool: asyncpg.Pool, s: Settings, *, seconds: float = SECONDS, age_days: float = 0) -> Recording:
    """A finished recording as the recorder leaves it: a row and MixMonitor's WAV."""
    rid = uuid.uuid4()
    ended = NOW - timedelta(days=age_days)
    started = ended - timedelta(seconds=seconds)
    rel = f"{started:%Y/%m/%d}/{rid}.wav"
    path = write_wav(s.asterisk.recordings_dir / rel, speech_pcm(seconds))
    data = path.read_bytes()
    row = Recording(
        id=rid,
        call_id="1795373223.0",
        register_name="customer-service",
        direction="inbound",
        started_at=started,
        ended_at=ended,
        duration_seconds=seconds,
        service_number="0300",
        customer_number_masked="+358401234***",
        customer_number_hmac=None,
        agent_name="alice",
        file_path=rel,
        file_size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        node="n1",
        recovered=False,
        interrupted=False,
    )
    assert await recordings.insert(pool, row, "6 months")
    return row


async def row_of(pool: asyncpg.Pool, rid: uuid.UUID) -> Recording:
    record = await pool.fetchrow(recordings.SELECT + " WHERE r.id = $1", rid)
    assert record is not None
    return recordings.from_record(record)


async def audio_bytes(
    pool: asyncpg.Pool, s: Settings, rec: Recording, start: int = 0, end: int | None = None
) -> bytes:
    with await reading.open_audio(pool, rec, archive_of(s), s.asterisk.recordings_dir) as sound:
        last = sound.size - 1 if end is None else end
        return b"".join([b async for b in sound.read(start, last)])


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def obj_path(s: Settings, rid: uuid.UUID) -> Path:
    return s.storage.path / object_name(rid)


# --- the step itself ---------------------------------------------------------------------------


async def test_a_recording_is_archived_sealed_and_its_wav_deleted(
    pool: asyncpg.Pool, s: Settings, archiver: Archiver
) -> None:
    rec = await add(pool, s)
    wav = s.asterisk.recordings_dir / rec.file_path
    before = metric("callrec_archived_total", format="opus")

    assert await archiver.archive_one(rec.id) is Outcome.ARCHIVED

    row = await row_of(pool, rec.id)
    assert row.archived_at is not None and row.encrypted and row.audio_format == "opus"
    assert not wav.exists()
    stored = obj_path(s, rec.id).read_bytes()
    assert b"OggS" not in stored  # not an Ogg file: sealed
    assert row.file_size < rec.file_size / 10  # >= 10x smaller than the WAV
    key_rows = await pool.fetch(
        "SELECT key_id, wrapped_key FROM recording_keys WHERE recording_id = $1", rec.id
    )
    assert len(key_rows) == 1 and len(key_rows[0]["wrapped_key"]) == 40
    plain = await audio_bytes(pool, s, row)
    assert plain[:4] == b"OggS"
    assert hashlib.sha256(plain).hexdigest() == row.sha256 and len(plain) == row.file_size
    assert codec.probe_seconds(io.BytesIO(plain)) == pytest.approx(SECONDS, abs=0.1)
    assert metric("callrec_archived_total", format="opus") == before + 1


async def test_range_reads_across_chunk_borders_match_the_whole(
    pool: asyncpg.Pool, s: Settings, archiver: Archiver
) -> None:
    rec = await add(pool, s, seconds=120)  # ~180 KB of Opus: three chunks
    await archiver.archive_one(rec.id)
    row = await row_of(pool, rec.id)
    whole = await audio_bytes(pool, s, row)
    assert row.file_size > 2 * CHUNK
    for start, end in [
        (0, 0),
        (CHUNK - 3, CHUNK + 3),
        (CHUNK, 2 * CHUNK),
        (1, row.file_size - 1),
        (row.file_size - 1, row.file_size - 1),
    ]:
        assert await audio_bytes(pool, s, row, start, end) == whole[start : end + 1]


async def test_without_a_key_the_archive_is_plain_opus(
    pool: asyncpg.Pool, tmp_path: Path, db_dsn: str
) -> None:
    s = config.load(write_config(tmp_path, db_dsn, key=None))
    rec = await add(pool, s)
    a = Archiver(pool, archive_of(s), s.asterisk.recordings_dir)
    try:
        assert await a.archive_one(rec.id) is Outcome.ARCHIVED
    finally:
        a.close()
    row = await row_of(pool, rec.id)
    assert row.archived_at is not None and not row.encrypted
    assert obj_path(s, rec.id).read_bytes()[:4] == b"OggS"
    assert await pool.fetchval("SELECT count(*) FROM recording_keys") == 0


# --- nothing lost at any step ----------------------------------------------------------------


class FlakyStore(FilesystemStore):
    """The real filesystem store, failing where a test says: on put, or on the read-back."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.fail_put = False
        self.fail_read = False
        self.put_gate: asyncio.Event | None = None

    async def put_file(self, name: str, path: Path, *, retain_until: datetime | None = None) -> None:
        if self.put_gate is not None:
            await self.put_gate.wait()
        if self.fail_put:
            raise StoreError(f"{self.name}: connection refused (test)")
        await super().put_file(name, path, retain_until=retain_until)

    async def read(self, name: str, offset: int, length: int) -> bytes:
        if self.fail_read:
            raise StoreError(f"{self.name}: timed out (test)")
        return await super().read(name, offset, length)


def flaky(s: Settings) -> tuple[Archive, FlakyStore]:
    store = FlakyStore(s.storage.path)
    return Archive(s.archive, store, archive_of(s).keys), store


async def wav_or_object(pool: asyncpg.Pool, s: Settings, rec: Recording) -> str:
    """The invariant: the row points at a WAV that exists, or at an object that verifies."""
    row = await row_of(pool, rec.id)
    if row.archived_at is None:
        wav = s.asterisk.recordings_dir / rec.file_path
        assert wav.read_bytes()[:4] == b"RIFF", "row points at a WAV that is not there"
        return "wav"
    key = await keys.data_key(pool, archive_of(s).keys, rec.id) if row.encrypted else None
    await reading.verify(archive_of(s).store, rec.id, key, row.file_size, row.sha256)
    return "object"


async def test_a_store_outage_at_put_or_read_back_keeps_the_wav(
    pool: asyncpg.Pool, s: Settings, journal: Journal
) -> None:
    rec = await add(pool, s)
    archive, store = flaky(s)
    a = Archiver(pool, archive, s.asterisk.recordings_dir, journal)
    try:
        store.fail_put = True
        with pytest.raises(Exception, match="connection refused"):
            await a.archive_one(rec.id)
        assert await wav_or_object(pool, s, rec) == "wav"
        store.fail_put, store.fail_read = False, True
        with pytest.raises(Exception, match="timed out"):
            await a.archive_one(rec.id)
        # The object was put but never confirmed: the row still points at the WAV.
        assert obj_path(s, rec.id).exists()
        assert await wav_or_object(pool, s, rec) == "wav"
        store.fail_read = False
        assert await a.archive_one(rec.id) is Outcome.ARCHIVED  # the unconfirmed object is replaced
        assert await wav_or_object(pool, s, rec) == "object"
    finally:
        a.close()


async def test_a_wav_left_after_the_commit_is_deleted_on_the_next_run(
    pool: asyncpg.Pool, s: Settings, archiver: Archiver, journal: Journal
) -> None:
    """A kill -9 between the commit and the WAV's deletion: the journal still has the entry."""
    rec = await add(pool, s)
    wav = s.asterisk.recordings_dir / rec.file_path
    kept = wav.read_bytes()
    await journal.archive_enqueue([rec.id])
    await archiver.archive_one(rec.id)
    wav.write_bytes(kept)  # as the kill left it
    assert await archiver.archive_one(rec.id) is Outcome.ALREADY
    assert not wav.exists()
    assert await wav_or_object(pool, s, rec) == "object"


async def test_the_daemons_queue_works_off_a_backlog_in_order_through_an_outage(
    pool: asyncpg.Pool, s: Settings, journal: Journal
) -> None:
    recs = [await add(pool, s, seconds=3) for _ in range(5)]
    await journal.archive_enqueue([r.id for r in recs])
    archive, store = flaky(s)
    store.fail_put = True
    a = Archiver(pool, archive, s.asterisk.recordings_dir, journal)
    failures = metric("callrec_archive_failures_total", reason="store")
    task = asyncio.create_task(a.run())
    try:
        await until(lambda: metric("callrec_archive_failures_total", reason="store") > failures)
        assert metric("callrec_archive_backlog") == 5
        assert metric("callrec_connection_up", connection="store") == 0
        for r in recs:
            assert await wav_or_object(pool, s, r) == "wav"
        store.fail_put = False
        a.wake()
        await until_async(lambda: journal.archive_depth(), lambda d: d[0] == 0, timeout=60)
        archived = [(await row_of(pool, r.id)).archived_at for r in recs]
        assert all(archived) and archived == sorted(archived)  # oldest first
        for r in recs:
            assert await wav_or_object(pool, s, r) == "object"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(cond: Any, timeout: float = 30) -> None:
    """Poll a condition the code under test makes true (a metric, a row): no fixed sleep."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def until_async(get: Any, ok: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ok(await get()):
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def test_kill_9_during_backfill_at_any_moment_loses_nothing(tmp_path: Path, db_dsn: str, kek: Path) -> None:
    """The real thing: ``callrec archive --backfill`` killed with SIGKILL again and again at
    staggered moments; after every kill each row has its WAV or its verified object."""
    s = config.load(write_config(tmp_path, db_dsn, key=kek))

    async def setup() -> list[Recording]:
        p = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
        try:
            return [await add(p, s, seconds=30) for _ in range(12)]
        finally:
            await p.close()

    recs = asyncio.run(setup())
    cmd = [
        sys.executable,
        "-m",
        "callrec.cli",
        "archive",
        "--backfill",
        "--config",
        str(tmp_path / "callrec.toml"),
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO / "daemon"))

    async def check() -> tuple[int, int]:
        p = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
        try:
            kinds = [await wav_or_object(p, s, r) for r in recs]
        finally:
            await p.close()
        return kinds.count("wav"), kinds.count("object")

    kills = 0
    for delay in (0.6, 0.9, 1.2, 1.5, 1.8, 2.1):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=delay)  # a fault injected at an arbitrary moment, not a wait for sync
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        asyncio.run(check())  # raises if any row points at nothing
    assert kills >= 1
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    wavs, objects = asyncio.run(check())
    assert (wavs, objects) == (0, len(recs))
    leftover = [p for p in (tmp_path / "recordings").rglob("*.wav")]
    assert leftover == []


# --- destruction -------------------------------------------------------------------------------


async def test_retention_destroys_the_key_with_the_row_then_the_object(
    pool: asyncpg.Pool, s: Settings, archiver: Archiver
) -> None:
    rec = await add(pool, s, age_days=200)
    await archiver.archive_one(rec.id)
    _, store = flaky(s)
    real_delete = store.delete_many

    async def refuse(names: Sequence[str]) -> list[bool]:
        raise StoreError("store down (test)")

    store.delete_many = refuse  # type: ignore[method-assign]
    report = await Sweeper(pool, s, store).run_pass()
    assert report.errors == 1
    # The row and its key are gone although the object could not be deleted: from here on no
    # copy of the object (a backup, a stolen disk) can be read.
    assert await pool.fetchval("SELECT count(*) FROM recordings WHERE id = $1", rec.id) == 0
    assert await pool.fetchval("SELECT count(*) FROM recording_keys WHERE recording_id = $1", rec.id) == 0
    pending = await pool.fetchrow("SELECT * FROM disposal_pending WHERE recording_id = $1", rec.id)
    assert pending["archived"] and pending["key_destroyed_at"] is not None
    assert obj_path(s, rec.id).exists()

    store.delete_many = real_delete  # type: ignore[method-assign]
    report = await Sweeper(pool, s, store).run_pass()
    assert report.errors == 0 and not obj_path(s, rec.id).exists()
    log = await pool.fetchrow("SELECT * FROM disposal_log WHERE recording_id = $1", rec.id)
    assert log["audio_deleted_from"] == "archive"
    assert log["key_destroyed_at"] is not None and log["key_destroyed_at"] <= log["disposed_at"]


async def test_an_erasure_during_the_archive_step_waits_and_leaves_no_key(
    pool: asyncpg.Pool, s: Settings, journal: Journal
) -> None:
    rec = await add(pool, s)
    archive, store = flaky(s)
    store.put_gate = asyncio.Event()
    a = Archiver(pool, archive, s.asterisk.recordings_dir, journal)
    try:
        archiving = asyncio.create_task(a.archive_one(rec.id))
        await until(lambda: (s.storage.path / ".staging" / f"{rec.id}.part").exists())
        erasing = asyncio.create_task(
            holds.erase(pool, s, rec.id, reason="Art. 17 request", by="dpo", store=store)
        )
        await until_async(
            lambda: pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"),
            lambda n: n >= 1,
        )
        store.put_gate.set()
        assert await archiving is Outcome.ARCHIVED
        await erasing
    finally:
        a.close()
    assert await pool.fetchval("SELECT count(*) FROM recording_keys") == 0
    assert not obj_path(s, rec.id).exists()
    assert not (s.asterisk.recordings_dir / rec.file_path).exists()
    log = await pool.fetchrow("SELECT * FROM disposal_log WHERE recording_id = $1", rec.id)
    assert log["reason"] == "erasure" and log["key_destroyed_at"] is not None


# --- keys --------------------------------------------------------------------------------------


async def test_rotation_rewraps_every_key_and_keeps_every_recording_playable(
    pool: asyncpg.Pool, tmp_path: Path, db_dsn: str, s: Settings, kek: Path, archiver: Archiver
) -> None:
    recs = [await add(pool, s, seconds=2) for _ in range(3)]
    for r in recs:
        await archiver.archive_one(r.id)
    before = [await audio_bytes(pool, s, await row_of(pool, r.id)) for r in recs]
    objects = [obj_path(s, r.id).read_bytes() for r in recs]
    kek2 = tmp_path / "kek2"
    new_kek_file(kek2)
    config.load(write_config(tmp_path, db_dsn, key=kek2, retired=[kek]))

    assert (
        await asyncio.to_thread(cli.main, ["keys", "rotate", "--config", str(tmp_path / "callrec.toml")]) == 0
    )
    s2 = config.load(tmp_path / "callrec.toml")
    new_id = archive_of(s2).keys.current.key_id  # type: ignore[union-attr]
    assert {r["key_id"] for r in await pool.fetch("SELECT key_id FROM recording_keys")} == {new_id}
    assert [obj_path(s, r.id).read_bytes() for r in recs] == objects  # the audio is untouched
    # The old key-encryption key can go: the new one alone plays every recording.
    s3 = config.load(write_config(tmp_path, db_dsn, key=kek2))
    after = [await audio_bytes(pool, s3, await row_of(pool, r.id)) for r in recs]
    assert after == before
    s_old = config.load(write_config(tmp_path, db_dsn, key=kek))
    with pytest.raises(keys.MissingKey):
        await audio_bytes(pool, s_old, await row_of(pool, recs[0].id))


async def test_verify_finds_a_flipped_byte_a_truncation_and_a_swap(
    pool: asyncpg.Pool, s: Settings, archiver: Archiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recs = [await add(pool, s, seconds=60) for _ in range(5)]
    for r in recs:
        await archiver.archive_one(r.id)
    flipped, cut, a, b, _intact = (obj_path(s, r.id) for r in recs)
    data = bytearray(flipped.read_bytes())
    data[5000] ^= 0x01
    flipped.write_bytes(bytes(data))
    cut.write_bytes(cut.read_bytes()[: 32 + CHUNK + 16])
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    before = metric("callrec_archive_corrupt_total", where="verify")

    assert await asyncio.to_thread(cli.main, ["verify", "--config", str(tmp_path / "callrec.toml")]) == 1

    out = capsys.readouterr().out
    assert "verified 5 archived recording(s): 4 failed" in out
    errors = {r["id"]: r["verify_error"] for r in await pool.fetch("SELECT id, verify_error FROM recordings")}
    assert "authentication failed" in errors[recs[0].id]
    assert "bytes, expected" in errors[recs[1].id]
    assert errors[recs[4].id] is None
    assert metric("callrec_archive_corrupt_total", where="verify") == before + 4


async def test_backfill_archives_what_was_recorded_before_and_says_how_far(
    pool: asyncpg.Pool, s: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recs = [await add(pool, s, seconds=2) for _ in range(3)]
    assert (
        await asyncio.to_thread(
            cli.main, ["archive", "--backfill", "--config", str(tmp_path / "callrec.toml")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "3 recording(s) of node 'n1' to archive" in out and "3/3 archived, 0 failed" in out
    for r in recs:
        assert await wav_or_object(pool, s, r) == "object"
    assert (
        await asyncio.to_thread(
            cli.main, ["archive", "--backfill", "--config", str(tmp_path / "callrec.toml")]
        )
        == 0
    )
    assert "0 recording(s)" in capsys.readouterr().out


def test_a_bad_key_file_is_one_line_at_start(
    tmp_path: Path, db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"0123456789")
    write_config(tmp_path, db_dsn, key=short)
    assert cli.main(["verify", "--config", str(tmp_path / "callrec.toml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds 10 bytes, expected 32 random bytes" in err[0]


# --- serving -----------------------------------------------------------------------------------


async def test_the_api_plays_and_exports_the_decrypted_archive(db_dsn: str, tmp_path: Path) -> None:
    from tests.integration.access_world import world

    async with world(db_dsn, tmp_path) as w:
        s = w.settings
        rec = await add(w.pool, s, seconds=120)
        a = Archiver(w.pool, archive_of(s), s.asterisk.recordings_dir)
        try:
            assert await a.archive_one(rec.id) is Outcome.ARCHIVED
        finally:
            a.close()
        row = await row_of(w.pool, rec.id)
        whole = await audio_bytes(w.pool, s, row)
        url = f"/api/recordings/{rec.id}/audio"

        resp = await w.client.get(url, headers=w.auth("alice"))
        assert resp.status == 200 and resp.headers["Content-Type"] == "audio/ogg"
        assert await resp.read() == whole
        span = f"bytes={CHUNK - 10}-{CHUNK + 10}"
        resp = await w.client.get(url, headers={**w.auth("alice"), "Range": span})
        assert resp.status == 206 and await resp.read() == whole[CHUNK - 10 : CHUNK + 11]
        assert resp.headers["Content-Range"] == f"bytes {CHUNK - 10}-{CHUNK + 10}/{row.file_size}"
        resp = await w.client.get(url + "?download=1", headers=w.auth("alice"))
        assert resp.headers["Content-Disposition"].endswith(f'{rec.id}.ogg"')

        disclosure = {"recipient": "the data subject", "legal_basis": "GDPR Art. 15", "case_reference": "D-1"}
        export = {"recording_ids": [str(rec.id)], **disclosure}
        resp = await w.client.post("/api/exports", headers=w.auth("dana"), json=export)
        assert resp.status == 200, await resp.text()

        with zipfile.ZipFile(io.BytesIO(await resp.read())) as z:
            (member,) = [n for n in z.namelist() if n.startswith("audio/")]
            assert member.endswith(".ogg") and z.read(member) == whole
            assert f"{row.sha256}  {member}" in z.read("SHA256SUMS").decode()

        # A flipped byte in the object: the player's request is cut short and counted.
        obj = obj_path(s, rec.id)
        data = bytearray(obj.read_bytes())
        data[40] ^= 1
        obj.write_bytes(bytes(data))
        before = metric("callrec_archive_corrupt_total", where="serve")
        resp = await w.client.get(url, headers={**w.auth("alice"), "Range": "bytes=0-100"})
        with pytest.raises(Exception):  # noqa: B017 - aiohttp's payload error for a cut body
            await resp.read()
        assert metric("callrec_archive_corrupt_total", where="serve") == before + 1
        resp = await w.client.post("/api/exports", headers=w.auth("dana"), json=export)
        assert resp.status in (409, 503), await resp.text()  # no bundle with a corrupt object
