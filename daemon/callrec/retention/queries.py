"""The retention SQL: the sweep's claims and disposals, legal holds, the dry-run summary, the
per-node lock.

Every statement is one short autocommit transaction over at most one batch of rows, so a pass
never holds a transaction open while it deletes files (docs/retention.md, "Crash-safe order").
``db`` is a pool or one connection; the node lock needs one connection, as it belongs to the
session.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from callrec.db.pool import Db, DbConnection, Row

# A recording is held while legal_hold is set and its hold_until (if any) is still ahead.
_HELD = "(legal_hold AND (hold_until IS NULL OR hold_until > now()))"
_PENDING_COLUMNS = "recording_id, register_name, file_path, file_size, reason, node, archived"


@dataclass(frozen=True, slots=True)
class Disposal:
    """A recording (or an orphan file) whose destruction has begun: a ``disposal_pending`` row."""

    recording_id: uuid.UUID
    register_name: str | None
    file_path: str
    file_size: int
    reason: str
    """retention | erasure | orphan"""
    node: str
    archived: bool = False
    """The audio is the archive object (its data key went with the row); else the WAV."""


@dataclass(frozen=True, slots=True)
class HoldState:
    legal_hold: bool
    hold_reason: str | None
    hold_at: datetime | None
    hold_until: datetime | None


def _disposals(rows: Sequence[Row]) -> list[Disposal]:
    return [
        Disposal(
            r["recording_id"],
            r["register_name"],
            r["file_path"],
            r["file_size"],
            r["reason"],
            r["node"],
            r["archived"],
        )
        for r in rows
    ]


# Deleting the row deletes its data key in the same transaction (recording_keys ... ON DELETE
# CASCADE, sql/005_archive.sql): crypto-shredding happens here, before any file or object is
# touched, and key_destroyed_at records it (docs/archive.md#destruction).
_GONE = (
    "RETURNING id, register_name, file_path, file_size, node, archived_at IS NOT NULL AS archived, encrypted"
)
_KEY_DESTROYED = "CASE WHEN encrypted THEN now() END"


def _move_to_pending(select_ids: str) -> str:
    """DELETE the selected recordings and queue them, atomically in one statement: from here
    on the register no longer shows them, and the queue remembers their audio."""
    return f"""
WITH gone AS (DELETE FROM recordings WHERE id IN ({select_ids}) {_GONE})
INSERT INTO disposal_pending
    (recording_id, register_name, file_path, file_size, reason, node, archived, key_destroyed_at)
SELECT id, register_name, file_path, file_size, 'retention', node, archived, {_KEY_DESTROYED} FROM gone
RETURNING {_PENDING_COLUMNS}
"""


# The promise stored with the row (ended_at + the retention when it was recorded). Every node
# claims from the whole register, whichever node wrote the row (docs/retention.md#several-nodes):
# a renamed host or a retired PBX never keeps a row past its window. SKIP LOCKED and the DELETE
# hand each row to one claim only, however many nodes sweep at once.
_CLAIM_STORED = _move_to_pending("""
    SELECT id FROM recordings
    WHERE NOT legal_hold AND retain_until <= now()
    ORDER BY retain_until LIMIT $1 FOR UPDATE SKIP LOCKED""")

# The register's retention as configured now, when it is shorter than the stored promise.
# `ended_at + $4` is exact calendar arithmetic (31 Jan + 1 month = 28 Feb) but no index can
# serve it; the started_at bound ($5 = slack for month ends and DST) is a superset that the
# (register_name, started_at) index can, since started_at <= ended_at.
_CLAIM_SHORTENED = _move_to_pending("""
    SELECT id FROM recordings
    WHERE register_name = $2 AND NOT legal_hold
      AND started_at <= now() - $3::text::interval + $4::text::interval
      AND ended_at + $3::text::interval <= now()
    ORDER BY started_at LIMIT $1 FOR UPDATE SKIP LOCKED""")

_CLAIM_ERASURE = f"""
WITH gone AS (DELETE FROM recordings WHERE id = $1 AND NOT {_HELD} {_GONE})
INSERT INTO disposal_pending
    (recording_id, register_name, file_path, file_size, reason, node, requested_by, request_reason,
     archived, key_destroyed_at)
SELECT id, register_name, file_path, file_size, 'erasure', node, $2, $3, archived, {_KEY_DESTROYED}
FROM gone
RETURNING {_PENDING_COLUMNS}
"""

# An orphan is claimed only if still no row references its path, checked in the same statement.
_ORPHAN_CANDIDATES = """
    FROM unnest($1::uuid[], $2::text[], $3::bigint[]) AS c(id, path, size)
    WHERE NOT EXISTS (SELECT 1 FROM recordings r WHERE r.file_path = c.path OR r.id = c.id)
      AND NOT EXISTS (SELECT 1 FROM disposal_pending p WHERE p.file_path = c.path OR p.recording_id = c.id)
