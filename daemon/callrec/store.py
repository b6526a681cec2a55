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
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(_describe(exc)) from exc
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

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
    here = Path(__file__).resolve().parents[2] / "sql"
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
