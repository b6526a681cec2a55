"""The store and the migrations on a real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from callrec.db import recordings
from callrec.db.migrations import migrate, pending
from callrec.db.pool import Db, DbConnection, DbPool, Row, Store
from callrec.recording.facts import Recording


def row(**over: object) -> Recording:
    start = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    base = dict(
        id=uuid.uuid4(),
        call_id="1795373223.0",
        register_name="customer-service",
        direction="inbound",
        started_at=start,
        ended_at=start + timedelta(seconds=61.25),
        service_number="0300",
        customer_number_masked="+358401234***",
        customer_number_hmac=None,
        agent_name="alice",
        file_path="2026/01/31/x.wav",
        file_size=1234,
        sha256="a" * 64,
        duration_seconds=61.25,
        node="",
        recovered=False,
        interrupted=False,
    )
    base.update(over)
    return Recording(**base)  # type: ignore[arg-type]


async def test_insert_is_idempotent_and_computes_retention(db_dsn: str) -> None:
    store = await Store.connect(db_dsn)
    try:
        r = row()
        assert await recordings.insert(store.pool, r, "1 months") is True
        assert await recordings.insert(store.pool, r, "1 months") is False
        conn = await asyncpg.connect(db_dsn)
        rec = await conn.fetchrow("SELECT * FROM recordings")
        await conn.close()
    finally:
        await store.close()
    assert rec["duration_seconds"] == Decimal("61.250")
    assert float(rec["duration_seconds"]) == 61.25
    # Calendar months: 31 January + 1 month is the end of February, not 3 March.
    assert rec["retain_until"] == datetime(2026, 2, 28, 12, 1, 1, 250000, tzinfo=UTC)
    assert rec["legal_hold"] is False


@pytest.mark.parametrize("bad", ["+358401234567", "0401234567", "abc***"])
async def test_database_refuses_an_unmasked_number(db_dsn: str, bad: str) -> None:
    store = await Store.connect(db_dsn)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await recordings.insert(store.pool, row(customer_number_masked=bad), "1 months")
    finally:
        await store.close()


async def test_migrate_is_idempotent(db_dsn: str, owner_dsn: str) -> None:
    assert await migrate(owner_dsn, runtime_dsn=db_dsn) == []
    store = await Store.connect(db_dsn)
    try:
        assert await pending(store.pool) == []
    finally:
        await store.close()


async def test_asyncpg_has_what_the_typed_handles_promise(db_dsn: str) -> None:
    """mypy sees asyncpg as Any, so only this tells whether db/pool.py's protocols are true."""
    store = await Store.connect(db_dsn)
    try:
        pool = store.pool
        assert isinstance(pool, DbPool)
        async with pool.acquire() as conn:
            assert isinstance(conn, DbConnection)
            row = await conn.fetchrow("SELECT 1 AS one")
            assert isinstance(row, Row) and row["one"] == row[0] == 1 and dict(row) == {"one": 1}
        direct = await asyncpg.connect(db_dsn)
        try:
            assert isinstance(direct, DbConnection) and isinstance(direct, Db)
        finally:
            await direct.close()
    finally:
        await store.close()
