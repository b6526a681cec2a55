"""Feeds finished rows from the journal to PostgreSQL, in order, through any outage."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import asyncpg
import structlog

from callrec.db import recordings
from callrec.db.pool import Db, StoreUnavailable
from callrec.ops import metrics
from callrec.recording.facts import Recording
from callrec.recording.journal import Journal
from callrec.retry import Backoff

log = structlog.get_logger("callrec.outbox")
_BATCH = 100


class Outbox:
    """``put`` makes a row durable locally at once; ``run`` delivers it when it can."""

    def __init__(
        self,
        journal: Journal,
        db: Db,
        *,
        backoff_max: float = 10.0,
        archive: bool = False,
        on_delivered: Callable[[], None] = lambda: None,
    ) -> None:
        self._journal = journal
        self._db = db
        self._archive = archive
        """Queue each row's WAV for the archive step (archive/pipeline.py)."""
        self._on_delivered = on_delivered
        self._backoff = Backoff(initial=1.0, maximum=backoff_max)
        self._wake = asyncio.Event()
        self._empty = asyncio.Event()

    async def put(self, row: Recording, retention: str) -> None:
        await self._journal.complete(row, retention, archive=self._archive)
        self._empty.clear()
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            batch = await self._journal.oldest(_BATCH)
            # A batch short of _BATCH is the whole outbox: no count(*), one thread hop fewer a row.
            metrics.OUTBOX_DEPTH.set(len(batch) if len(batch) < _BATCH else await self._journal.depth())
            if not batch:
                if not self._wake.is_set():  # a put() since we looked means not empty
                    self._empty.set()
                await self._wake.wait()
                continue
            # One journal commit for the batch, not one fsync per row (that capped the rate):
            # a crash in between only replays rows PostgreSQL then ignores as duplicates.
            delivered: list[int] = []
            try:
                for seq, row, retention in batch:
                    if await self._deliver(seq, row, retention):
                        delivered.append(seq)
                self._backoff.reset()
                metrics.CONNECTION_UP.labels(connection="database").set(1)
            except StoreUnavailable as exc:
                metrics.CONNECTION_UP.labels(connection="database").set(0)
                metrics.DB_WRITE_RETRIES.inc()
                delay = self._backoff.next_delay()
                log.warning(
                    "database unavailable; rows kept in the journal",
                    error=str(exc)[:200],
                    retry_in=round(delay, 2),
                )
                # A new row must not shortcut the backoff: the database is what we wait for.
                await self._backoff.wait(delay)
            finally:
                await self._journal.delivered(*delivered)
                if delivered:
                    self._on_delivered()

    async def _deliver(self, seq: int, row: Recording, retention: str) -> bool:
        """True once PostgreSQL has the row; False if it refused it for good (set aside)."""
        t0 = time.perf_counter()
        try:
            inserted = await recordings.insert(self._db, row, retention)
        except asyncpg.PostgresError as exc:
            # Not an outage: this row can never be written as it is. Keep it aside, go on.
            log.error(
                "row refused by the database; kept in the journal's rejected table",
                recording_id=str(row.id),
                call_id=row.call_id,
                register=row.register_name,
                error=type(exc).__name__,
            )
            metrics.RECORDINGS_FAILED.labels(register=row.register_name, reason="row_rejected").inc()
            await self._journal.reject(seq, row, retention, type(exc).__name__)
            return False
        metrics.DB_WRITE_SECONDS.observe(time.perf_counter() - t0)
        if inserted:
            metrics.RECORDINGS_COMPLETED.labels(register=row.register_name).inc()
            log.info(
                "recording stored",
                call_id=row.call_id,
                register=row.register_name,
                recording_id=str(row.id),
                duration_seconds=row.duration_seconds,
                bytes=row.file_size,
                recovered=row.recovered,
                interrupted=row.interrupted,
            )
        else:
            log.info(
                "row already stored (replay)",
                recording_id=str(row.id),
                call_id=row.call_id,
                register=row.register_name,
            )
        return True

    async def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the journal to be empty; True if it is."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), timeout)
        return self._empty.is_set()
