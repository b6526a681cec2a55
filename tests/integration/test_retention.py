"""Retention on a real PostgreSQL and real files: what a pass destroys and what it never
touches, holds, erasure, orphans, crashes mid-pass, concurrent passes, dry runs, and that no
full customer number reaches the disposal log or the output."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from callrec import cli, config
from callrec.config import Settings
from callrec.db import recordings
from callrec.ops.metrics import REGISTRY
from callrec.recording.facts import Recording
from callrec.retention import holds, sweep
from callrec.retention.holds import RecordingNotFound, RecordingOnHold
from callrec.retention.sweep import PassReport, Sweeper, next_run
from tests.integration.access_world import as_owner

REPO = Path(__file__).resolve().parents[2]
FULL_NUMBER = "+358 40 123 4567"
FULL_DIGITS = "358401234567"
NOW = datetime.now(UTC)


def config_file(
    tmp_path: Path,
    dsn: str,
    *,
    node: str = "n1",
    registers: dict[str, str] | None = None,
    batch: int = 500,
    recordings: Path | None = None,
) -> Path:
    registers = registers or {"customer-service": "6 months", "telesales": "1 month"}
    recordings = recordings or tmp_path / f"rec-{node}"  # each node reaches only its own files
    recordings.mkdir(exist_ok=True)
    regs = "".join(
        f'[registers.{name}]\ndirection = "inbound"\nretention = "{ret}"\n' for name, ret in registers.items()
    )
    path = tmp_path / f"callrec-{node}.toml"
    path.write_text(
        f"""
