"""The audit log: who reached which recording, when, from where, and with what outcome.

Every SQL statement about ``audit_log`` lives here. The table is append-only in the database
itself (a trigger refuses UPDATE, DELETE and TRUNCATE for every role), so this module only
ever inserts and reads.
"""

from __future__ import annotations

import getpass
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from callrec.db.pool import Db

Outcome = Literal["ok", "unauthenticated", "denied", "not_found", "invalid", "error"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "unauthenticated", "denied", "not_found", "invalid", "error")


@dataclass(slots=True)
class Entry:
    """One audit row in the making. ``detail`` must never hold a full number or a token."""

    action: str
    client: str | None = None
    user_id: int | None = None
    user_name: str | None = None
    role: str | None = None
    recording_id: uuid.UUID | None = None
    outcome: Outcome = "error"
    status: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


_OUTCOME_OF_STATUS: dict[int, Outcome] = {401: "unauthenticated", 403: "denied", 404: "not_found"}


def outcome_for(status: int) -> Outcome:
    if status < 400:
        return "ok"
    return _OUTCOME_OF_STATUS.get(status, "error" if status >= 500 else "invalid")


def cli_entry(action: str, detail: dict[str, Any]) -> Entry:
    """A row for a command run on the server itself: the operator's login name is the who."""
    return Entry(action, client="cli", user_name=f"cli:{getpass.getuser()}", outcome="ok", detail=detail)


EARLIEST, LATEST = 1900, 2999
"""Years a time in a request may have: far enough either way for any call, and away from
the ends of Python's and PostgreSQL's ranges, where a time zone or a window overflows."""


def parse_time(text: str) -> datetime:
    """ISO 8601; a time without an offset is the server's local time (what a person types).
    ``ValueError`` for anything else, a year outside EARLIEST..LATEST included."""
    try:
        value = datetime.fromisoformat(text.strip())
        value = value if value.tzinfo is not None else value.astimezone()
        in_utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range") from None
    if not EARLIEST <= in_utc.year <= LATEST:
        raise ValueError("out of range")
    return value


async def write(db: Db, entry: Entry) -> int:
    """Insert the row and return its id. Callers refuse the access when this fails."""
    return int(
        await db.fetchval(
            """
            INSERT INTO audit_log (user_id, user_name, role, action, recording_id, client, outcome,
                                   status, detail)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb) RETURNING id
            """,
            entry.user_id,
            entry.user_name,
            entry.role,
            entry.action,
            entry.recording_id,
            entry.client,
            entry.outcome,
            entry.status,
            orjson.dumps(entry.detail, default=str).decode(),
        )
    )


async def read(
    db: Db,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    user: str | None = None,
    action: str | None = None,
    recording_id: uuid.UUID | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Newest first. ``recording_id`` also finds the exports that carried the recording."""
    rows = await db.fetch(
        """
        SELECT id, at, user_name, role, action, recording_id, client, outcome, status, detail::text
        FROM audit_log
        WHERE ($1::timestamptz IS NULL OR at >= $1) AND ($2::timestamptz IS NULL OR at < $2)
          AND ($3::text IS NULL OR user_name = $3) AND ($4::text IS NULL OR action = $4)
          AND ($5::uuid IS NULL OR recording_id = $5 OR detail->'recording_ids' ? $5::text)
        ORDER BY id DESC LIMIT $6
        """,
        since,
        until,
        user,
        action,
        recording_id,
        limit,
    )
    return [{**dict(r), "detail": orjson.loads(r["detail"])} for r in rows]
