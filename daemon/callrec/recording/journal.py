"""The daemon's durable memory: a SQLite journal (WAL, fsync'd) under ``state_dir``.

Two tables make "nothing lost" hold through a kill -9 or a database outage:

* ``pending``: a recording is written here *before* MixMonitor is asked to start, and leaves
  only when its row is in the outbox. After a crash, every pending entry is either a call
  still up (adopted) or a call that ended while we were down (recovered from its file).
* ``outbox``: finished rows, in order, until PostgreSQL has them. Inserts are idempotent
  (keyed by recording id), so replaying an entry twice never duplicates a row.
* ``archive``: recordings whose WAV waits for the archive step (archive/pipeline.py), queued
  with the row and worked once PostgreSQL has the row; an entry leaves only after the WAV is
  deleted, so a crash at any step leaves the WAV or the archived object, never neither.

SQLite is synchronous; one worker thread owns the connection, so calls are serialised and
never block the event loop on an fsync. Writes are group-committed: whatever queued up while
the previous transaction was being fsync'd goes into the next one, so 50 calls answered at
once cost a few fsyncs, not 50 in a row (each would delay a MixMonitor).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from callrec.recording.facts import Recording, StartRecording

T = TypeVar("T")
_Statement = tuple[str, tuple[Any, ...]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    recording_id TEXT PRIMARY KEY,
    facts        BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    recording_id TEXT NOT NULL UNIQUE,
    row          BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS archive (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    recording_id TEXT NOT NULL UNIQUE,
    queued_at    REAL NOT NULL,
    -- Why this WAV cannot be archived (not PCM WAV...): kept and skipped, never dropped.
    failed       TEXT
);
-- Rows PostgreSQL refused for good (a constraint): kept for an operator, never dropped.
CREATE TABLE IF NOT EXISTS rejected (
    recording_id TEXT PRIMARY KEY,
    row          BLOB NOT NULL,
    reason       TEXT NOT NULL
);
"""


def _row_to_json(row: Recording, retention: str) -> bytes:
    # orjson encodes a dataclass as asdict() would, without asdict()'s deep copy (hot path).
    # The retention travels beside the row: PostgreSQL computes retain_until from it.
    return orjson.dumps({"row": row, "retention": retention}, default=str)


def _row_from_json(data: bytes) -> tuple[Recording, str]:
    d: dict[str, Any] = orjson.loads(data)
    if "row" in d:
        return Recording.from_json(d["row"]), str(d["retention"])
    # A journal left by the previous version: one flat object, the retention inside, no duration.
    retention = str(d.pop("retention"))
    seconds = (
        datetime.fromisoformat(d["ended_at"]) - datetime.fromisoformat(d["started_at"])
    ).total_seconds()
    d["duration_seconds"] = round(max(seconds, 0.0), 3)
    return Recording.from_json(d), retention


