"""The archive step: once MixMonitor has closed a WAV and PostgreSQL has its row, turn it into
the archived recording (docs/archive.md#the-archive-step).

Per recording, with the row locked (``FOR UPDATE NOWAIT``: an erasure or a backfill working
on the same row waits or is skipped, never races):

1. transcode and seal into a staging file, in a separate, niced process: memory stays flat
   in call length, and neither the event loop nor the GIL is shared with the call path;
2. put the object in the store, read it back and check every tag and the sha256;
3. in the same transaction as the lock: store the wrapped data key, mark the row archived
   with the archived audio's format, size and sha256; commit;
4. delete the WAV, then the journal's queue entry.

A kill -9 before 3 commits leaves the WAV and the row pointing at it (the object, if any, is
overwritten by the next attempt); after it, the row points at the verified object and the
next start deletes the leftover WAV. Never neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import multiprocessing
import os
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import asyncpg
import structlog

from callrec.archive import codec, keys, reading
from callrec.archive.crypto import CorruptObject, Sealer, new_data_key
from callrec.archive.reading import Archive
from callrec.archive.settings import Format
from callrec.archive.store import StoreError, object_name
from callrec.db.pool import TRANSIENT_ERRORS, DbConnection, DbPool, describe
from callrec.ops import metrics
from callrec.recording.journal import Journal
from callrec.recording.layout import MARKER_SUFFIX
from callrec.retry import Backoff

log = structlog.get_logger("callrec.archive")
_BATCH = 50


class Outcome(enum.Enum):
    ARCHIVED = "archived"
    ALREADY = "already archived"
    """A previous run committed but was killed before deleting the WAV."""
    GONE = "row gone"
    """Destroyed (retention, erasure) before its turn: nothing to archive."""
    BUSY = "row busy"
    FAILED = "cannot be archived"


class WavMissing(Exception):
    """The row's WAV is not in recordings_dir."""


class Unavailable(Exception):
    """The database or the store is down: the entry stays, retried with backoff."""


@dataclass(frozen=True, slots=True)
class Built:
    size: int
    sha256: str
    seconds: float


