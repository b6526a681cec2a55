"""The schema: the numbered SQL files of ``sql/``, applied once each, in order."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from callrec.db import grants
from callrec.db.pool import TRANSIENT_ERRORS, Db, DbConnection, StoreUnavailable, describe

log = structlog.get_logger("callrec.store")

# Any number: serialises `callrec migrate` runs (two daemons sharing one database).
_MIGRATION_LOCK = 0x63616C6C72656300


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def sql_dir() -> Path:
    """``sql/`` of a source checkout, else the copy ``pip install`` puts under share/."""
    # daemon/callrec/db/migrations.py -> the checkout's root, three folders up.
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


async def pending(db: Db, migrations: Sequence[Migration] | None = None) -> list[Migration]:
    """The migrations (default: those of ``sql_dir()``) this database has not applied."""
    migrations = migration_files() if migrations is None else migrations
    exists = await db.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done: set[int] = set()
    if exists:
        done = {r["version"] for r in await db.fetch("SELECT version FROM schema_migrations")}
    return [m for m in migrations if m.version not in done]


async def apply(conn: DbConnection, migrations: Sequence[Migration] | None = None) -> list[str]:
    """Apply the pending ones of ``migrations`` (default: those of ``sql_dir()``) on ``conn``,
    one transaction each; safe to run twice or concurrently. Returns the names applied."""
    migrations = migration_files() if migrations is None else migrations
    applied = []
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for migration in migrations:
        async with conn.transaction():
            # The lock makes a second runner wait, then see the version as applied.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            if await conn.fetchval("SELECT 1 FROM schema_migrations WHERE version = $1", migration.version):
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied.append(migration.name)
            log.info("migration applied", migration=migration.name)
    return applied


async def _connect(dsn: str) -> DbConnection:
    try:
        conn: DbConnection = await asyncpg.connect(dsn, timeout=10)
    except TRANSIENT_ERRORS as exc:
        raise StoreUnavailable(describe(exc)) from exc
    return conn


async def runtime_role(dsn: str) -> str:
    """The role the daemon connects as: asked of the server, since a DSN may leave it to libpq
    defaults (PGUSER, the login name)."""
    conn = await _connect(dsn)
    try:
        return str(await conn.fetchval("SELECT current_user"))
    finally:
        await conn.close()


async def migrate(
    owner_dsn: str,
    directory: Path | None = None,
    *,
    runtime_dsn: str | None = None,
    audit_log_retention: str | None = None,
) -> list[str]:
    """``apply`` as the schema owner on a connection of its own, then grant the runtime role
    (the role of ``runtime_dsn``) what the daemon needs (docs/privacy.md#two-database-roles)."""
    migrations = migration_files(directory)  # a missing sql/ is reported before any connect
    role = await runtime_role(runtime_dsn) if runtime_dsn is not None else None
    conn = await _connect(owner_dsn)
    try:
        applied = await apply(conn, migrations)
        if audit_log_retention is not None:
            await grants.set_setting(conn, "audit_log_retention", audit_log_retention)
        if role is not None and role != await conn.fetchval("SELECT current_user"):
            await grants.grant_runtime(conn, role)
            log.info("runtime role granted", role=role)
        return applied
    finally:
        await conn.close()