[asterisk]
ari_username = "callrec"
ari_password = "x"
ami_username = "callrec"
ami_secret = "x"
recordings_dir = "{recordings}"
[database]
dsn = "{dsn}"
[daemon]
node = "{node}"
[retention]
batch_size = {batch}
orphan_grace = "7 days"
{regs}"""
    )
    return path


def settings_for(tmp_path: Path, dsn: str, **kw: Any) -> Settings:
    return config.load(config_file(tmp_path, dsn, **kw))


@pytest.fixture
def s(tmp_path: Path, db_dsn: str) -> Settings:
    return settings_for(tmp_path, db_dsn)


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    # cli.main() configures structlog onto a captured stream; later tests must not write to it.
    yield
    structlog.reset_defaults()


async def add(
    pool: asyncpg.Pool,
    s: Settings,
    *,
    age_days: float,
    register: str = "customer-service",
    retention_text: str | None = None,
    node: str | None = None,
    size: int = 1000,
    write_file: bool = True,
) -> Recording:
    """A recorded call that ended ``age_days`` ago, with its file in the dated tree."""
    rid = uuid.uuid4()
    ended = NOW - timedelta(days=age_days)
    started = ended - timedelta(seconds=60)
    rel = f"{started:%Y/%m/%d}/{rid}.wav"
    reg = s.registers.get(register)
    row = Recording(
        id=rid,
        call_id="1795373223.0",
        register_name=register,
        direction="inbound",
        started_at=started,
        ended_at=ended,
        service_number="0300",
        customer_number_masked="+358401234***",
        customer_number_hmac=None,
        agent_name="alice",
        file_path=rel,
        file_size=size,
        sha256="a" * 64,
        duration_seconds=60.0,
        node=s.node if node is None else node,
        recovered=False,
        interrupted=False,
    )
    retention = retention_text or (reg.retention.interval if reg else "6 months")
    assert await recordings.insert(pool, row, retention)
    if write_file:
        path = s.asterisk.recordings_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"R" * size)
        os.utime(path, (ended.timestamp(), ended.timestamp()))
    return row


def stray(s: Settings, *, age_days: float, name: str | None = None, size: int = 700) -> Path:
    """A file in the dated tree that no row references."""
    when = NOW - timedelta(days=age_days)
    path = s.asterisk.recordings_dir / f"{when:%Y/%m/%d}" / (name or f"{uuid.uuid4()}.wav")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"O" * size)
    os.utime(path, (when.timestamp(), when.timestamp()))
    return path


def exists(s: Settings, row: Recording) -> bool:
    return (s.asterisk.recordings_dir / row.file_path).exists()


async def ids(pool: asyncpg.Pool, table: str = "recordings", column: str = "id") -> set[uuid.UUID]:
    return {r[0] for r in await pool.fetch(f"SELECT {column} FROM {table}")}


async def log_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return list(await pool.fetch("SELECT * FROM disposal_log ORDER BY id"))


def counts(report: PassReport) -> dict[str, tuple[int, int]]:
    out = {k: (v.count, v.bytes) for k, v in report.registers.items()}
    out["(erasures)"] = (report.erasures.count, report.erasures.bytes)
    out["(orphans)"] = (report.orphans.count, report.orphans.bytes)
    return out


# --- what a pass destroys ----------------------------------------------------------------------


async def test_expired_destroyed_fresh_and_held_kept(pool: asyncpg.Pool, s: Settings) -> None:
    expired = await add(pool, s, age_days=200, size=1111)
    fresh = await add(pool, s, age_days=1)
    held = await add(pool, s, age_days=200)
    held_until_later = await add(pool, s, age_days=200)
    hold_ran_out = await add(pool, s, age_days=200, size=2222)
    short = await add(pool, s, age_days=40, register="telesales", size=333)
    await holds.hold(pool, held.id, reason="police case 5410/R/12345/26", by="dpo")
    await holds.hold(pool, held_until_later.id, reason="restriction", by="dpo", until=NOW + timedelta(days=9))
    await holds.hold(pool, hold_ran_out.id, reason="restriction", by="dpo", until=NOW + timedelta(days=9))
    await pool.execute(
        "UPDATE recordings SET hold_until = now() - interval '1 hour' WHERE id = $1", hold_ran_out.id
    )

    report = await Sweeper(pool, s).run_pass()

    assert counts(report) == {
        "customer-service": (2, 1111 + 2222),
        "telesales": (1, 333),
        "(erasures)": (0, 0),
        "(orphans)": (0, 0),
    }
    assert report.holds_lifted == 1 and report.errors == 0 and not report.skipped
    assert await ids(pool) == {fresh.id, held.id, held_until_later.id}
    kept = [exists(s, r) for r in (expired, fresh, held, held_until_later, hold_ran_out, short)]
    assert kept == [False, True, True, True, False, False]
    logged = await log_rows(pool)
    assert sorted((r["recording_id"], r["reason"], r["bytes"]) for r in logged) == sorted(
        [(expired.id, "retention", 1111), (hold_ran_out.id, "retention", 2222), (short.id, "retention", 333)]
    )
    assert {r["register_name"] for r in logged} == {"customer-service", "telesales"}
    assert await pool.fetchval("SELECT count(*) FROM disposal_pending") == 0
    actions = [r["action"] for r in await pool.fetch("SELECT action FROM legal_hold_log ORDER BY id")]
    assert actions == ["hold", "hold", "hold", "expire"]
    # A second pass finds nothing more.
    assert (await Sweeper(pool, s).run_pass()).total.count == 0


async def test_retention_changes_in_the_config(pool: asyncpg.Pool, tmp_path: Path, db_dsn: str) -> None:
    s = settings_for(tmp_path, db_dsn)
    shortened = await add(pool, s, age_days=60)  # stored: 6 months; config below: 1 month
    lengthened = await add(pool, s, age_days=45, register="telesales")  # stored 1 month; config: 1 year
    gone_register = await add(pool, s, age_days=60, register="old", retention_text="6 months")
    gone_register_due = await add(pool, s, age_days=40, register="old", retention_text="1 month")
    s2 = settings_for(tmp_path, db_dsn, registers={"customer-service": "1 month", "telesales": "12 months"})

    report = await Sweeper(pool, s2).run_pass()

    # Shorter now: applies at once. Longer now: the stored promise still holds. A register no
    # longer configured keeps its stored retain_until (never a mass deletion).
    assert await ids(pool) == {gone_register.id}
    assert not exists(s, shortened) and not exists(s, lengthened) and not exists(s, gone_register_due)
    assert report.registers["old"].count == 1 and report.registers["customer-service"].count == 1


async def test_month_end_is_calendar_exact(pool: asyncpg.Pool, tmp_path: Path, db_dsn: str) -> None:
    """A shortened "1 month" is calendar months, like retain_until: a call that ended a month
    and a minute ago is due, one that ended a month less a minute ago is not."""
    s = settings_for(tmp_path, db_dsn)
    tight = settings_for(tmp_path, db_dsn, registers={"customer-service": "1 month"})
    month_ago = await pool.fetchval("SELECT now() - interval '1 month'")
    due = await add(pool, s, age_days=(NOW - month_ago).total_seconds() / 86400 + 1 / 1440)
    not_yet = await add(pool, s, age_days=(NOW - month_ago).total_seconds() / 86400 - 1 / 1440)
    await Sweeper(pool, tight).run_pass()
    assert await ids(pool) == {not_yet.id} and not exists(s, due)


async def test_small_batches_and_empty_day_dirs(tmp_path: Path, db_dsn: str, pool: asyncpg.Pool) -> None:
    s = settings_for(tmp_path, db_dsn, batch=3)
    rows = [await add(pool, s, age_days=200 + i % 3) for i in range(10)]
    today = await add(pool, s, age_days=0)
    report = await Sweeper(pool, s).run_pass()
    assert report.total.count == 10 and await ids(pool) == {today.id}
    root = s.asterisk.recordings_dir
    # Day, month and year directories left empty are gone; today's tree is kept.
    assert not any((root / r.file_path).parent.exists() for r in rows)
    assert (root / today.file_path).exists()
    assert 0 < report.longest_transaction_seconds < 1


async def test_missing_file_is_not_an_error(pool: asyncpg.Pool, s: Settings) -> None:
    row = await add(pool, s, age_days=200, write_file=False)
    report = await Sweeper(pool, s).run_pass()
    assert report.total.count == 1 and report.missing_files == 1 and report.errors == 0
    assert await ids(pool, "disposal_log", "recording_id") == {row.id}


async def test_undeletable_file_keeps_its_queue_row(pool: asyncpg.Pool, s: Settings) -> None:
    row = await add(pool, s, age_days=200)
    path = s.asterisk.recordings_dir / row.file_path
    path.unlink()
    path.mkdir()  # unlink() of a directory fails (EISDIR/EPERM), like a file we may not delete
    errors_before = REGISTRY.get_sample_value("callrec_retention_errors_total") or 0
    report = await Sweeper(pool, s).run_pass()
    assert report.errors == 1 and report.total.count == 0
    assert REGISTRY.get_sample_value("callrec_retention_errors_total") == errors_before + 1
    assert await ids(pool, "disposal_pending", "recording_id") == {row.id}
    assert await log_rows(pool) == []
    path.rmdir()
    report = await Sweeper(pool, s).run_pass()  # the next pass retries and finishes it
    assert report.total.count == 1 and await ids(pool, "disposal_pending", "recording_id") == set()


# --- holds and erasure -------------------------------------------------------------------------


async def test_erase(pool: asyncpg.Pool, s: Settings) -> None:
    row = await add(pool, s, age_days=3, size=4321)
    before = REGISTRY.get_sample_value("callrec_retention_destroyed_total", {"reason": "erasure"}) or 0
    assert await holds.erase(pool, s, row.id, reason=f"Art. 17 request from {FULL_NUMBER}", by="dpo") == 4321
    assert not exists(s, row) and await ids(pool) == set()
    [entry] = await log_rows(pool)
    assert (entry["reason"], entry["bytes"], entry["requested_by"]) == ("erasure", 4321, "dpo")
    assert entry["request_reason"] == "Art. 17 request from +358401234***"
    assert REGISTRY.get_sample_value("callrec_retention_destroyed_total", {"reason": "erasure"}) == before + 1
    with pytest.raises(RecordingNotFound):
        await holds.erase(pool, s, row.id, reason="again", by="dpo")
    # Today's directory stays even when emptied: the recorder may be creating a file in it now.
    today = await add(pool, s, age_days=0)
    await holds.erase(pool, s, today.id, reason="asked", by="dpo")
    assert not exists(s, today) and (s.asterisk.recordings_dir / today.file_path).parent.is_dir()


async def test_erase_refuses_a_held_recording(pool: asyncpg.Pool, s: Settings) -> None:
    row = await add(pool, s, age_days=3)
    await holds.hold(pool, row.id, reason="police case 17", by="dpo")
    with pytest.raises(RecordingOnHold, match=r"legal hold.*police case 17"):
        await holds.erase(pool, s, row.id, reason="asked", by="dpo")
    assert exists(s, row) and await ids(pool) == {row.id} and await log_rows(pool) == []
    await holds.release(pool, row.id, by="dpo")
    assert await holds.erase(pool, s, row.id, reason="asked", by="dpo") == row.file_size


async def test_hold_and_release(pool: asyncpg.Pool, s: Settings) -> None:
    row = await add(pool, s, age_days=200)
    until = NOW + timedelta(days=30)
    await holds.hold(pool, row.id, reason=f"case, caller {FULL_NUMBER}", by="dpo", until=until)
    got = await pool.fetchrow("SELECT * FROM recordings WHERE id = $1", row.id)
    assert got["legal_hold"] and got["hold_by"] == "dpo" and got["hold_until"] == until
    assert got["hold_reason"] == "case, caller +358401234***" and got["hold_at"] is not None
    assert (await Sweeper(pool, s).run_pass()).total.count == 0
    await holds.release(pool, row.id, by="supervisor")
    await holds.release(pool, row.id, by="supervisor")  # not held: nothing to do
    assert (await Sweeper(pool, s).run_pass()).total.count == 1
    log = [(r["action"], r["by"]) for r in await pool.fetch("SELECT * FROM legal_hold_log ORDER BY id")]
    assert log == [("hold", "dpo"), ("release", "supervisor")]
    with pytest.raises(RecordingNotFound):
        await holds.hold(pool, row.id, reason="too late", by="dpo")
    with pytest.raises(RecordingNotFound):
        await holds.release(pool, uuid.uuid4(), by="dpo")
    with pytest.raises(ValueError, match="past"):
        await holds.hold(pool, row.id, reason="x", by="dpo", until=NOW - timedelta(days=1))
    with pytest.raises(ValueError, match="reason"):
        await holds.hold(pool, row.id, reason="  ", by="dpo")


async def test_erasure_of_another_nodes_file_is_finished_by_that_node(
    pool: asyncpg.Pool, tmp_path: Path, db_dsn: str
) -> None:
    a = settings_for(tmp_path, db_dsn, node="a")
    b = settings_for(tmp_path, db_dsn, node="b")
    row = await add(pool, b, age_days=3)
    assert await holds.erase(pool, a, row.id, reason="asked", by="dpo") == 0
    assert exists(b, row) and await ids(pool) == set()  # gone from the register at once
    assert (await Sweeper(pool, a).run_pass()).total.count == 0  # a cannot reach b's files
    report = await Sweeper(pool, b).run_pass()
    assert report.erasures.count == 1 and not exists(b, row)
    [entry] = await log_rows(pool)
    assert (entry["reason"], entry["node"], entry["requested_by"]) == ("erasure", "b", "dpo")


# --- orphans -----------------------------------------------------------------------------------


async def test_orphans_old_and_young(pool: asyncpg.Pool, s: Settings) -> None:
    # Cutoff: the longest retention (6 months, counted as 186 days) + 7 days of grace.
    old = stray(s, age_days=300, size=777)
    old_marker = old.with_name(old.name + ".done")
    old_marker.write_bytes(b"")
    os.utime(old_marker, (old.stat().st_mtime, old.stat().st_mtime))
    lone_marker = stray(s, age_days=250, name=f"{uuid.uuid4()}.wav.done", size=0)
    not_ours = stray(s, age_days=300, name="notes.wav")
    young = stray(s, age_days=150)
    written_now = old.parent / f"{uuid.uuid4()}.wav"  # an old directory, but the file is fresh
    written_now.write_bytes(b"N")
    recording_now = stray(s, age_days=0)
    held = await add(pool, s, age_days=300)
    await holds.hold(pool, held.id, reason="police", by="dpo")

    dry = await Sweeper(pool, s).run_pass(dry_run=True)
    report = await Sweeper(pool, s).run_pass()

    assert (report.orphans.count, report.orphans.bytes, report.markers) == (1, 777, 2)
    assert counts(dry) == counts(report) and dry.markers == report.markers
    assert not old.exists() and not old_marker.exists() and not lone_marker.exists()
    assert not_ours.exists() and young.exists() and recording_now.exists() and exists(s, held)
    assert written_now.exists()
    assert not lone_marker.parent.exists()  # its day directory was left empty
    [entry] = await log_rows(pool)
    assert (entry["reason"], entry["bytes"], entry["register_name"]) == ("orphan", 777, None)
    assert str(entry["recording_id"]) == old.name.removesuffix(".wav")


# --- crashes and concurrency -------------------------------------------------------------------


class Killed(BaseException):
    """Stands in for kill -9: nothing after it runs, not even `except Exception`."""


async def test_killed_between_unlink_and_finish_then_rerun(
    pool: asyncpg.Pool, s: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [await add(pool, s, age_days=200) for _ in range(3)]

    async def killed(conn: Any, ids: Any) -> Any:
        raise Killed

    monkeypatch.setattr(sweep, "finish_disposals", killed)
    with pytest.raises(Killed):
        await Sweeper(pool, s).run_pass()
    monkeypatch.undo()
    # Files gone, rows out of the register, but not yet proven destroyed: the queue remembers.
    assert not any(exists(s, r) for r in rows) and await ids(pool) == set()
    assert await ids(pool, "disposal_pending", "recording_id") == {r.id for r in rows}
    assert await log_rows(pool) == []

    report = await Sweeper(pool, s).run_pass()
    assert report.registers["customer-service"].count == 3 and report.missing_files == 3
    assert await ids(pool, "disposal_log", "recording_id") == {r.id for r in rows}
    assert await pool.fetchval("SELECT count(*) FROM disposal_pending") == 0


KILLED_CHILD = """
import asyncio, sys
from pathlib import Path
import asyncpg
from callrec import config
from callrec.retention import sweep

