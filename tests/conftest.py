"""Shared fixtures: a throwaway PostgreSQL cluster (one per session, a fresh database per
test through pytest-postgresql, migrated from sql/) and the log of structlog output."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import psycopg
import pytest
import structlog
from pytest_postgresql import factories

from callrec.db.migrations import migrate
from tests.harness.postgres import OWNER, RUNTIME, Cluster
from tests.harness.seaweed import Seaweed


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def seaweed() -> Iterator[Seaweed]:
    """One SeaweedFS (S3) for the session; tests use their own object prefixes."""
    store = Seaweed()
    store.start()
    yield store
    store.destroy()


def _load_schema(host: str, port: int, user: str, dbname: str, **_: object) -> None:
    # The template gets the real migrations once, as README's install does them: the schema
    # belongs to OWNER, `callrec migrate` runs as OWNER and grants RUNTIME. Each test's
    # database is a copy of it (object owners and grants are copied with it).
    su = f"postgresql://{user}@{host}:{port}/{dbname}"
    with psycopg.connect(su, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {dbname} OWNER TO {OWNER}")
        conn.execute(f"ALTER SCHEMA public OWNER TO {OWNER}")
    at = f"@{host}:{port}/{dbname}"
    asyncio.run(migrate(f"postgresql://{OWNER}{at}", runtime_dsn=f"postgresql://{RUNTIME}{at}"))


postgresql_proc = factories.postgresql_noproc(depends_on="pg_cluster", load=[_load_schema])
postgresql = factories.postgresql("postgresql_proc")


@pytest.fixture
def db_dsn(postgresql: psycopg.Connection) -> str:
    """The daemon's runtime role on this test's database."""
    info = postgresql.info
    return f"postgresql://{RUNTIME}@{info.host}:{info.port}/{info.dbname}"


@pytest.fixture
def owner_dsn(postgresql: psycopg.Connection) -> str:
    """The schema owner on this test's database (what `callrec migrate` connects as)."""
    info = postgresql.info
    return f"postgresql://{OWNER}@{info.host}:{info.port}/{info.dbname}"


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """A test that runs ``cli.main`` in-process points logging at pytest's captured stdout,
    which is closed after that test: undo it, so no later test writes to a closed file."""
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if type(h).__name__ == "_StdlibHandler"]:
        root.removeHandler(handler)
