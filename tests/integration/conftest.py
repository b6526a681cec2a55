"""Fixtures shared by the integration tests that run SQL of their own beside the code's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the test's own database (the runtime role, as the daemon connects)."""
    p = await asyncpg.create_pool(db_dsn, min_size=1, max_size=6)
    yield p
    await p.close()