async def hang(conn, ids):
    print("files deleted", flush=True)
    await asyncio.sleep(60)

async def main():
    sweep.finish_disposals = hang
    settings = config.load(Path(sys.argv[1]))
    pool = await asyncpg.create_pool(settings.database_dsn, min_size=1, max_size=2)
    await sweep.Sweeper(pool, settings).run_pass()

asyncio.run(main())
"""


async def test_kill_9_mid_pass_then_rerun(pool: asyncpg.Pool, tmp_path: Path, db_dsn: str) -> None:
    cfg = config_file(tmp_path, db_dsn, batch=2)
    s = config.load(cfg)
    rows = [await add(pool, s, age_days=200) for _ in range(5)]
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'daemon'}:{REPO}"}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_CHILD, str(cfg), env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 20)
        assert line.strip() == b"files deleted"
    finally:
        child.kill()  # SIGKILL: no finally, no atexit, no clean close of its connections
        await child.wait()
    # Whatever the moment, every file is either still referenced by its row or queued.
    left = await ids(pool)
    queued = await ids(pool, "disposal_pending", "recording_id")
    assert left | queued == {r.id for r in rows} and not left & queued
    assert all(exists(s, r) for r in rows if r.id in left)
    # The killed child's backend ends when PostgreSQL reads the closed socket, a moment later;
    # until then it holds the sweep's advisory lock and a pass would rightly skip. End it now
    # and wait for it to be gone (the timeout form of pg_terminate_backend, PostgreSQL 14+).
    await pool.execute(
        "SELECT pg_terminate_backend(pid, 20000) FROM pg_locks"
        " WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"
    )

    report = await Sweeper(pool, s).run_pass()
    assert report.total.count == 5 and report.errors == 0
    assert not any(exists(s, r) for r in rows)
    assert sorted(await pool.fetch("SELECT recording_id FROM disposal_log")) == sorted(
        await pool.fetch("SELECT DISTINCT recording_id FROM disposal_log")
    )
    assert await ids(pool, "disposal_log", "recording_id") == {r.id for r in rows}


async def test_two_nodes_sweep_at_once(pool: asyncpg.Pool, tmp_path: Path, db_dsn: str) -> None:
    a = settings_for(tmp_path, db_dsn, node="a", batch=7)
    b = settings_for(tmp_path, db_dsn, node="b", batch=7)
    rows_a = [await add(pool, a, age_days=200 + i % 5) for i in range(40)]
    rows_b = [await add(pool, b, age_days=200 + i % 5) for i in range(40)]
    ra, rb = await asyncio.gather(Sweeper(pool, a).run_pass(), Sweeper(pool, b).run_pass())
    assert not ra.skipped and not rb.skipped  # other nodes never wait for each other
    # Each node claims from the whole register: every row left it in that one pass, and a
    # file the claimer cannot reach waits for its node (row and key gone already).
    assert await ids(pool) == set()
    ra2, rb2 = await asyncio.gather(Sweeper(pool, a).run_pass(), Sweeper(pool, b).run_pass())
    assert ra2.waiting == rb2.waiting == 0
    assert sum(r.total.count for r in (ra, rb, ra2, rb2)) == 80
    logged = [r["recording_id"] for r in await log_rows(pool)]
    assert len(logged) == len(set(logged)) == 80  # none destroyed or logged twice
    nodes = {r["recording_id"]: r["node"] for r in await log_rows(pool)}
    assert all(nodes[r.id] == "a" for r in rows_a) and all(nodes[r.id] == "b" for r in rows_b)
    assert not any(exists(a, r) for r in rows_a) and not any(exists(b, r) for r in rows_b)


async def test_a_row_of_a_node_no_callrec_serves_leaves_the_register_on_time(
    pool: asyncpg.Pool, tmp_path: Path, db_dsn: str
) -> None:
    """A renamed host, a retired PBX, rows with the column's default node '': the row and its
    key go when their window ends; the file's deletion waits for its node, counted."""
    gone = settings_for(tmp_path, db_dsn, node="retired-pbx")
    a = settings_for(tmp_path, db_dsn, node="a")
    row = await add(pool, gone, age_days=200)
    blank = await add(pool, gone, age_days=200, node="")
    report = await Sweeper(pool, a).run_pass()
    assert await ids(pool) == set() and report.waiting == 2 and report.total.count == 0
    assert REGISTRY.get_sample_value("callrec_disposals_waiting_for_other_nodes") == 2
    pending = {r["recording_id"]: r["node"] for r in await pool.fetch("SELECT * FROM disposal_pending")}
    assert pending == {row.id: "retired-pbx", blank.id: ""}
    # A later pass on the retired host (its name pinned in its state) finishes its own file.
    report = await Sweeper(pool, gone).run_pass()
    assert report.total.count == 1 and not exists(gone, row)
    assert {r["name"] for r in await pool.fetch("SELECT name FROM nodes")} == {"a", "retired-pbx"}


