"""PostgreSQL connections (asyncpg) and the typed handles every SQL-running module takes.

Transport failures become ``StoreUnavailable``, so callers retry one narrow error. The SQL
lives with its feature: ``db/migrations.py``, ``retention/queries.py``, ``access/*``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

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


class StoreUnavailable(Exception):
    """The database could not be reached or dropped the connection."""


# --- typed handles ------------------------------------------------------------------------------
# asyncpg ships no type information, so to mypy every asyncpg object is Any. These protocols
# state the part of asyncpg's API callrec uses; asyncpg's Pool, Connection and the pool's
# connection proxy all satisfy them (tests/integration/test_store.py checks that at run time).


@runtime_checkable
class Row(Protocol):
    """A result row (``asyncpg.Record``): columns by name or position."""

    # A column's Python type follows from the SQL, which mypy cannot read: Any is the truth.
    def __getitem__(self, key: str | int, /) -> Any: ...

    def keys(self) -> Iterable[str]: ...


@runtime_checkable
class Db(Protocol):
    """Anything that runs a statement: a pool (each call on a connection of its own) or one
    connection (for statements that must share a session, such as an advisory lock)."""

    async def execute(self, query: str, *args: object, timeout: float | None = None) -> str: ...

    async def fetch(self, query: str, *args: object, timeout: float | None = None) -> list[Row]: ...

    async def fetchrow(self, query: str, *args: object, timeout: float | None = None) -> Row | None: ...

    # The one value of the first row; like a column, its type follows from the SQL.
    async def fetchval(
        self, query: str, *args: object, column: int = 0, timeout: float | None = None
    ) -> Any: ...


@runtime_checkable
class DbConnection(Db, Protocol):
    """One session: transactions and session-level locks stay on it."""

    def transaction(self) -> AbstractAsyncContextManager[object]: ...

    async def close(self) -> None: ...


@runtime_checkable
class DbPool(Db, Protocol):
    """A pool of connections (``asyncpg.Pool``)."""

    def acquire(self, *, timeout: float | None = None) -> AbstractAsyncContextManager[DbConnection]: ...

    async def close(self) -> None: ...

    def terminate(self) -> None: ...


# --- connecting ---------------------------------------------------------------------------------


def describe(exc: BaseException) -> str:
    """One line for an operator: the error's type and message, never a traceback."""
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


async def open_pool(
    dsn: str, *, max_size: int = 4, timeout: float = 10.0, command_timeout: float | None = 30.0
) -> DbPool:
    """A pool with one connection open already, or ``StoreUnavailable``."""
    try:
        pool: DbPool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=max_size, timeout=timeout, command_timeout=command_timeout
        )
    except (*TRANSIENT_ERRORS, asyncpg.PostgresError) as exc:
        # A wrong password or a missing database is not transient, but an operator can
        # fix it while we wait: retried with backoff and logged, never a traceback.
        raise StoreUnavailable(describe(exc)) from exc
    return pool


async def close_pool(pool: DbPool, timeout: float = 5.0) -> None:
    """Close gracefully, but never hang a shutdown on a connection someone still holds."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except TimeoutError:
        log.warning("database connections still busy at exit; closed by force")
        pool.terminate()


class Store:
    """A small pool of connections to the register's database."""

    def __init__(self, pool: DbPool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, dsn: str, *, timeout: float = 10.0) -> Store:
        return cls(await open_pool(dsn, timeout=timeout))

    @property
    def pool(self) -> DbPool:
        """For the modules that run their own statements (retention, checks) on the same pool."""
        return self._pool

    async def close(self) -> None:
        await close_pool(self._pool)

    async def ping(self) -> None:
        try:
            await self._pool.fetchval("SELECT 1")
        except TRANSIENT_ERRORS as exc:
            raise StoreUnavailable(describe(exc)) from exc
