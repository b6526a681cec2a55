"""The retention sweep: recordings destroyed when their register's window ends (docs/privacy.md).

One pass, in an order that a kill -9 at any moment cannot make inconsistent (docs/retention.md,
"Crash-safe order"); legal holds and single erasures are ``retention/holds.py``:

1. Take this node's advisory lock (session-level: no transaction stays open). A second pass of
   the same node skips; passes of other nodes never wait.
2. Lift holds whose ``hold_until`` has passed.
3. Finish what a killed pass or an erasure left in ``disposal_pending``.
4. Batch by batch: move expired rows from ``recordings`` to ``disposal_pending`` (one
   statement), delete their files (one thread hop per batch), then turn the queue rows into
   ``disposal_log`` entries (one statement). A file is deleted only after its row left the
   register, and the queue row goes only after the file is gone.
5. Orphan audio files older than the longest retention plus ``orphan_grace``, same way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import structlog

from callrec.archive.store import ObjectStore
from callrec.config import Settings
from callrec.db.pool import Db, DbConnection, DbPool
from callrec.ops import metrics
from callrec.ops.node import machine_id
from callrec.retention import files as spool
from callrec.retention.audio import WAITING, delete_audio
from callrec.retention.queries import (
    Disposal,
    claim_expired,
    claim_orphans,
    claim_shortened,
    due_summary,
    expire_holds,
    finish_disposals,
    heartbeat,
    node_unlock,
    pending_disposals,
    try_node_lock,
    unreferenced,
    waiting_for_other_nodes,
)

log = structlog.get_logger("callrec.retention")
T = TypeVar("T")

_DELETERS = 4
"""Batches whose files are being deleted at once (bench/retention.py: 4 beat 1 and 2 here)."""

Claim = Callable[[], Awaitable[list[Disposal] | None]]
"""The next batch taken into ``disposal_pending``; ``None`` once there is nothing left."""


@dataclass
class Tally:
    count: int = 0
    bytes: int = 0

    def add(self, count: int, size: int) -> None:
        self.count += count
        self.bytes += size


@dataclass
class PassReport:
    """What one pass destroyed (or, with ``dry_run``, would destroy)."""

    dry_run: bool = False
    registers: dict[str, Tally] = field(default_factory=dict)
    """Destroyed because their retention ended, per register."""
    erasures: Tally = field(default_factory=Tally)
    """Erasures finished by this pass (left by a crash, or queued by another node)."""
    orphans: Tally = field(default_factory=Tally)
    markers: int = 0
    """Stale MixMonitor ``.wav.done`` markers removed; not audio, so not in any tally."""
    missing_files: int = 0
    """Rows destroyed whose file was already gone (counted in the tallies all the same)."""
    errors: int = 0
    holds_lifted: int = 0
    audit_rows_purged: int = 0
    """Audit rows past [retention] audit_log, destroyed by the owner's function (006)."""
    waiting: int = 0
    """Destroyed (row and key gone) whose file only another node can delete; queued for it."""
    skipped: bool = False
    """Another pass of this node held the lock; nothing was done."""
    seconds: float = 0.0
    longest_transaction_seconds: float = 0.0

    def record(self, reason: str, register: str | None, count: int, size: int) -> None:
        if reason == "orphan":
            self.orphans.add(count, size)
        elif reason == "erasure":
            self.erasures.add(count, size)
        else:
            self.registers.setdefault(register or "", Tally()).add(count, size)

    @property
    def total(self) -> Tally:
        tally = Tally()
        for part in (*self.registers.values(), self.erasures, self.orphans):
            tally.add(part.count, part.bytes)
        return tally


# --- the sweep ---------------------------------------------------------------------------------