async def test_two_passes_of_one_node_at_once(pool: asyncpg.Pool, tmp_path: Path, db_dsn: str) -> None:
    s = settings_for(tmp_path, db_dsn, batch=5)
    rows = [await add(pool, s, age_days=200) for _ in range(30)]
    reports = await asyncio.gather(*(Sweeper(pool, s).run_pass() for _ in range(3)))
    assert sum(r.total.count for r in reports) == 30
    logged = [r["recording_id"] for r in await log_rows(pool)]
    assert sorted(logged) == sorted(r.id for r in rows)


async def test_racing_finishers_log_once(pool: asyncpg.Pool, s: Settings) -> None:
    """The exactly-once guarantee itself: two finishers of the same queue row, one blocked
    on the other's row lock; only one of them writes the log entry."""
    from callrec.retention.queries import claim_expired, finish_disposals

    row = await add(pool, s, age_days=200)
    [disposal] = await claim_expired(pool, 10)
    async with pool.acquire() as c1, pool.acquire() as c2:
        tx = c1.transaction()
        await tx.start()
        first = await finish_disposals(c1, [disposal.recording_id])
        pid = await c2.fetchval("SELECT pg_backend_pid()")
        second = asyncio.create_task(finish_disposals(c2, [disposal.recording_id]))
        # Commit only once the second finisher is really blocked on the first one's row lock.
        for _ in range(1000):
            if await c1.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the second finisher never waited for the row lock")
        await tx.commit()
        assert first == [("retention", "customer-service", 1, row.file_size)] and await second == []
    assert await ids(pool, "disposal_log", "recording_id") == {row.id}


