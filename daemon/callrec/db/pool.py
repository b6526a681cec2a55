"""PostgreSQL: every SQL statement callrec runs lives here (asyncpg).

Transport failures become ``StoreUnavailable``, so callers retry one narrow error.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import structlog

log = structlog.get_logger("callrec.store")

# What a lost or refused connection looks like from asyncpg.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)
# Any number: serialises `callrec migrate` runs (two daemons sharing one database).
_MIGRATION_LOCK = 0x63616C6C72656300


class StoreUnavailable(Exception):
    """The database could not be reached or dropped the connection."""


@dataclass(frozen=True, slots=True)
class RecordingRow:
    """One row of ``recordings``, as the register holds it."""

    id: uuid.UUID
    call_id: str
    register_name: str
    direction: str
    started_at: datetime
    ended_at: datetime
    service_number: str | None
    customer_number_masked: str | None
    customer_number_hmac: str | None
    agent_name: str | None
    file_path: str
    file_size: int
    sha256: str
    retention: str
    """A PostgreSQL interval such as "6 months"; retain_until = ended_at + retention."""
    node: str = ""
    recovered: bool = False
    interrupted: bool = False

    @property
    def duration_seconds(self) -> Decimal:
        seconds = max((self.ended_at - self.started_at).total_seconds(), 0.0)
        return Decimal(f"{seconds:.3f}")


_INSERT = """
INSERT INTO recordings (id, call_id, register_name, direction, started_at, ended_at,
    duration_seconds, service_number, customer_number_masked, customer_number_hmac, agent_name,
    file_path, file_size, sha256, retain_until, node, recovered, interrupted)
VALUES ($1, $2, $3, $4, $5, $6::timestamptz, $7, $8, $9, $10, $11, $12, $13, $14,
        $6::timestamptz + $15::text::interval, $16, $17, $18)
ON CONFLICT (id) DO NOTHING
"""


class Store:
    """A small pool of connections to the register's database."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, dsn: str, *, timeout: float = 10.0) -> Store:
        try:
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, timeout=timeout, command_timeout=30)
        except (*TRANSIENT_ERRORS, asyncpg.PostgresError) as exc:
            # A wrong password or a missing database is not transient, but an operator can
            # fix it while we wait: retried with backoff and logged, never a traceback.
            raise StoreUnavailable(_describe(exc)) from exc
        return cls(pool)

    @property
    def pool(self) -> asyncpg.Pool:
        """For the modules that run their own statements (retention.py) on the same pool."""
        return self._pool

    async def close(self) -> None:
        await close_pool(self._pool)

    async def insert_recording(self, row: RecordingRow) -> bool:
        """Write the row; ``False`` if a row with this id exists already (a replay)."""
        try:
            status = await self._pool.execute(
                _INSERT,
                row.id,
                row.call_id,
                row.register_name,
                row.direction,
                row.started_at,
                row.ended_at,
                row.duration_seconds,
                row.service_number,
                row.customer_number_masked,
                row.customer_number_hmac,
                row.agent_name,
                row.file_path,
                row.file_size,
                row.sha256,
                row.retention,
                row.node,
                row.recovered,
                row.interrupted,
            )
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(_describe(exc)) from exc
        return bool(status == "INSERT 0 1")

    async def ping(self) -> None:
        try:
            await self._pool.fetchval("SELECT 1")
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(_describe(exc)) from exc

    async def pending_migrations(self, sql_dir: Path | None = None) -> list[str]:
        async with self._pool.acquire() as conn:
            return [m.name for m in await _pending(conn, migration_files(sql_dir))]


