"""The ``recordings`` table: writing a row, and the SELECT list that reads one.

Both are derived from the one definition of a recording (recording/facts.py), so a field added
there reaches the insert, the reads, the API's JSON and its schema at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from callrec.db.pool import TRANSIENT_ERRORS, Db, Row, StoreUnavailable, describe
from callrec.recording.facts import COLUMNS, Recording, select_list

_FIELDS = tuple(f.name for f in dataclasses.fields(Recording))
_WRITTEN = tuple(name for name, column in COLUMNS.items() if column.written)
_JSONB = frozenset(name for name, column in COLUMNS.items() if column.jsonb)
# retain_until is computed by PostgreSQL: calendar arithmetic ("6 months" from 31 August is
# 28 February) that only the database does exactly (docs/privacy.md#retention).
_INSERT = f"""
INSERT INTO recordings ({", ".join(_WRITTEN)}, retain_until)
VALUES ({", ".join(f"${i}" for i in range(1, len(_WRITTEN) + 1))},
        ${_WRITTEN.index("ended_at") + 1}::timestamptz + ${len(_WRITTEN) + 1}::text::interval)
ON CONFLICT (id) DO NOTHING
"""


FROM = "FROM recordings r LEFT JOIN users u ON u.agent_id = r.agent_name"
SELECT = f"SELECT {select_list()} {FROM}"
"""Every column of a ``Recording``; callers add WHERE (access/policy.py adds the grant's reach)."""


async def insert(db: Db, row: Recording, retention: str) -> bool:
    """Write the row; ``False`` if a row with this id exists already (a replay from the journal)."""
    values = [_encode(name, getattr(row, name)) for name in _WRITTEN]
    try:
        status = await db.execute(_INSERT, *values, retention)
    except TRANSIENT_ERRORS as exc:
        raise StoreUnavailable(describe(exc)) from exc
    return bool(status == "INSERT 0 1")


def from_record(record: Row) -> Recording:
    """A ``Recording`` from a row read with ``SELECT``."""
    return Recording(**{name: _decode(name, record[name]) for name in _FIELDS})


# asyncpg passes jsonb as text both ways (no codec: audit.py writes its own JSON text).
def _encode(name: str, value: Any) -> Any:
    return orjson.dumps(value).decode() if name in _JSONB else value


def _decode(name: str, value: Any) -> Any:
    if name not in _JSONB or not isinstance(value, str):
        return value
    # Lists inside (the paused spans) come back as tuples, as the Recording holds them.
    return tuple(tuple(v) if isinstance(v, list) else v for v in orjson.loads(value))