class Journal:
    """Open with ``await Journal.open(state_dir)``; close with ``await journal.close()``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="callrec-journal")
        self._db: sqlite3.Connection | None = None
        self._queue: list[tuple[tuple[_Statement, ...], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, state_dir: Path) -> Journal:
        journal = cls(state_dir / "journal.sqlite3")
        await journal._call(journal._open)
        return journal

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: every commit is on disk before we act on it (a kill -9 or power loss).
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        self._db = db

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "journal is closed"
        return self._db

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher

        def _close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._call(_close)
        self._pool.shutdown(wait=True)

    # --- group commit -----------------------------------------------------------------------

    async def _write(self, *statements: _Statement) -> None:
        """Run ``statements`` atomically, committed together with whatever else is queued."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((statements, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="journal-flush")
        # Shielded: a cancelled writer must not tear its statements out of a shared commit.
        await asyncio.shield(done)

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await self._call(self._apply, [statements for statements, _ in batch])
            except Exception as exc:  # every writer of the batch learns of the failure
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    def _apply(self, groups: list[tuple[_Statement, ...]]) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for group in groups:
                for sql, params in group:
                    db.execute(sql, params)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # --- pending ----------------------------------------------------------------------------

    async def begin(self, rec: StartRecording) -> None:
        # Not the channel's name: a Local or trunk channel's name can carry the dialled number
        # (Local/0401234567@...), which must never reach a file (docs/privacy.md#no-full-number-anywhere).
        # Adoption takes the name from the live channel instead.
        facts = orjson.dumps(dataclasses.replace(rec, channel_name=""), default=str)
        await self._write(
            (
                "INSERT OR REPLACE INTO pending (recording_id, facts) VALUES (?, ?)",
                (str(rec.recording_id), facts),
            )
        )

    async def forget(self, recording_id: uuid.UUID) -> None:
        await self._write(("DELETE FROM pending WHERE recording_id = ?", (str(recording_id),)))

    async def pending(self) -> list[StartRecording]:
        rows = await self._call(lambda: self.db.execute("SELECT facts FROM pending").fetchall())
        return [StartRecording.from_json(orjson.loads(r[0])) for r in rows]

    async def known_ids(self) -> set[uuid.UUID]:
        """Every recording the journal holds: in progress, waiting for PostgreSQL, refused,
        or waiting for the archive step (the start-up scan of files, recording/strays.py)."""
        rows = await self._call(
            lambda: self.db.execute(
                "SELECT recording_id FROM pending UNION SELECT recording_id FROM outbox"
                " UNION SELECT recording_id FROM rejected UNION SELECT recording_id FROM archive"
            ).fetchall()
        )
        return {uuid.UUID(r[0]) for r in rows}

    # --- outbox -----------------------------------------------------------------------------

    async def complete(self, row: Recording, retention: str, *, archive: bool = False) -> None:
        """Move a recording from pending to the outbox atomically: a crash leaves it in
        exactly one of the two. ``archive``: queue its WAV for the archive step too."""
        rid = str(row.id)
        statements: list[_Statement] = [
            ("DELETE FROM pending WHERE recording_id = ?", (rid,)),
            (
                "INSERT OR IGNORE INTO outbox (recording_id, row) VALUES (?, ?)",
                (rid, _row_to_json(row, retention)),
            ),
        ]
        if archive:
            statements.append((_ENQUEUE, (rid, time.time())))
        await self._write(*statements)

    async def oldest(self, limit: int) -> list[tuple[int, Recording, str]]:
        rows = await self._call(
            lambda: self.db.execute("SELECT seq, row FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall()
        )
        return [(seq, *_row_from_json(data)) for seq, data in rows]

    async def delivered(self, *seqs: int) -> None:
        """PostgreSQL has these rows: one commit for a whole batch of them."""
        if seqs:
            await self._write(*(("DELETE FROM outbox WHERE seq = ?", (seq,)) for seq in seqs))

    async def reject(self, seq: int, row: Recording, retention: str, reason: str) -> None:
        await self._write(
            (
                "INSERT OR REPLACE INTO rejected (recording_id, row, reason) VALUES (?, ?, ?)",
                (str(row.id), _row_to_json(row, retention), reason),
            ),
            ("DELETE FROM outbox WHERE seq = ?", (seq,)),
            ("DELETE FROM archive WHERE recording_id = ?", (str(row.id),)),
        )

    async def depth(self) -> int:
        return int(await self._call(lambda: self.db.execute("SELECT count(*) FROM outbox").fetchone()[0]))

    # --- archive queue ----------------------------------------------------------------------

    async def archive_due(self, limit: int) -> list[uuid.UUID]:
        """The oldest entries whose row PostgreSQL has (no longer in the outbox), in order."""
        rows = await self._call(
            lambda: self.db.execute(
                "SELECT recording_id FROM archive a WHERE failed IS NULL AND NOT EXISTS"
                " (SELECT 1 FROM outbox o WHERE o.recording_id = a.recording_id) ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [uuid.UUID(r[0]) for r in rows]

    async def archive_enqueue(self, ids: list[uuid.UUID]) -> None:
        now = time.time()
        if ids:
            await self._write(*((_ENQUEUE, (str(i), now)) for i in ids))

    async def archive_done(self, recording_id: uuid.UUID) -> None:
        await self._write(("DELETE FROM archive WHERE recording_id = ?", (str(recording_id),)))

    async def archive_failed(self, recording_id: uuid.UUID, reason: str) -> None:
        await self._write(
            ("UPDATE archive SET failed = ? WHERE recording_id = ?", (reason, str(recording_id)))
        )

    async def archive_depth(self) -> tuple[int, float | None]:
        """Entries waiting (failed ones not counted) and when the oldest was queued."""
        n, oldest = await self._call(
            lambda: self.db.execute(
                "SELECT count(*), min(queued_at) FROM archive WHERE failed IS NULL"
            ).fetchone()
        )
        return int(n), oldest


_ENQUEUE = "INSERT OR IGNORE INTO archive (recording_id, queued_at) VALUES (?, ?)"