# --- dry run, the log's guarantees, the output -------------------------------------------------


async def snapshot(pool: asyncpg.Pool, root: Path) -> tuple[Any, ...]:
    tables = []
    for table in ("recordings", "disposal_pending", "disposal_log", "legal_hold_log"):
        tables.append(sorted(map(tuple, await pool.fetch(f"SELECT * FROM {table}"))))
    files = await asyncio.to_thread(lambda: sorted(str(p.relative_to(root)) for p in root.rglob("*")))
    return (*tables, files)


async def test_dry_run_changes_nothing_and_predicts_the_pass(
    pool: asyncpg.Pool, tmp_path: Path, db_dsn: str
) -> None:
    s = settings_for(tmp_path, db_dsn)
    for age in (200, 201, 1):
        await add(pool, s, age_days=age)
    await add(pool, s, age_days=40, register="telesales")
    expiring = await add(pool, s, age_days=200)
    await holds.hold(pool, expiring.id, reason="x", by="dpo", until=NOW + timedelta(days=1))
    await pool.execute("UPDATE recordings SET hold_until = now() - interval '1 minute'")
    stray(s, age_days=300)
    queued = await add(pool, s, age_days=1)
    # Erased through another node: queued for this one.
    await holds.erase(pool, settings_for(tmp_path, db_dsn, node="z"), queued.id, reason="asked", by="dpo")
    before = await snapshot(pool, s.asterisk.recordings_dir)
    dry = await Sweeper(pool, s).run_pass(dry_run=True)
    assert await snapshot(pool, s.asterisk.recordings_dir) == before
    real = await Sweeper(pool, s).run_pass()
    assert counts(dry) == counts(real)
    assert counts(real)["customer-service"][0] == 3 and real.erasures.count == 1 and real.orphans.count == 1


