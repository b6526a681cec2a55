"""The durable journal: survives reopening, moves rows atomically, group-commits."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from callrec.recording.facts import Recording, StartRecording
from callrec.recording.journal import Journal


def facts(n: int = 0) -> StartRecording:
    return StartRecording(
        recording_id=uuid.UUID(int=n + 1),
        call_id=f"1795.{n}",
        register="customer-service",
        direction="inbound",
        channel_id=f"c{n}",
        channel_name=f"PJSIP/t-{n}",
        file_path=f"2026/11/22/{n}.wav",
        answered_at=1.5,
        service_number="0300",
        customer_number_masked="+358401234***",
        customer_number_hmac=None,
        agent_name=None,
    )


def row(n: int = 0) -> Recording:
    t = datetime(2026, 11, 22, tzinfo=UTC)
    return Recording(
        id=uuid.UUID(int=n + 1),
        call_id=f"1795.{n}",
        register_name="customer-service",
        direction="inbound",
        started_at=t,
        ended_at=t,
        duration_seconds=0.0,
        service_number="0300",
        customer_number_masked="+358401234***",
        customer_number_hmac=None,
        agent_name="alice",
        file_path=f"2026/11/22/{n}.wav",
        file_size=10,
        sha256="0" * 64,
        node="pbx1",
        recovered=True,
        interrupted=False,
    )


async def test_pending_and_outbox_survive_a_reopen(tmp_path: Path) -> None:
    j = await Journal.open(tmp_path)
    await j.begin(facts(0))
    await j.begin(facts(1))
    await j.complete(row(1), "1 months")
    await j.close()
    j = await Journal.open(tmp_path)
    try:
        assert await j.pending() == [dataclasses.replace(facts(0), channel_name="")]
        ((seq, got, retention),) = await j.oldest(10)
        assert (got, retention) == (row(1), "1 months")
        await j.delivered(seq)
        assert await j.depth() == 0
    finally:
        await j.close()


async def test_rows_come_out_in_order_and_reject_keeps_them_aside(tmp_path: Path) -> None:
    j = await Journal.open(tmp_path)
    try:
        for n in range(5):
            await j.complete(row(n), "1 months")
        entries = await j.oldest(10)
        assert [r.id.int for _, r, _ in entries] == [1, 2, 3, 4, 5]
        await j.reject(entries[0][0], entries[0][1], "1 months", "CheckViolationError")
        assert await j.depth() == 4
        kept = j.db.execute("SELECT reason FROM rejected").fetchall()
        assert kept == [("CheckViolationError",)]
    finally:
        await j.close()


async def test_concurrent_writes_are_group_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = await Journal.open(tmp_path)
    commits = 0
    apply = j._apply

    def counting(groups: list) -> None:  # type: ignore[type-arg]
        nonlocal commits
        commits += 1
        apply(groups)

    monkeypatch.setattr(j, "_apply", counting)
    try:
        await asyncio.gather(*(j.begin(facts(n)) for n in range(50)))
        assert len(await j.pending()) == 50
        assert commits < 50, "each write paid its own fsync"
    finally:
        await j.close()


async def test_a_failed_batch_fails_its_writers_and_the_journal_goes_on(tmp_path: Path) -> None:
    j = await Journal.open(tmp_path)
    try:
        with pytest.raises(Exception, match="no such table"):
            await j._write(("INSERT INTO nowhere VALUES (1)", ()))
        await j.begin(facts(3))
        assert [p.recording_id for p in await j.pending()] == [facts(3).recording_id]
    finally:
        await j.close()


async def test_a_journal_left_by_the_previous_version_is_read(tmp_path: Path) -> None:
    """An upgrade with recordings in flight: the old pending shape (with started_at) and the old
    outbox row (retention inside, no duration) still come out whole."""
    j = await Journal.open(tmp_path)
    try:
        old_pending = orjson.dumps(facts(0), default=str)[:-1] + b',"started_at":null}'
        old_row = {
            k: v for k, v in orjson.loads(orjson.dumps(row(1))).items() if k not in ("duration_seconds",)
        }
        old_row["ended_at"] = "2026-11-22T00:00:42.5+00:00"
        old_row |= {"retention": "6 months"}
        j.db.execute("INSERT INTO pending VALUES (?, ?)", (str(facts(0).recording_id), old_pending))
        j.db.execute("INSERT INTO outbox (recording_id, row) VALUES (?, ?)", ("x", orjson.dumps(old_row)))
        assert await j.pending() == [facts(0)]  # the old shape, as it was written
        ((_, got, retention),) = await j.oldest(10)
        assert retention == "6 months"
        assert got.duration_seconds == 42.5 and got.id == row(1).id
    finally:
        await j.close()


async def test_no_channel_name_reaches_the_journal_file(tmp_path: Path) -> None:
    """A Local channel's name carries the dialled number; the file must never hold it."""
    j = await Journal.open(tmp_path)
    try:
        await j.begin(dataclasses.replace(facts(0), channel_name="Local/0401234567@callrec-out-00000001;2"))
    finally:
        await j.close()
    for path in tmp_path.iterdir():  # noqa: ASYNC240 - the journal is closed; nothing else runs
        assert b"0401234567" not in path.read_bytes(), path.name