"""
_CLAIM_ORPHANS = f"""
INSERT INTO disposal_pending (recording_id, register_name, file_path, file_size, reason, node)
SELECT c.id, NULL, c.path, c.size, 'orphan', $4 {_ORPHAN_CANDIDATES}
ON CONFLICT (recording_id) DO NOTHING
RETURNING {_PENDING_COLUMNS}
"""

# What this node can finish: its own files, and with a shared store every archived object.
_REACHABLE = "(node = $1 OR (archived AND $2::boolean))"
_PENDING_OF_NODE = f"""
SELECT {_PENDING_COLUMNS} FROM disposal_pending
WHERE {_REACHABLE} AND recording_id > $3 ORDER BY recording_id LIMIT $4
"""

# Disposals whose audio only another node can delete: the row and key are gone already.
_WAITING = f"""
SELECT count(*) AS n, extract(epoch FROM now() - min(created_at))::float8 AS oldest,
       array_agg(DISTINCT node) AS nodes
FROM disposal_pending WHERE NOT {_REACHABLE}
"""

# The file is gone: the queue row becomes the log entry, in one statement. DELETE ... RETURNING
# hands each row to one transaction only, so a recording is logged once however many passes race.
_FINISH = """
WITH done AS (DELETE FROM disposal_pending WHERE recording_id = ANY($1::uuid[]) RETURNING *),
logged AS (
    INSERT INTO disposal_log (recording_id, register_name, reason, bytes, node,
                              requested_by, request_reason, requested_at,
                              key_destroyed_at, audio_deleted_from)
    SELECT recording_id, register_name, reason, file_size, node, requested_by, request_reason, created_at,
           key_destroyed_at, CASE WHEN archived THEN 'archive' ELSE 'recordings_dir' END
    FROM done
    RETURNING register_name, reason, bytes)