async def test_disposal_log_is_append_only(pool: asyncpg.Pool, s: Settings) -> None:
    await add(pool, s, age_days=200)
    await Sweeper(pool, s).run_pass()
    for sql in ("UPDATE disposal_log SET bytes = 0", "DELETE FROM disposal_log", "TRUNCATE disposal_log"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await pool.execute(sql)  # the runtime role has no such right
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await as_owner(s.database_dsn, sql)  # the owner has; the trigger refuses
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pool.execute("DELETE FROM legal_hold_log")
    assert len(await log_rows(pool)) == 1


def run_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_and_no_full_number_anywhere(
    tmp_path: Path, db_dsn: str, pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config_file(tmp_path, db_dsn)
    s = config.load(cfg)
    expired = await add(pool, s, age_days=200, size=5000)
    other = await add(pool, s, age_days=2, size=600)
    held = await add(pool, s, age_days=2)
    c = str(cfg)

    def call(*argv: str) -> tuple[int, str, str]:
        return run_cli(*argv, "--config", c, capsys=capsys)

    outputs = []
    code, out, err = await asyncio.to_thread(call, "retention", "--dry-run")
    outputs += [out, err]
    assert code == 0 and "would destroy" in out and "customer-service" in out and "5000" in out
    assert exists(s, expired)
    hold = ("hold", str(held.id), "--reason", f"police, {FULL_NUMBER}", "--until", "2099-01-31")
    code, out, err = await asyncio.to_thread(call, *hold)
    outputs += [out, err]
    assert code == 0 and "until 2099-02-01" in out
    code, out, err = await asyncio.to_thread(call, "erase", str(held.id), "--reason", "asked")
    outputs += [out, err]
    assert code == 1 and "legal hold" in err and out == ""
    code, out, err = await asyncio.to_thread(
        call, "erase", str(other.id), "--reason", f"asked by {FULL_NUMBER}"
    )
    outputs += [out, err]
    assert code == 0 and "600 bytes" in out
    code, out, err = await asyncio.to_thread(call, "release", str(uuid.uuid4()))
    outputs += [out, err]
    assert code == 1 and "no recording" in err
    code, out, err = await asyncio.to_thread(call, "retention")
    outputs += [out, err]
    assert code == 0 and not exists(s, expired)
    assert [line.split() for line in out.splitlines() if line.strip().startswith(("customer", "total"))] == [
        ["customer-service", "1", "5000"],
        ["total", "1", "5000"],
    ]
    code, out, err = await asyncio.to_thread(call, "release", str(held.id))
    outputs += [out, err]
    assert code == 0

    # Each operation on a recording left one audit row, refusals included, as through the API.
    audited = [
        (r["action"], r["outcome"])
        for r in await pool.fetch("SELECT action, outcome FROM audit_log WHERE client = 'cli' ORDER BY id")
    ]
    assert audited == [
        ("hold", "ok"),
        ("erase", "invalid"),
        ("erase", "ok"),
        ("release", "not_found"),
        ("release", "ok"),
    ]
    dumps = [
        str(list(map(dict, await pool.fetch(f"SELECT * FROM {t}"))))
        for t in ("disposal_log", "legal_hold_log", "audit_log")
    ]
    assert "+358401234***" in dumps[0] + dumps[1]  # the reasons were kept, masked
    for text in [*outputs, *dumps]:
        assert FULL_DIGITS not in text.replace(" ", "")


def test_cli_database_unavailable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config_file(tmp_path, "postgresql://nobody@127.0.0.1:9/none")
    code, out, err = run_cli("retention", "--config", str(cfg), capsys=capsys)
    assert code == 3 and err.startswith("callrec: database:") and out == ""
    with pytest.raises(SystemExit) as exit_:
        cli.main(["hold", "not-a-uuid", "--reason", "x", "--config", str(cfg)])
    assert exit_.value.code == 2 and "invalid UUID" in capsys.readouterr().err


# --- the loop ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheduled", "now", "expected"),
    [(0, 1, 10), (0, 9.99, 10), (0, 10, 20), (0, 35, 40), (100, 100.5, 110)],
)
def test_next_run_stays_on_the_grid(scheduled: float, now: float, expected: float) -> None:
    assert next_run(scheduled, now, 10) == expected


async def test_run_forever_survives_a_failed_pass_and_cancels_cleanly(
    pool: asyncpg.Pool, tmp_path: Path, db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings_for(tmp_path, db_dsn)
    object.__setattr__(s, "retention_interval", 0.02)
    sweeper = Sweeper(pool, s)
    calls: list[int] = []
    passed = asyncio.Event()
    real = sweeper.run_pass

    async def flaky(*, dry_run: bool = False) -> PassReport:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionResetError("database went away")
        report = await real(dry_run=dry_run)
        passed.set()
        return report

    monkeypatch.setattr(sweeper, "run_pass", flaky)
    errors = REGISTRY.get_sample_value("callrec_retention_errors_total") or 0
    task = asyncio.create_task(sweeper.run_forever())
    await asyncio.wait_for(passed.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert REGISTRY.get_sample_value("callrec_retention_errors_total") == errors + 1
    assert (REGISTRY.get_sample_value("callrec_retention_last_success_timestamp_seconds") or 0) > 0