def _lock_key(node: str) -> int:
    """A 64-bit advisory-lock key per node; a hash collision between two nodes would only make
    their passes take turns."""
    digest = hashlib.blake2b(b"callrec.retention\0" + node.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _slack(interval: str) -> str:
    """How much later `ended_at + interval` can fall than `now() - interval` suggests: three
    days of month-end clamping (31 Jan + 1 month = 28 Feb) and a DST hour."""
    return "4 days" if "month" in interval else "1 day"


def next_run(scheduled: float, now: float, interval: float) -> float:
    """The slot after ``scheduled`` on the fixed grid ``scheduled + k * interval`` that is still
    ahead of ``now``: passes stay on schedule however long one took, and missed slots are
    skipped, not run back to back."""
    following = scheduled + interval
    if following <= now:
        following += ((now - following) // interval + 1) * interval
    return following


class Sweeper:
    """Destroys what retention, erasure and crashes leave due. One per daemon (``run_forever``),
    or one pass on demand (``callrec retention``)."""

    def __init__(self, pool: DbPool, settings: Settings, store: ObjectStore | None = None) -> None:
        self._pool = pool
        self._settings = settings
        self._store = store
        """The archive's store: archived recordings are deleted from it (their key went first)."""
        self._shared = store is not None and store.shared
        self._node = settings.node
        self._root = settings.asterisk.recordings_dir
        self._batch = settings.retention_batch
        self._lock_key = _lock_key(settings.node)
        self.pass_timeout = max(settings.retention_interval, 60.0)
        """A pass cut off here loses nothing: the next one finishes its queue."""
        # Series exist at zero from the start, so increase() sees the first destruction.
        for reason in ("retention", "erasure", "orphan"):
            metrics.RETENTION_DESTROYED.labels(reason=reason)
            metrics.RETENTION_DESTROYED_BYTES.labels(reason=reason)

    def _reachable(self, d: Disposal) -> bool:
        """Can this node delete the disposal's audio: its own files, and any archived object
        in a store every node shares."""
        return d.node == self._node or (d.archived and self._shared)

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._settings.retention_interval
        scheduled = loop.time()
        while True:
            try:
                async with asyncio.timeout(self.pass_timeout):
                    await self.run_pass()
            except TimeoutError:
                metrics.RETENTION_ERRORS.inc()
                log.error("retention pass timed out; the next pass resumes", timeout=self.pass_timeout)
            except Exception as exc:
                metrics.RETENTION_ERRORS.inc()
                log.error("retention pass failed; retrying next pass", error=repr(exc)[:300])
            scheduled = next_run(scheduled, loop.time(), interval)
            await asyncio.sleep(scheduled - loop.time())

    async def run_pass(self, *, dry_run: bool = False) -> PassReport:
        report = PassReport(dry_run=dry_run)
        for name in self._settings.registers:
            report.registers[name] = Tally()
        started = time.monotonic()
        async with self._pool.acquire() as conn:
            if dry_run:
                await self._summarise(conn, report)
                await self._orphans(conn, report)
            elif not await try_node_lock(conn, self._lock_key):
                report.skipped = True
                log.info("retention pass skipped: another pass of this node is running", node=self._node)
                return report
            else:
                try:
                    await self._destroy(conn, report)
                finally:
                    # If the connection broke, the server has dropped the lock with it.
                    with contextlib.suppress(Exception):
                        await node_unlock(conn, self._lock_key)
        report.seconds = time.monotonic() - started
        if not dry_run:
            metrics.RETENTION_LAST_PASS_SECONDS.set(report.seconds)
            if report.errors == 0:
                metrics.RETENTION_LAST_SUCCESS.set(time.time())
        total = report.total
        (log.info if total.count or report.errors or report.holds_lifted else log.debug)(
            "retention pass",
            dry_run=dry_run,
            destroyed=total.count,
            bytes=total.bytes,
            per_register={k: v.count for k, v in report.registers.items()},
            erasures=report.erasures.count,
            orphans=report.orphans.count,
            markers=report.markers,
            missing_files=report.missing_files,
            errors=report.errors,
            holds_lifted=report.holds_lifted,
            audit_rows_purged=report.audit_rows_purged,
            seconds=round(report.seconds, 3),
        )
        return report

    async def _destroy(self, conn: DbConnection, report: PassReport) -> None:
        node, batch = self._node, self._batch
        while True:
            lifted = await self._timed(report, expire_holds(conn, batch))
            report.holds_lifted += lifted
            if lifted < batch:
                break
        if report.holds_lifted:
            log.info("legal holds ended (hold_until passed)", count=report.holds_lifted)
        # The runtime role cannot delete audit rows; this function, owned by the schema owner,
        # deletes only those older than the owner's setting and logs it (docs/retention.md).
        report.audit_rows_purged = int(await conn.fetchval("SELECT callrec_purge_audit_log()"))

        after = uuid.UUID(int=0)

        async def pending() -> list[Disposal] | None:
            nonlocal after
            rows = await pending_disposals(conn, node, self._shared, after, batch)
            if rows:
                after = rows[-1].recording_id
            return rows or None

        await self._dispose(conn, pending, report)
        await self._dispose(conn, _until_empty(lambda: claim_expired(conn, batch)), report)
        for name, register in self._settings.registers.items():
            interval = register.retention.interval
            shortened = functools.partial(claim_shortened, conn, batch, name, interval, _slack(interval))
            await self._dispose(conn, _until_empty(shortened), report)
        await self._orphans(conn, report)
        await heartbeat(conn, node, machine_id())
        waiting = await waiting_for_other_nodes(conn, node, self._shared)
        metrics.DISPOSALS_WAITING.set(waiting.count)
        metrics.DISPOSALS_WAITING_OLDEST.set(waiting.oldest_seconds)
        if waiting.count:
            log.warning(
                "destroyed recordings whose files only another node can delete",
                count=waiting.count,
                nodes=waiting.nodes,
                oldest_hours=round(waiting.oldest_seconds / 3600, 1),
            )

    async def _dispose(self, conn: Db, claim: Claim, report: PassReport) -> None:
        """Claim -> delete files -> finish, batch after batch. Up to ``_DELETERS`` batches are
        deleted at once, in the pass's own threads, while the connection claims the next batch
        and finishes the oldest: the database and the disk work at the same time, and on a
        disk where each unlink waits (ext4 with discard, NFS) a few unlinks in parallel beat
        one after the other."""
        keep_from = spool.keep_dirs_from()
        in_flight: collections.deque[tuple[list[Disposal], asyncio.Future[list[str]]]] = collections.deque()
        # Not the default executor: the recorder's own file work must never queue behind a sweep.
        deleters = ThreadPoolExecutor(_DELETERS, thread_name_prefix="callrec-retention")
        try:
            while True:
                batch = await self._timed(report, claim())
                if batch:
                    deleting: asyncio.Future[list[str]] = asyncio.ensure_future(
                        delete_audio(self._root, self._store, batch, keep_from, self._reachable, deleters)
                    )
                    in_flight.append((batch, deleting))
                while in_flight and (batch is None or len(in_flight) >= _DELETERS or in_flight[0][1].done()):
                    done, deleting = in_flight.popleft()
                    await self._finish(conn, done, await deleting, report)
                if batch is None:
                    return
        finally:
            # Threads still running finish their batch; the queue rows stay for the next pass.
            for _, deleting in in_flight:
                deleting.cancel()
            deleters.shutdown(wait=False, cancel_futures=True)

    async def _finish(
        self, conn: Db, batch: Sequence[Disposal], outcomes: Sequence[str], report: PassReport
    ) -> None:
        gone: list[uuid.UUID] = []
        failed: list[tuple[Disposal, str]] = []
        missing = 0
        for disposal, outcome in zip(batch, outcomes, strict=True):
            if outcome == WAITING:
                report.waiting += 1
            elif outcome in (spool.DESTROYED, spool.MISSING):
                gone.append(disposal.recording_id)
                missing += outcome == spool.MISSING
            else:
                failed.append((disposal, outcome))
        if missing:
            report.missing_files += missing
            log.warning("files already missing; their rows are destroyed all the same", count=missing)
        if failed:
            report.errors += len(failed)
            metrics.RETENTION_ERRORS.inc(len(failed))
            first, error = failed[0]
            log.error(
                "cannot delete recording files; retried next pass",
                count=len(failed),
                recording_id=str(first.recording_id),
                file_path=first.file_path,
                error=error,
            )
        if gone:
            done = await self._timed(report, finish_disposals(conn, gone))
            _count(report, done)

    async def _orphans(self, conn: Db, report: PassReport) -> None:
        days = (r.retention.approx_days for r in self._settings.registers.values())
        cutoff = time.time() - spool.orphan_age(days, self._settings.orphan_grace)
        last_day = datetime.fromtimestamp(cutoff, UTC).date()
        keep_from = spool.keep_dirs_from()
        for rel in await asyncio.to_thread(spool.old_day_dirs, self._root, last_day):
            audio, markers = await asyncio.to_thread(spool.scan_day, self._root, rel, cutoff)
            chunks = [audio[i : i + self._batch] for i in range(0, len(audio), self._batch)]
            if report.dry_run:
                for chunk in chunks:
                    free = await self._timed(report, unreferenced(conn, chunk))
                    report.orphans.add(len(free), sum(size for _, _, size in free))
                report.markers += len(markers)
                continue
            await self._dispose(conn, _orphan_claims(conn, self._node, chunks), report)
            # After the audio: a marker whose file was destroyed or is held by a row has no use.
            if markers:
                report.markers += await asyncio.to_thread(
                    spool.delete_markers, self._root, markers, keep_from
                )

    async def _summarise(self, conn: Db, report: PassReport) -> None:
        retentions = [(name, reg.retention.interval) for name, reg in self._settings.registers.items()]
        for reason, register, count, size in await self._timed(report, due_summary(conn, retentions)):
            report.record(reason, register, count, size)

    @staticmethod
    async def _timed(report: PassReport, aw: Awaitable[T]) -> T:
        # Each statement is its own transaction: this bounds how long any of them stayed open.
        t0 = time.monotonic()
        try:
            return await aw
        finally:
            elapsed = time.monotonic() - t0
            report.longest_transaction_seconds = max(report.longest_transaction_seconds, elapsed)


def _until_empty(fetch: Callable[[], Awaitable[list[Disposal]]]) -> Claim:
    async def claim() -> list[Disposal] | None:
        return (await fetch()) or None

    return claim


def _orphan_claims(conn: Db, node: str, chunks: Sequence[Sequence[spool.Candidate]]) -> Claim:
    pending = iter(chunks)

    async def claim() -> list[Disposal] | None:
        chunk = next(pending, None)
        return None if chunk is None else await claim_orphans(conn, node, chunk)

    return claim


def _count(report: PassReport, done: Sequence[tuple[str, str | None, int, int]]) -> None:
    """Tally finished disposals, (reason, register, count, bytes), into the report and metrics."""
    for reason, register, count, size in done:
        report.record(reason, register, count, size)
        metrics.RETENTION_DESTROYED.labels(reason=reason).inc(count)
        metrics.RETENTION_DESTROYED_BYTES.labels(reason=reason).inc(size)