SELECT reason, register_name, count(*)::bigint AS count, sum(bytes)::bigint AS bytes
FROM logged GROUP BY reason, register_name
"""

_EXPIRE_HOLDS = """
WITH lifted AS (
    UPDATE recordings SET legal_hold = false, hold_reason = NULL, hold_by = NULL,
                          hold_at = NULL, hold_until = NULL
    WHERE id IN (SELECT id FROM recordings WHERE legal_hold AND hold_until <= now()
                 LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING id)
INSERT INTO legal_hold_log (recording_id, action, by) SELECT id, 'expire', 'retention' FROM lifted
"""

_SET_HOLD = """
WITH held AS (
    UPDATE recordings SET legal_hold = true, hold_reason = $2, hold_by = $3, hold_at = now(),
                          hold_until = $4
    WHERE id = $1 RETURNING id)
INSERT INTO legal_hold_log (recording_id, action, by, reason, hold_until)
SELECT id, 'hold', $3, $2, $4 FROM held
"""

_CLEAR_HOLD = """
WITH lifted AS (
    UPDATE recordings SET legal_hold = false, hold_reason = NULL, hold_by = NULL,
                          hold_at = NULL, hold_until = NULL
    WHERE id = $1 AND legal_hold RETURNING id)
INSERT INTO legal_hold_log (recording_id, action, by) SELECT id, 'release', $2 FROM lifted
"""

# What a pass would destroy, for --dry-run: the same rules as the claims above, read only.
_DUE_SUMMARY = f"""
SELECT reason, register_name, count(*) AS count, coalesce(sum(file_size), 0)::bigint AS bytes FROM (
    SELECT 'retention' AS reason, register_name, file_size
    FROM recordings
    LEFT JOIN unnest($1::text[], $2::text[]) AS c(configured, retention) ON c.configured = register_name
    WHERE NOT {_HELD}
      AND (retain_until <= now() OR ended_at + c.retention::interval <= now())
    UNION ALL
    SELECT reason, register_name, file_size FROM disposal_pending
) due GROUP BY reason, register_name
"""


async def claim_expired(db: Db, limit: int) -> list[Disposal]:
    return _disposals(await db.fetch(_CLAIM_STORED, limit))


async def claim_shortened(db: Db, limit: int, register: str, interval: str, slack: str) -> list[Disposal]:
    return _disposals(await db.fetch(_CLAIM_SHORTENED, limit, register, interval, slack))


async def claim_erasure(db: Db, recording_id: uuid.UUID, by: str, reason: str) -> Disposal | None:
    rows = _disposals(await db.fetch(_CLAIM_ERASURE, recording_id, by, reason))
    return rows[0] if rows else None


async def claim_orphans(
    db: Db, node: str, candidates: Sequence[tuple[uuid.UUID, str, int]]
) -> list[Disposal]:
    ids, paths, sizes = zip(*candidates, strict=True) if candidates else ((), (), ())
    return _disposals(await db.fetch(_CLAIM_ORPHANS, list(ids), list(paths), list(sizes), node))


async def unreferenced(
    db: Db, candidates: Sequence[tuple[uuid.UUID, str, int]]
) -> list[tuple[uuid.UUID, str, int]]:
    """The candidates no row references (what ``claim_orphans`` would take), read only."""
    ids, paths, sizes = zip(*candidates, strict=True) if candidates else ((), (), ())
    rows = await db.fetch(
        f"SELECT c.id, c.path, c.size {_ORPHAN_CANDIDATES}", list(ids), list(paths), list(sizes)
    )
    return [(r["id"], r["path"], r["size"]) for r in rows]


async def pending_disposals(
    db: Db, node: str, shared_store: bool, after: uuid.UUID, limit: int
) -> list[Disposal]:
    return _disposals(await db.fetch(_PENDING_OF_NODE, node, shared_store, after, limit))


@dataclass(frozen=True, slots=True)
class Waiting:
    """Destroyed recordings whose audio waits for the node that holds it."""

    count: int
    oldest_seconds: float
    nodes: list[str]


async def waiting_for_other_nodes(db: Db, node: str, shared_store: bool) -> Waiting:
    r = await db.fetchrow(_WAITING, node, shared_store)
    assert r is not None
    return Waiting(r["n"], r["oldest"] or 0.0, sorted(r["nodes"] or []))


async def heartbeat(db: Db, node: str, machine: str) -> None:
    """This node is alive (the sweep's every pass): `callrec check` names silent nodes."""
    await db.execute(
        "INSERT INTO nodes (name, machine_id, last_seen_at) VALUES ($1, $2, now())"
        " ON CONFLICT (name) DO UPDATE SET machine_id = EXCLUDED.machine_id, last_seen_at = now()",
        node,
        machine,
    )


async def finish_disposals(db: Db, ids: Sequence[uuid.UUID]) -> list[tuple[str, str | None, int, int]]:
    """Log and drop the queue rows of files that are gone: (reason, register, count, bytes) of
    what this call finished (a row another pass finished first is not counted)."""
    rows = await db.fetch(_FINISH, list(ids))
    return [(r["reason"], r["register_name"], r["count"], r["bytes"]) for r in rows]


async def expire_holds(db: Db, limit: int) -> int:
    status = await db.execute(_EXPIRE_HOLDS, limit)
    return int(status.rsplit(" ", 1)[1])


async def set_hold(db: Db, recording_id: uuid.UUID, reason: str, by: str, until: datetime | None) -> bool:
    status = await db.execute(_SET_HOLD, recording_id, reason, by, until)
    return status != "INSERT 0 0"


async def clear_hold(db: Db, recording_id: uuid.UUID, by: str) -> bool:
    status = await db.execute(_CLEAR_HOLD, recording_id, by)
    return status != "INSERT 0 0"


async def hold_state(db: Db, recording_id: uuid.UUID) -> HoldState | None:
    r = await db.fetchrow(
        f"SELECT {_HELD} AS held, hold_reason, hold_at, hold_until FROM recordings WHERE id = $1",
        recording_id,
    )
    return None if r is None else HoldState(r["held"], r["hold_reason"], r["hold_at"], r["hold_until"])


async def due_summary(
    db: Db, retentions: Sequence[tuple[str, str]]
) -> list[tuple[str, str | None, int, int]]:
    """(reason, register, count, bytes) that a pass would destroy now, read only."""
    names = [name for name, _ in retentions]
    intervals = [interval for _, interval in retentions]
    rows = await db.fetch(_DUE_SUMMARY, names, intervals)
    return [(r["reason"], r["register_name"], r["count"], r["bytes"]) for r in rows]


async def try_node_lock(conn: DbConnection, key: int) -> bool:
    """One pass per node at a time (a `callrec retention` beside the daemon); other nodes run
    freely. Session-level, so it never holds a transaction open; and so it takes a connection,
    never a pool, whose next statement could run on another session."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1::bigint)", key))


async def node_unlock(conn: DbConnection, key: int) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1::bigint)", key)