async def close_pool(pool: asyncpg.Pool, timeout: float = 5.0) -> None:
    """Close gracefully, but never hang a shutdown on a connection someone still holds."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except TimeoutError:
        log.warning("database connections still busy at exit; closed by force")
        pool.terminate()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


# --- migrations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def sql_dir() -> Path:
    """``sql/`` of a source checkout, else the copy ``pip install`` puts under share/."""
    here = Path(__file__).resolve().parents[3] / "sql"
    if here.is_dir():
        return here
    return Path(sys.prefix) / "share" / "callrec" / "sql"


def migration_files(directory: Path | None = None) -> list[Migration]:
    directory = directory or sql_dir()
    found = []
    for path in sorted(directory.glob("[0-9][0-9][0-9]_*.sql")):
        found.append(Migration(int(path.name[:3]), path.stem, path.read_text(encoding="utf-8")))
    if not found:
        raise FileNotFoundError(f"no migrations in {directory}")
    return found


async def _pending(conn: Any, migrations: Sequence[Migration]) -> list[Migration]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done: set[int] = set()
    if exists:
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [m for m in migrations if m.version not in done]


async def migrate(dsn: str, directory: Path | None = None) -> list[str]:
    """Apply pending migrations, one transaction each; safe to run twice or concurrently."""
    migrations = migration_files(directory)
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except TRANSIENT_ERRORS as exc:
        raise StoreUnavailable(_describe(exc)) from exc
    applied = []
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in migrations:
            async with conn.transaction():
                # The lock makes a second runner wait, then see the version as applied.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                if await conn.fetchval(
                    "SELECT 1 FROM schema_migrations WHERE version = $1", migration.version
                ):
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
                applied.append(migration.name)
                log.info("migration applied", migration=migration.name)
    finally:
        await conn.close()
    return applied


# --- retention (issue 3): the sweep, legal holds, erasure ------------------------------------
# Every statement below is one short autocommit transaction over at most one batch of rows, so a
# pass never holds a transaction open while it deletes files (README.md "Retention").
# ``conn`` is an asyncpg connection or pool.

# A recording is held while legal_hold is set and its hold_until (if any) is still ahead.
_HELD = "(legal_hold AND (hold_until IS NULL OR hold_until > now()))"
_PENDING_COLUMNS = "recording_id, register_name, file_path, file_size, reason, node"


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


@dataclass(frozen=True, slots=True)
class HoldState:
    legal_hold: bool
    hold_reason: str | None
    hold_at: datetime | None
    hold_until: datetime | None


def _disposals(rows: Sequence[Any]) -> list[Disposal]:
    return [
        Disposal(
            r["recording_id"], r["register_name"], r["file_path"], r["file_size"], r["reason"], r["node"]
        )
        for r in rows
    ]


def _move_to_pending(select_ids: str) -> str:
    """DELETE the selected recordings and queue them, atomically in one statement: from here
    on the register no longer shows them, and the queue remembers their files."""
    return f"""
WITH gone AS (
    DELETE FROM recordings WHERE id IN ({select_ids})
    RETURNING id, register_name, file_path, file_size, node)
INSERT INTO disposal_pending (recording_id, register_name, file_path, file_size, reason, node)
SELECT id, register_name, file_path, file_size, 'retention', node FROM gone
RETURNING {_PENDING_COLUMNS}
"""


# The promise stored with the row (ended_at + the retention when it was recorded).
_CLAIM_STORED = _move_to_pending("""
    SELECT id FROM recordings
    WHERE node = $1 AND NOT legal_hold AND retain_until <= now()
    ORDER BY retain_until LIMIT $2 FOR UPDATE SKIP LOCKED""")

# The register's retention as configured now, when it is shorter than the stored promise.
# `ended_at + $4` is exact calendar arithmetic (31 Jan + 1 month = 28 Feb) but no index can
# serve it; the started_at bound ($5 = slack for month ends and DST) is a superset that the
# (register_name, started_at) index can, since started_at <= ended_at.
_CLAIM_SHORTENED = _move_to_pending("""
    SELECT id FROM recordings
    WHERE node = $1 AND register_name = $3 AND NOT legal_hold
      AND started_at <= now() - $4::text::interval + $5::text::interval
      AND ended_at + $4::text::interval <= now()
    ORDER BY started_at LIMIT $2 FOR UPDATE SKIP LOCKED""")

_CLAIM_ERASURE = f"""
WITH gone AS (
    DELETE FROM recordings WHERE id = $1 AND NOT {_HELD}
    RETURNING id, register_name, file_path, file_size, node)
INSERT INTO disposal_pending
    (recording_id, register_name, file_path, file_size, reason, node, requested_by, request_reason)
SELECT id, register_name, file_path, file_size, 'erasure', node, $2, $3 FROM gone
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

_PENDING_OF_NODE = f"""
SELECT {_PENDING_COLUMNS} FROM disposal_pending
WHERE node = $1 AND recording_id > $2 ORDER BY recording_id LIMIT $3
"""

# The file is gone: the queue row becomes the log entry, in one statement. DELETE ... RETURNING
# hands each row to one transaction only, so a recording is logged once however many passes race.
_FINISH = """
WITH done AS (DELETE FROM disposal_pending WHERE recording_id = ANY($1::uuid[]) RETURNING *),
logged AS (
    INSERT INTO disposal_log (recording_id, register_name, reason, bytes, node,
                              requested_by, request_reason, requested_at)
    SELECT recording_id, register_name, reason, file_size, node, requested_by, request_reason, created_at
    FROM done
    RETURNING register_name, reason, bytes)
SELECT reason, register_name, count(*)::bigint AS count, sum(bytes)::bigint AS bytes
FROM logged GROUP BY reason, register_name
"""

