"""Shared fixtures: a throwaway PostgreSQL cluster (one per session, a fresh database per
test through pytest-postgresql, migrated from sql/) and the log of structlog output."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
from pytest_postgresql import factories

from callrec.store import migrate
from tests.harness.postgres import Cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    cluster.start()
    yield cluster
    cluster.destroy()


def _load_schema(host: str, port: int, user: str, dbname: str, **_: object) -> None:
    # The template gets the real migrations once; each test's database is a copy of it.
    asyncio.run(migrate(f"postgresql://{user}@{host}:{port}/{dbname}"))


postgresql_proc = factories.postgresql_noproc(depends_on="pg_cluster", load=[_load_schema])
postgresql = factories.postgresql("postgresql_proc")


@pytest.fixture
def db_dsn(postgresql: psycopg.Connection) -> str:
    info = postgresql.info
    return f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"
