"""The audit log: who reached which recording, when, from where, and with what outcome.

Every SQL statement about ``audit_log`` lives here. The table is append-only in the database
itself (a trigger refuses UPDATE, DELETE and TRUNCATE for every role), so this module only
ever inserts and reads.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import asyncpg
import orjson

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


def outcome_for(status: int) -> Outcome:
    if status < 400:
        return "ok"
    return {401: "unauthenticated", 403: "denied", 404: "not_found"}.get(
        status, "error" if status >= 500 else "invalid"
    )  # type: ignore[return-value]


def cli_entry(action: str, detail: dict[str, Any]) -> Entry:
    """A row for a command run on the server itself: the operator's login name is the who."""
    return Entry(action, client="cli", user_name=f"cli:{getpass.getuser()}", outcome="ok", detail=detail)


def parse_time(text: str) -> datetime:
    """ISO 8601; a time without an offset is the server's local time (what a person types)."""
    value = datetime.fromisoformat(text.strip())
    return value if value.tzinfo is not None else value.astimezone()


async def write(db: Any, entry: Entry) -> int:
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
    db: Any,
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


# --- `callrec audit` ---------------------------------------------------------------------------


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    help = "Read the audit log of access to recordings (newest first)."
    cmd: argparse.ArgumentParser = sub.add_parser("audit", help=help, description=help, parents=[common])
    cmd.add_argument("--since", type=parse_time, metavar="TIME", help="ISO time; without offset: local")
    cmd.add_argument("--until", type=parse_time, metavar="TIME")
    cmd.add_argument("--user", metavar="NAME")
    cmd.add_argument("--action", metavar="ACTION", help="e.g. play, export, dsar_search, erase")
    cmd.add_argument("--recording", type=uuid.UUID, metavar="ID")
    cmd.add_argument("--limit", type=int, default=100)
    cmd.add_argument("--json", action="store_true", help="one JSON object per line")
    cmd.set_defaults(handler=_cli)


def _cli(settings: Any, args: argparse.Namespace) -> int:
    try:
        rows = asyncio.run(_cli_read(settings.database_dsn, args))
    except (OSError, asyncpg.PostgresConnectionError) as exc:
        print(f"callrec: database: {exc}", file=sys.stderr)
        return 3
    for row in reversed(rows):  # oldest first on a terminal, like a log
        if args.json:
            print(orjson.dumps(row, default=str).decode())
            continue
        who = f"{row['user_name'] or '-'}({row['role'] or '-'})"
        rec = str(row["recording_id"] or "-")
        detail = orjson.dumps(row["detail"]).decode() if row["detail"] else ""
        print(
            f"{row['at']:%Y-%m-%d %H:%M:%S%z} {who} {row['action']} {row['outcome']}/{row['status'] or '-'}"
            f" {rec} {row['client'] or '-'} {detail}".rstrip()
        )
    return 0


async def _cli_read(dsn: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        filters = {"since": args.since, "until": args.until, "user": args.user, "action": args.action}
        rows = await read(
            conn, **filters, recording_id=args.recording, limit=max(1, min(args.limit, 100_000))
        )
        # Reading the log is an access too.
        detail = {k: str(v) for k, v in filters.items() if v is not None}
        await write(conn, cli_entry("audit_read", detail | {"rows": len(rows)}))
        return rows
    finally:
        await conn.close()