_EXPIRE_HOLDS = """
WITH lifted AS (
    UPDATE recordings SET legal_hold = false, hold_reason = NULL, hold_by = NULL,
                          hold_at = NULL, hold_until = NULL
    WHERE id IN (SELECT id FROM recordings WHERE node = $1 AND legal_hold AND hold_until <= now()
                 LIMIT $2 FOR UPDATE SKIP LOCKED)
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
    LEFT JOIN unnest($2::text[], $3::text[]) AS c(configured, retention) ON c.configured = register_name
    WHERE node = $1 AND NOT {_HELD}
      AND (retain_until <= now() OR ended_at + c.retention::interval <= now())
    UNION ALL
    SELECT reason, register_name, file_size FROM disposal_pending WHERE node = $1
) due GROUP BY reason, register_name
"""


async def claim_expired(conn: Any, node: str, limit: int) -> list[Disposal]:
    return _disposals(await conn.fetch(_CLAIM_STORED, node, limit))


async def claim_shortened(
    conn: Any, node: str, limit: int, register: str, interval: str, slack: str
) -> list[Disposal]:
    return _disposals(await conn.fetch(_CLAIM_SHORTENED, node, limit, register, interval, slack))


async def claim_erasure(conn: Any, recording_id: uuid.UUID, by: str, reason: str) -> Disposal | None:
    rows = _disposals(await conn.fetch(_CLAIM_ERASURE, recording_id, by, reason))
    return rows[0] if rows else None


async def claim_orphans(
    conn: Any, node: str, candidates: Sequence[tuple[uuid.UUID, str, int]]
) -> list[Disposal]:
    ids, paths, sizes = zip(*candidates, strict=True) if candidates else ((), (), ())
    return _disposals(await conn.fetch(_CLAIM_ORPHANS, list(ids), list(paths), list(sizes), node))


async def unreferenced(
    conn: Any, candidates: Sequence[tuple[uuid.UUID, str, int]]
) -> list[tuple[uuid.UUID, str, int]]:
    """The candidates no row references (what ``claim_orphans`` would take), read only."""
    ids, paths, sizes = zip(*candidates, strict=True) if candidates else ((), (), ())
    rows = await conn.fetch(
        f"SELECT c.id, c.path, c.size {_ORPHAN_CANDIDATES}", list(ids), list(paths), list(sizes)
    )
    return [(r["id"], r["path"], r["size"]) for r in rows]


async def pending_disposals(conn: Any, node: str, after: uuid.UUID, limit: int) -> list[Disposal]:
    return _disposals(await conn.fetch(_PENDING_OF_NODE, node, after, limit))


async def finish_disposals(conn: Any, ids: Sequence[uuid.UUID]) -> list[tuple[str, str | None, int, int]]:
    """Log and drop the queue rows of files that are gone: (reason, register, count, bytes) of
    what this call finished (a row another pass finished first is not counted)."""
    rows = await conn.fetch(_FINISH, list(ids))
    return [(r["reason"], r["register_name"], r["count"], r["bytes"]) for r in rows]


async def expire_holds(conn: Any, node: str, limit: int) -> int:
    status: str = await conn.execute(_EXPIRE_HOLDS, node, limit)
    return int(status.rsplit(" ", 1)[1])


async def set_hold(conn: Any, recording_id: uuid.UUID, reason: str, by: str, until: datetime | None) -> bool:
    status: str = await conn.execute(_SET_HOLD, recording_id, reason, by, until)
    return status != "INSERT 0 0"


async def clear_hold(conn: Any, recording_id: uuid.UUID, by: str) -> bool:
    status: str = await conn.execute(_CLEAR_HOLD, recording_id, by)
    return status != "INSERT 0 0"


async def hold_state(conn: Any, recording_id: uuid.UUID) -> HoldState | None:
    r = await conn.fetchrow(
        f"SELECT {_HELD} AS held, hold_reason, hold_at, hold_until FROM recordings WHERE id = $1",
        recording_id,
    )
    return None if r is None else HoldState(r["held"], r["hold_reason"], r["hold_at"], r["hold_until"])


async def due_summary(
    conn: Any, node: str, retentions: Sequence[tuple[str, str]]
) -> list[tuple[str, str | None, int, int]]:
    """(reason, register, count, bytes) that a pass would destroy now, read only."""
    names = [name for name, _ in retentions]
    intervals = [interval for _, interval in retentions]
    rows = await conn.fetch(_DUE_SUMMARY, node, names, intervals)
    return [(r["reason"], r["register_name"], r["count"], r["bytes"]) for r in rows]


async def try_node_lock(conn: Any, key: int) -> bool:
    """One pass per node at a time (a `callrec retention` beside the daemon); other nodes run
    freely. Session-level, so it never holds a transaction open."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1::bigint)", key))


async def node_unlock(conn: Any, key: int) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1::bigint)", key)
