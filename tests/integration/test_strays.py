"""Files in recordings_dir with no journal entry and no row: the whole daemon (App) on the
wire-level fakes and a real PostgreSQL gives each of this node's a ``recovered`` row at start,
leaves what is known, another node's, a live call's and the orphan sweep's alone, and its
sweep then takes what is the sweep's (recording/strays.py,
docs/architecture.md#files-without-a-journal-entry-or-row)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from callrec.app import App
from callrec.config import load
from callrec.db import recordings
from callrec.recording.facts import Parties, Recording, StartRecording
from callrec.recording.journal import Journal
from tests.fakes.ami_server import FakeAmi
from tests.fakes.ari_server import FakeAri
from tests.fakes.pbx import FakePbx, channel, daemon_config
from tests.harness.audio import tone_wav
from tests.integration.test_daemon_on_fakes import counter, until

TIMEOUT = 20.0  # only reached when a test fails
REGISTER = "customer-service"  # "1 month" in daemon_config: orphans after 31 + 7 days
NOW = time.time()
DAY = 86400.0


def _file(
    root: Path, rid: uuid.UUID, *, age: float, tail: str = f".{REGISTER}.pbx1", seconds: float = 3.0
) -> Path:
    """A WAV as MixMonitor leaves it, last written ``age`` seconds ago."""
    when = NOW - age
    path = root / datetime.fromtimestamp(when, UTC).strftime("%Y/%m/%d") / f"{rid}{tail}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tone_wav(seconds))
    os.utime(path, (when, when))
    return path


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeAri, FakeAmi]]:
    async with FakeAri(password="p") as ari, FakeAmi(secret="s") as ami:
        FakePbx(ami)
        yield ari, ami


async def _start(tmp_path: Path, ari: FakeAri, ami: FakeAmi, dsn: str, daemon_keys: str = "") -> App:
    cfg = tmp_path / "callrec.toml"
    text = daemon_config(ari, ami, tmp_path, dsn, file_wait_timeout=1)
    cfg.write_text(text.replace("[daemon]\n", f'[daemon]\nnode = "pbx1"\n{daemon_keys}\n', 1))
    app = App(load(cfg))
    await asyncio.wait_for(app.startup(), TIMEOUT)
    return app


async def _stop(app: App) -> None:
    app.stopping.set()
    await app.shutdown()


async def _rows(db: asyncpg.Connection, where: str = "TRUE") -> dict[uuid.UUID, asyncpg.Record]:
    return {r["id"]: r for r in await db.fetch(f"SELECT * FROM recordings WHERE {where}")}


async def _wait(db: asyncpg.Connection, query: str, *args: object, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not await db.fetchval(query, *args):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _row(rid: uuid.UUID, path: str, *, call_id: str = "1795000000.1") -> Recording:
    start = StartRecording(rid, call_id, REGISTER, "inbound", "c1", "", path, NOW - 7200)
    return Recording.finished(
        start,
        started_at=NOW - 7200,
        ended_at=NOW - 7100,
        file_size=1,
        sha256="0" * 64,
        node="pbx1",
        recovered=False,
        interrupted=False,
        parties=Parties("0300", "+358401234***", None, "alice"),
    )


async def test_each_file_without_journal_entry_or_row_gets_one_recovered_row(
    tmp_path: Path, fakes: tuple[FakeAri, FakeAmi], db_dsn: str
) -> None:
    ari, ami = fakes
    root = tmp_path / "recordings"
    ids = {k: uuid.uuid4() for k in ("lost", "stored", "erased", "other", "unnamed", "journaled", "live")}
    ids |= {"orphan": uuid.uuid4(), "margin": uuid.uuid4()}
    paths = {k: _file(root, rid, age=3600) for k, rid in ids.items() if k not in ("orphan", "margin")}
    paths["other"].rename(paths["other"].with_name(f"{ids['other']}.{REGISTER}.pbx2.wav"))
    paths["unnamed"].rename(paths["unnamed"].with_name(f"{ids['unnamed']}.wav"))
    orphan = _file(root, ids["orphan"], age=40 * DAY)  # past 31 + 7 days: the orphan sweep's
    margin = _file(root, ids["margin"], age=37.5 * DAY)  # the day between: nobody's yet
    rel = {k: p.relative_to(root).as_posix() for k, p in paths.items()}

    db = await asyncpg.connect(db_dsn)
    try:
        stored = _row(ids["stored"], rel["stored"])
        journal = await Journal.open(tmp_path / "state")  # a row the previous run left unsent
        await journal.complete(_row(ids["journaled"], rel["journaled"]), "1 month")
        await journal.close()
        await recordings.insert(db, stored, "1 month")
        await db.execute(
            "INSERT INTO disposal_log (recording_id, register_name, reason, bytes, node, requested_at)"
            " VALUES ($1, $2, 'erasure', 1, 'pbx1', now())",
            ids["erased"],
            REGISTER,
        )
        # A call still up (no register on it, so nothing adopts it): MixMonitor writes its file.
        ari.channels = [
            channel(
                "c9", "PJSIP/trunk-00000009", "Up", "1795000000.9", MIXMONITOR_FILENAME=str(paths["live"])
            )
        ]
        unclaimed = counter("callrec_stray_files_total", outcome="unclaimed")
        recovered = counter("callrec_stray_files_total", outcome="recovered")
        with capture_logs() as logs:
            app = await _start(tmp_path, ari, ami, db_dsn)
            try:
                assert app.strays is not None
                await asyncio.wait_for(app.strays.first_pass.wait(), TIMEOUT)
                await _wait(db, "SELECT count(*) FROM recordings WHERE id = $1", ids["lost"], what="lost")
                await _wait(
                    db, "SELECT count(*) FROM recordings WHERE id = $1", ids["journaled"], what="outbox"
                )
                # The sweep, started after the scan: the file past the orphan cutoff is its own.
                await _wait(
                    db,
                    "SELECT count(*) FROM disposal_log WHERE recording_id = $1 AND reason = 'orphan'",
                    ids["orphan"],
                    what="orphan",
                )
                assert set(await _rows(db)) == {ids["lost"], ids["stored"], ids["journaled"]}
                assert app.recorder is not None and app.recorder.state_of(ids["live"]) is None

                ari.channels = []  # the call ends: looked at again after file_wait_timeout
                await _wait(db, "SELECT count(*) FROM recordings WHERE id = $1", ids["live"], what="live")
                await _wait(
                    db,
                    "SELECT count(*) FROM recordings WHERE id = $1 AND archived_at IS NOT NULL",
                    ids["lost"],
                    what="the archive step",
                )
                rows = await _rows(db)
            finally:
                await _stop(app)
        assert set(rows) == {ids["lost"], ids["stored"], ids["journaled"], ids["live"]}
        lost = rows[ids["lost"]]
        assert (lost["register_name"], lost["direction"], lost["node"]) == (REGISTER, "inbound", "pbx1")
        assert (lost["recovered"], lost["interrupted"]) == (True, False)
        unknown = ("call_id", "service_number", "customer_number_masked", "agent_name")
        assert [lost[c] for c in unknown] == [None] * 4
        # Its audio went on into the archive step like any other row's (the WAV is gone then).
        assert lost["file_path"] == rel["lost"] and lost["audio_format"] == "opus"
        assert lost["archived_at"] is not None and not paths["lost"].exists()
        assert lost["ended_at"].timestamp() == pytest.approx(NOW - 3600, abs=0.01)
        assert float(lost["duration_seconds"]) == pytest.approx(3.0, abs=0.01)
        assert rows[ids["journaled"]]["recovered"] is False and rows[ids["stored"]]["agent_name"] == "alice"
        assert rows[ids["live"]]["recovered"] is True
        assert (
            not orphan.exists()
            and margin.exists()
            and paths["other"].with_name(f"{ids['other']}.{REGISTER}.pbx2.wav").exists()
        )
        assert (
            await db.fetchval("SELECT count(*) FROM disposal_log WHERE recording_id = $1", ids["margin"]) == 0
        )
    finally:
        await db.close()
    assert counter("callrec_stray_files_total", outcome="recovered") - recovered == 2
    assert counter("callrec_stray_files_total", outcome="unclaimed") - unclaimed == 1
    said = [e for e in logs if e["event"].startswith("recording recovered from a file")]
    assert sorted(e["recording_id"] for e in said) == sorted(str(ids[k]) for k in ("lost", "live"))
    (left,) = [e for e in logs if e["event"].startswith("file without journal entry or row")]
    assert left["recording_id"] == str(ids["unnamed"]) and left["named_register"] is None


async def test_a_file_that_names_no_register_goes_to_the_configured_one(
    tmp_path: Path, fakes: tuple[FakeAri, FakeAmi], db_dsn: str
) -> None:
    ari, ami = fakes
    root = tmp_path / "recordings"
    rid, gone = uuid.uuid4(), uuid.uuid4()
    _file(root, rid, age=600, tail="")  # named before registers were (or by hand)
    _file(root, gone, age=600, tail=".removed-register.pbx1")
    app = await _start(tmp_path, ari, ami, db_dsn, f'unclaimed_register = "{REGISTER}"')
    db = await asyncpg.connect(db_dsn)
    try:
        await _wait(db, "SELECT count(*) = 2 FROM recordings", what="two rows")
        rows = await _rows(db)
        assert {r["register_name"] for r in rows.values()} == {REGISTER}
        assert all(r["recovered"] for r in rows.values())
    finally:
        await db.close()
        await _stop(app)
    # A second start finds both known: no second row.
    app = await _start(tmp_path, ari, ami, db_dsn, f'unclaimed_register = "{REGISTER}"')
    try:
        assert app.strays is not None
        await asyncio.wait_for(app.strays.first_pass.wait(), TIMEOUT)
        await until(lambda: app.recorder is not None and app.recorder.active == 0, "no recovery running")
        db = await asyncpg.connect(db_dsn)
        try:
            assert await db.fetchval("SELECT count(*) FROM recordings") == 2
        finally:
            await db.close()
    finally:
        await _stop(app)
