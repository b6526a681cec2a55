"""Two database roles (docs/privacy.md#two-database-roles): the schema owner migrates, the
runtime role the daemon uses cannot alter the evidence logs, and `callrec check` says when
the runtime role owns them. Every test's database is set up this way (tests/conftest.py)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import psycopg
import pytest

from callrec.db.migrations import migrate, sql_dir
from callrec.ops.check import database_roles
from callrec.retention.sweep import Sweeper
from tests.harness.postgres import RUNTIME
from tests.integration.access_world import settings

LOGS = {"audit_log": "at", "legal_hold_log": "at", "disposal_log": "disposed_at"}
BACKDATED = datetime(2001, 1, 1, tzinfo=UTC)


@pytest.fixture
async def runtime(db_dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(db_dsn)
    yield conn
    await conn.close()


async def test_runtime_role_cannot_disable_delete_or_forge(runtime: asyncpg.Connection) -> None:
    await runtime.execute("INSERT INTO audit_log (action, outcome) VALUES ('whoami', 'ok')")
    for table in LOGS:
        for sql in (
            f"ALTER TABLE {table} DISABLE TRIGGER USER",
            f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
            f"UPDATE {table} SET recording_id = recording_id",
            f"DELETE FROM {table}",
            f"TRUNCATE {table}",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await runtime.execute(sql)
    assert await runtime.fetchval("SELECT count(*) FROM audit_log") == 1


async def test_the_logs_timestamps_are_the_databases(runtime: asyncpg.Connection) -> None:
    rid = "00000000-0000-4000-8000-000000000001"
    inserts = {
        "audit_log": "INSERT INTO audit_log (action, outcome, at) VALUES ('whoami', 'ok', $1)",
        "legal_hold_log": "INSERT INTO legal_hold_log (recording_id, action, by, at)"
        f" VALUES ('{rid}', 'hold', 'x', $1)",
        "disposal_log": "INSERT INTO disposal_log (recording_id, reason, bytes, node, requested_at,"
        f" disposed_at) VALUES ('{rid}', 'erasure', 0, 'n', now(), $1)",
    }
    for table, column in LOGS.items():
        await runtime.execute(inserts[table], BACKDATED)
        stamped = await runtime.fetchval(f"SELECT {column} FROM {table}")
        assert abs((stamped - datetime.now(UTC)).total_seconds()) < 3600, table  # not 2001


async def test_the_logs_ids_are_the_databases(runtime: asyncpg.Connection) -> None:
    """An id given by the client could slip a forged row in among older ones."""
    await runtime.execute("INSERT INTO audit_log (action, outcome) VALUES ('whoami', 'ok')")
    first = await runtime.fetchval("SELECT max(id) FROM audit_log")
    for forged in (first - 1, first + 1000):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="set by the database"):
            await runtime.execute(
                "INSERT INTO audit_log (id, action, outcome) OVERRIDING SYSTEM VALUE"
                " VALUES ($1, 'whoami', 'ok')",
                forged,
            )
    await runtime.execute("INSERT INTO audit_log (action, outcome) VALUES ('whoami', 'ok'), ('page', 'ok')")
    assert await runtime.fetchval("SELECT count(*) FROM audit_log") == 3


async def test_grants_cover_a_table_of_a_later_migration(tmp_path: Path, db_dsn: str, owner_dsn: str) -> None:
    """A table added by anyone's migration gets the runtime role's DML with no grant of its own."""
    sql = tmp_path / "sql"
    shutil.copytree(sql_dir(), sql)
    (sql / "999_later.sql").write_text("CREATE TABLE later_table (id int PRIMARY KEY);\n")
    assert await migrate(owner_dsn, sql, runtime_dsn=db_dsn) == ["999_later"]
    conn = await asyncpg.connect(db_dsn)
    try:
        await conn.execute("INSERT INTO later_table VALUES (1)")
        await conn.execute("UPDATE later_table SET id = 2")
        await conn.execute("DELETE FROM later_table")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("INSERT INTO callrec_settings VALUES ('audit_log_retention', '1 day')")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM schema_migrations")
    finally:
        await conn.close()


async def test_check_fails_when_the_runtime_role_owns_the_logs(
    tmp_path: Path, db_dsn: str, owner_dsn: str, postgresql: psycopg.Connection
) -> None:
    s = settings(tmp_path, db_dsn)
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=1)
    try:
        assert (await database_roles(s, pool)).status == "warn"  # no owner_dsn: migrate as runtime
        assert (await database_roles(replace(s, database_owner_dsn=owner_dsn), pool)).status == "ok"
        # What README's old install did (createdb -O callrec): the runtime role owns everything.
        postgresql.execute(f"ALTER TABLE audit_log OWNER TO {RUNTIME}")
        postgresql.commit()
        found = await database_roles(replace(s, database_owner_dsn=owner_dsn), pool)
        assert found.status == "FAIL" and "owns audit_log" in found.detail
    finally:
        await pool.close()


async def _backdate_audit_rows(owner_dsn: str, years: list[int]) -> None:
    """Rows as if written years ago: only the owner can, by lifting the stamp trigger."""
    conn = await asyncpg.connect(owner_dsn)
    try:
        async with conn.transaction():
            await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_stamp")
            for n in years:
                await conn.execute(
                    "INSERT INTO audit_log (action, outcome, at)"
                    " VALUES ('whoami', 'ok', now() - $1::text::interval)",
                    f"{n} years 1 day",
                )
            await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_stamp")
    finally:
        await conn.close()


async def test_audit_rows_past_their_retention_are_destroyed_with_a_record(
    tmp_path: Path, db_dsn: str, owner_dsn: str
) -> None:
    await _backdate_audit_rows(owner_dsn, [3, 2, 1, 0])
    s = replace(settings(tmp_path, db_dsn), registers={})
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    try:
        report = await Sweeper(pool, s).run_pass()
        assert report.audit_rows_purged == 2  # the 3- and 2-year-old ones; default 2 years
        assert await pool.fetchval("SELECT count(*) FROM audit_log") == 2
        purge = await pool.fetchrow("SELECT rows, by FROM audit_purge_log")
        assert (purge["rows"], purge["by"]) == (2, RUNTIME)
        # The runtime role can neither shorten the window nor delete by itself.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await pool.execute("UPDATE callrec_settings SET value = '1 day'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await pool.execute("DELETE FROM audit_purge_log")
        # `callrec migrate` sets the window from [retention] audit_log, as the owner.
        await migrate(owner_dsn, runtime_dsn=db_dsn, audit_log_retention="1 year")
        assert (await Sweeper(pool, s).run_pass()).audit_rows_purged == 1
        assert await pool.fetchval("SELECT count(*) FROM audit_log") == 1
    finally:
        await pool.close()
