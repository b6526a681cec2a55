"""Legal holds and erasure of one recording: what ``callrec hold | release | erase`` and the
access API's ``POST /api/recordings/{id}/hold|release|erase`` do (docs/retention.md,
"Legal hold and erasure").

A hold keeps a recording past its retention (a police case, a restriction request); an
erasure destroys one recording now (GDPR Art. 17), in the same crash-safe order as a pass.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from callrec.archive.store import ObjectStore
from callrec.config import Settings
from callrec.db.pool import DbConnection, DbPool
from callrec.ops import metrics
from callrec.privacy import redact
from callrec.retention import files as spool
from callrec.retention.audio import delete_audio
from callrec.retention.queries import claim_erasure, clear_hold, finish_disposals, hold_state, set_hold

log = structlog.get_logger("callrec.retention")

_MAX_TEXT = 500

Audit = Callable[[DbConnection, Mapping[str, Any]], Awaitable[None]]
"""Writes the change's audit row on the change's own connection, inside its transaction: the
change and its row commit together, or neither does (docs/api.md#the-audit-log). Given the change's
facts to add to the row."""


async def _no_audit(conn: DbConnection, detail: Mapping[str, Any]) -> None:
    """The CLI commands write their audit row themselves (access/cli.py)."""


class RecordingNotFound(Exception):
    """No recording with this id in the register (never recorded, or already destroyed)."""


class RecordingOnHold(Exception):
    """The recording is on legal hold: release it before erasing it."""


def _text(value: str, what: str) -> str:
    """Free text goes into the register: one line, bounded, and never a phone number (a
    reason like "asked by +358 40 123 4567" keeps only the masked form)."""
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise ValueError(f"{what} must not hold control characters")
    text = redact(" ".join(value.split()))[:_MAX_TEXT]
    if not text:
        raise ValueError(f"{what} must not be empty")
    return text


async def hold(
    pool: DbPool,
    recording_id: uuid.UUID,
    *,
    reason: str,
    by: str,
    until: datetime | None = None,
    audit: Audit = _no_audit,
) -> None:
    """Keep the recording past its retention until released, or until ``until`` passes (a
    hold that has run out no longer protects; the next pass lifts it and logs that)."""
    reason, by = _text(reason, "reason"), _text(by, "by")
    if until is not None and until.tzinfo is None:
        raise ValueError("until needs a time zone")
    if until is not None and until <= datetime.now(UTC):
        raise ValueError("until is in the past")
    async with pool.acquire() as conn, conn.transaction():
        if not await set_hold(conn, recording_id, reason, by, until):
            raise RecordingNotFound(f"no recording {recording_id} in the register")
        await audit(conn, {})
    # "01 Feb 2027": an ISO date is seven digits in a row, which the log redaction would mask.
    log.info(
        "legal hold set", recording_id=str(recording_id), by=by, until=f"{until:%d %b %Y}" if until else None
    )


async def release(pool: DbPool, recording_id: uuid.UUID, *, by: str, audit: Audit = _no_audit) -> None:
    """Lift a hold; the recording's retention applies again from the next pass. Releasing a
    recording that is not held does nothing."""
    by = _text(by, "by")
    async with pool.acquire() as conn, conn.transaction():
        released = await clear_hold(conn, recording_id, by)
        if not released and await hold_state(conn, recording_id) is None:
            raise RecordingNotFound(f"no recording {recording_id} in the register")
        await audit(conn, {"released": released})
    if released:
        log.info("legal hold released", recording_id=str(recording_id), by=by)


async def erase(
    pool: DbPool,
    settings: Settings,
    recording_id: uuid.UUID,
    *,
    reason: str,
    by: str,
    audit: Audit = _no_audit,
    store: ObjectStore | None = None,
) -> int:
    """Destroy one recording now (GDPR Art. 17); returns the bytes destroyed. The row leaves
    the register at once. A file on another node is queued: that node's next pass deletes it,
    and 0 is returned. Raises ``RecordingOnHold``, ``RecordingNotFound``, or ``OSError`` if the
    file could not be deleted (the row is gone; every pass retries the file)."""
    reason, by = _text(reason, "reason"), _text(by, "by")
    async with pool.acquire() as conn:
        async with conn.transaction():
            disposal = await claim_erasure(conn, recording_id, by, reason)
            if disposal is not None:
                shared = store is not None and store.shared
                here = disposal.node == settings.node or (disposal.archived and shared)
                await audit(conn, {"bytes_destroyed": disposal.file_size if here else 0})
        if disposal is None:
            state = await hold_state(conn, recording_id)
            if state is None:
                raise RecordingNotFound(f"no recording {recording_id} in the register")
            since = f" since {state.hold_at:%Y-%m-%d}" if state.hold_at else ""
            raise RecordingOnHold(
                f"recording {recording_id} is on legal hold{since} ({state.hold_reason}); "
                "release it first if the hold no longer applies"
            )
        bound = log.bind(recording_id=str(recording_id), register=disposal.register_name, by=by)
        shared = store is not None and store.shared
        if disposal.node != settings.node and not (disposal.archived and shared):
            # Row and key are gone already; only that node can delete the file.
            bound.info("erasure queued for the node that holds the file", node=disposal.node)
            return 0
        root = settings.asterisk.recordings_dir
        [outcome] = await delete_audio(root, store, [disposal], spool.keep_dirs_from(), lambda d: True)
        if outcome not in (spool.DESTROYED, spool.MISSING):
            metrics.RETENTION_ERRORS.inc()
            bound.error("erasure: cannot delete the file; every pass retries", error=outcome)
            raise OSError(f"recording {recording_id}: cannot delete {disposal.file_path}: {outcome}")
        # The same series a pass counts into, so the dashboard shows erasures whichever way.
        for reason_done, _, count, size in await finish_disposals(conn, [recording_id]):
            metrics.RETENTION_DESTROYED.labels(reason=reason_done).inc(count)
            metrics.RETENTION_DESTROYED_BYTES.labels(reason=reason_done).inc(size)
    bound.info("recording erased", bytes=disposal.file_size)
    return disposal.file_size