def build(
    wav: str, staging: str, recording_id: str, key: bytes | None, fmt: Format, bitrate: int, complexity: int
) -> Built:
    """In the archive process: WAV -> archived audio -> (sealed) staging file, fsync'd."""
    try:
        src = open(wav, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        raise WavMissing(wav) from None
    os.makedirs(os.path.dirname(staging), mode=0o750, exist_ok=True)
    with src, open(staging, "wb") as out:
        sink: Sealer | _Hashing = (
            Sealer(out, uuid.UUID(recording_id), key) if key is not None else _Hashing(out)
        )
        seconds = codec.transcode(src, sink, fmt, bitrate=bitrate, complexity=complexity)
        sink.close()
        out.flush()
        os.fsync(out.fileno())
    return Built(sink.plain_size, sink.sha256.hexdigest(), seconds)


class _Hashing:
    """The unencrypted path: the object is the audio itself."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.sha256 = hashlib.sha256()
        self.plain_size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.plain_size += len(data)
        return self._out.write(data)

    def close(self) -> None:
        pass


def _lower_priority() -> None:
    # The PBX comes first: archiving is deferred work, Asterisk's media threads are not.
    with contextlib.suppress(OSError):
        os.nice(10)


def _remove_wav(wav: Path) -> None:
    for path in (wav, Path(str(wav) + MARKER_SUFFIX)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    with contextlib.suppress(OSError):
        fd = os.open(wav.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Archiver:
    """Works the journal's archive queue in order; one per daemon (``run``), or driven by
    ``callrec archive --backfill`` (``archive_one``)."""

    def __init__(
        self, pool: DbPool, archive: Archive, recordings_dir: Path, journal: Journal | None = None
    ) -> None:
        self._pool = pool
        self._archive = archive
        self._dir = recordings_dir
        self._journal = journal
        self._wake = asyncio.Event()
        self._backoff = Backoff(initial=1.0, maximum=30.0)
        self._procs: ProcessPoolExecutor | None = None

    def wake(self) -> None:
        self._wake.set()

    def _executor(self) -> ProcessPoolExecutor:
        if self._procs is None:
            # spawn, not fork: forking a process with an event loop and threads copies their locks.
            self._procs = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_lower_priority
            )
        return self._procs

    def close(self) -> None:
        if self._procs is not None:
            self._procs.shutdown(wait=False, cancel_futures=True)
            self._procs = None

    async def run(self) -> None:
        assert self._journal is not None
        journal = self._journal
        await asyncio.to_thread(self._clear_staging)
        try:
            while True:
                self._wake.clear()
                await self._gauge()
                due = await journal.archive_due(_BATCH)
                if not due:
                    await self._wake.wait()
                    continue
                try:
                    for rid in due:
                        outcome = await self.archive_one(rid)
                        if outcome is Outcome.BUSY:
                            continue  # come back to it next round
                        if outcome is Outcome.FAILED:
                            continue
                        await journal.archive_done(rid)
                    self._backoff.reset()
                    metrics.CONNECTION_UP.labels(connection="store").set(1)
                except Unavailable as exc:
                    metrics.CONNECTION_UP.labels(connection="store").set(0)
                    delay = self._backoff.next_delay()
                    log.warning(
                        "archive step waits; the WAVs stay until it can go on",
                        error=str(exc)[:200],
                        retry_in=round(delay, 2),
                    )
                    await self._gauge()
                    await self._backoff.wait(delay)
        finally:
            self.close()

    async def _gauge(self) -> None:
        assert self._journal is not None
        depth, oldest = await self._journal.archive_depth()
        metrics.ARCHIVE_BACKLOG.set(depth)
        metrics.ARCHIVE_OLDEST_SECONDS.set(max(time.time() - oldest, 0.0) if oldest else 0.0)

    def _clear_staging(self) -> None:
        staging = self._archive.store.staging
        staging.mkdir(parents=True, exist_ok=True, mode=0o750)
        for part in staging.glob("*.part"):
            with contextlib.suppress(OSError):
                part.unlink()

    async def archive_one(self, recording_id: uuid.UUID) -> Outcome:
        bound = log.bind(recording_id=str(recording_id))
        t0 = time.monotonic()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                try:
                    row = await conn.fetchrow(
                        "SELECT file_path, archived_at, retain_until FROM recordings"
                        " WHERE id = $1 FOR UPDATE NOWAIT",
                        recording_id,
                    )
                except asyncpg.LockNotAvailableError:
                    return Outcome.BUSY
                if row is None:
                    bound.info("archive step skipped: the row is gone (destroyed before its turn)")
                    return Outcome.GONE
                wav = self._dir / row["file_path"]
                if row["archived_at"] is not None:
                    outcome = Outcome.ALREADY
                else:
                    outcome = await self._seal(conn, recording_id, wav, row["retain_until"], bound)
        except (*TRANSIENT_ERRORS, asyncpg.PostgresError) as exc:
            # A refused statement is logged and retried like an outage: the WAV stays meanwhile.
            metrics.ARCHIVE_FAILURES.labels(reason="database").inc()
            raise Unavailable(f"database: {describe(exc)}") from exc
        if outcome is Outcome.FAILED:
            return outcome
        await asyncio.to_thread(_remove_wav, wav)
        if outcome is Outcome.ARCHIVED:
            metrics.ARCHIVE_SECONDS.observe(time.monotonic() - t0)
            metrics.ARCHIVED.labels(format=self._archive.settings.format).inc()
        else:
            bound.info("leftover WAV of an archived recording deleted")
        return outcome

    async def _seal(
        self,
        conn: DbConnection,
        recording_id: uuid.UUID,
        wav: Path,
        retain_until: datetime,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> Outcome:
        settings, store, kek = self._archive.settings, self._archive.store, self._archive.keys.current
        key = new_data_key() if kek is not None else None
        staging = store.staging / f"{recording_id}.part"
        loop = asyncio.get_running_loop()
        try:
            built = await loop.run_in_executor(
                self._executor(),
                build,
                str(wav),
                str(staging),
                str(recording_id),
                key,
                settings.format,
                settings.bitrate,
                settings.complexity,
            )
        except WavMissing:
            bound.error("archive step: the WAV is missing; the row keeps pointing at it")
            metrics.ARCHIVE_FAILURES.labels(reason="no_file").inc()
            await self._failed(recording_id, "no_file")
            return Outcome.FAILED
        except codec.BadAudio as exc:
            bound.error("archive step: not archivable, WAV kept as it is", error=str(exc)[:200])
            metrics.ARCHIVE_FAILURES.labels(reason="bad_audio").inc()
            await self._failed(recording_id, f"bad_audio: {exc}"[:200])
            return Outcome.FAILED
        name = object_name(recording_id)
        try:
            await store.put_file(name, staging, retain_until=retain_until)
            await reading.verify(store, recording_id, key, built.size, built.sha256)
        except StoreError as exc:
            metrics.ARCHIVE_FAILURES.labels(reason="store").inc()
            raise Unavailable(str(exc)) from exc
        except (CorruptObject, FileNotFoundError) as exc:
            metrics.ARCHIVE_FAILURES.labels(reason="readback").inc()
            raise Unavailable(f"{store.name}: read back wrong ({exc})") from exc
        if kek is not None and key is not None:
            await keys.store_key(conn, recording_id, kek, key)
        await conn.execute(
            "UPDATE recordings SET archived_at = now(), audio_format = $2, encrypted = $3,"
            " sha256 = $4, file_size = $5 WHERE id = $1",
            recording_id,
            settings.format,
            key is not None,
            built.sha256,
            built.size,
        )
        bound.info(
            "recording archived",
            format=settings.format,
            encrypted=key is not None,
            seconds=round(built.seconds, 1),
            bytes=built.size,
        )
        return Outcome.ARCHIVED

    async def _failed(self, recording_id: uuid.UUID, reason: str) -> None:
        if self._journal is not None:
            await self._journal.archive_failed(recording_id, reason)
