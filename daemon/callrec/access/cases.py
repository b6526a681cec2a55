"""Data-subject requests as cases (docs/web.md#data-subject-requests): every SQL statement
about ``dsar_cases`` and the tables that hang off it (sql/012_dsar_cases.sql).

A case holds who asked and when, the GDPR Art. 12(3) deadline (computed by PostgreSQL: one
month from receipt, three when extended), its status, its searches (masked number and keyed
HMAC only), the candidates the DPO listened to, and its exports with their receipts. The web
page (web/dsar.py) writes each change inside the transaction of its audit row.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import orjson

from callrec.access import dsar
from callrec.db.pool import Db
from callrec.privacy import redact

Kind = Literal["data_subject", "police"]
Status = Literal["open", "answered", "refused"]
KINDS: tuple[Kind, ...] = ("data_subject", "police")
STATUSES: tuple[Status, ...] = ("open", "answered", "refused")
_LONGEST = 300


class CaseNotFound(Exception):
    """No such case (404)."""


class BadCase(ValueError):
    """A field of a case is unusable; the message starts with the field's name."""


def text(value: Any, name: str, *, required: bool = True) -> str | None:
    """One line of free text for a case, redacted: a phone number typed into it keeps only
    its masked form (docs/privacy.md#no-full-number-anywhere)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise BadCase(f"{name}: required")
        return None
    if (
        not isinstance(value, str)
        or len(value) > _LONGEST
        or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value)
    ):
        raise BadCase(f"{name}: one line of at most {_LONGEST} characters")
    return redact(" ".join(value.split()))


@dataclass(frozen=True, slots=True)
class Case:
    id: int
    kind: Kind
    requester: str
    received_on: date
    due_on: date
    extension_reason: str | None
    status: Status
    status_note: str | None
    opened_by: str
    opened_at: datetime
    closed_at: datetime | None

    @property
    def reference(self) -> str:
        """The case reference an export and the audit log carry."""
        return f"DSAR-{self.id}"

    def days_left(self, today: date) -> int:
        return (self.due_on - today).days


_CASE = """
SELECT c.id, c.kind, c.requester, c.received_on, c.due_on, c.extension_reason, c.status,
       c.status_note, coalesce(u.display_name, u.name) AS opened_by, c.opened_at, c.closed_at
FROM dsar_cases c JOIN users u ON u.id = c.opened_by
"""


def _case(row: Any) -> Case:
    return Case(**dict(row))


async def open_case(db: Db, *, kind: Kind, requester: str, received_on: date, opened_by: int) -> Case:
    if kind not in KINDS:
        raise BadCase("kind: a data-subject request or a police request")
    case_id = await db.fetchval(
        "INSERT INTO dsar_cases (kind, requester, received_on, opened_by)"
        " VALUES ($1, $2, $3, $4) RETURNING id",
        kind,
        requester,
        received_on,
        opened_by,
    )
    return await get(db, int(case_id))


async def get(db: Db, case_id: int) -> Case:
    row = await db.fetchrow(_CASE + " WHERE c.id = $1", case_id)
    if row is None:
        raise CaseNotFound(f"no case {case_id}")
    return _case(row)


async def listing(db: Db, limit: int = 200) -> list[Case]:
    """Open cases first, the nearest deadline first; then the closed ones, newest first."""
    rows = await db.fetch(
        _CASE + " ORDER BY c.status <> 'open', CASE WHEN c.status = 'open' THEN c.due_on END,"
        " c.id DESC LIMIT $1",
        limit,
    )
    return [_case(r) for r in rows]


async def set_status(db: Db, case_id: int, status: Status, note: str | None) -> None:
    if status not in STATUSES:
        raise BadCase("status: open, answered or refused")
    if status == "refused" and note is None:
        raise BadCase("note: say why the request is refused")
    await db.execute(
        "UPDATE dsar_cases SET status = $2, status_note = $3,"
        " closed_at = CASE WHEN $2 = 'open' THEN NULL ELSE coalesce(closed_at, now()) END WHERE id = $1",
        case_id,
        status,
        note,
    )


async def extend(db: Db, case_id: int, reason: str) -> None:
    """Art. 12(3): two further months; the reason is what the requester is told."""
    await db.execute("UPDATE dsar_cases SET extension_reason = $2 WHERE id = $1", case_id, reason)


# --- searches ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Found:
    recording_id: uuid.UUID
    match: dsar.Match
    seconds_away: float


@dataclass(frozen=True, slots=True)
class Search:
    id: int
    searched_at: datetime
    searched_by: str
    number_masked: str
    at: datetime
    window_minutes: int
    exact_matching: bool
    candidates: list[Found]


async def add_search(
    db: Db,
    case_id: int,
    user_id: int,
    result: dsar.Result,
    at: datetime,
    window_minutes: int,
    number_hmac: str | None,
) -> int:
    candidates = [
        {"id": str(c.recording.id), "match": c.match, "seconds_away": c.seconds_away}
        for c in result.candidates
    ]
    return int(
        await db.fetchval(
            """
            INSERT INTO dsar_case_searches (case_id, searched_by, number_masked, number_hmac, at,
                                            window_minutes, exact_matching, candidates)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb) RETURNING id
            """,
            case_id,
            user_id,
            result.masked,
            number_hmac,
            at,
            window_minutes,
            result.exact_matching,
            orjson.dumps(candidates).decode(),
        )
    )


_SEARCH = """
SELECT s.id, s.searched_at, coalesce(u.display_name, u.name) AS searched_by, s.number_masked, s.at,
       s.window_minutes, s.exact_matching, s.candidates::text AS candidates
FROM dsar_case_searches s JOIN users u ON u.id = s.searched_by WHERE s.case_id = $1
"""


def _search(row: Any) -> Search:
    values = dict(row)
    values["candidates"] = [
        Found(uuid.UUID(c["id"]), c["match"], float(c["seconds_away"]))
        for c in orjson.loads(row["candidates"])
    ]
    return Search(**values)


async def searches(db: Db, case_id: int) -> list[Search]:
    """Newest first."""
    return [_search(r) for r in await db.fetch(_SEARCH + " ORDER BY s.id DESC", case_id)]


async def is_candidate(db: Db, case_id: int, recording_id: uuid.UUID) -> bool:
    """Whether any search of the case found this recording: only those play or export from it."""
    return bool(
        await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM dsar_case_searches WHERE case_id = $1"
            " AND candidates @> jsonb_build_array(jsonb_build_object('id', $2::text)))",
            case_id,
            str(recording_id),
        )
    )


# --- listening ------------------------------------------------------------------------------


async def note_listen(db: Db, case_id: int, recording_id: uuid.UUID, user_id: int) -> None:
    """A player asks for the audio in several range requests: one row, its first and last."""
    await db.execute(
        """
        INSERT INTO dsar_case_listens (case_id, recording_id, user_id) VALUES ($1, $2, $3)
        ON CONFLICT (case_id, recording_id, user_id)
        DO UPDATE SET last_at = now(), requests = dsar_case_listens.requests + 1
        """,
        case_id,
        recording_id,
        user_id,
    )


async def listened(db: Db, case_id: int) -> dict[uuid.UUID, tuple[datetime, datetime, str]]:
    """Recording id -> (first, last, by whom) of the plays from this case."""
    rows = await db.fetch(
        "SELECT l.recording_id, min(l.first_at) AS first_at, max(l.last_at) AS last_at,"
        " string_agg(DISTINCT coalesce(u.display_name, u.name), ', ') AS who"
        " FROM dsar_case_listens l JOIN users u ON u.id = l.user_id WHERE l.case_id = $1"
        " GROUP BY l.recording_id",
        case_id,
    )
    return {r["recording_id"]: (r["first_at"], r["last_at"], r["who"]) for r in rows}


# --- exports and their receipts -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Receipt:
    id: int
    case_id: int
    exported_by: str
    exported_at: datetime
    recipient: str
    legal_basis: str
    employee_identity: str
    recording_ids: list[uuid.UUID]
    bundle_sha256: str
    bundle_bytes: int

    @property
    def count(self) -> int:
        return len(self.recording_ids)


async def add_export(
    db: Db,
    case_id: int,
    user_id: int,
    *,
    exported_at: datetime,
    recipient: str,
    legal_basis: str,
    employee_identity: str,
    recording_ids: Sequence[uuid.UUID],
    bundle_sha256: str,
    bundle_bytes: int,
) -> int:
    return int(
        await db.fetchval(
            """
            INSERT INTO dsar_case_exports (case_id, exported_by, exported_at, recipient, legal_basis,
                employee_identity, recording_ids, bundle_sha256, bundle_bytes)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id
            """,
            case_id,
            user_id,
            exported_at,
            recipient,
            legal_basis,
            employee_identity,
            list(recording_ids),
            bundle_sha256,
            bundle_bytes,
        )
    )


_EXPORT = """
SELECT e.id, e.case_id, coalesce(u.display_name, u.name) AS exported_by, e.exported_at, e.recipient,
       e.legal_basis, e.employee_identity, e.recording_ids, e.bundle_sha256, e.bundle_bytes
FROM dsar_case_exports e JOIN users u ON u.id = e.exported_by WHERE e.case_id = $1
"""


async def receipts(db: Db, case_id: int) -> list[Receipt]:
    return [Receipt(**dict(r)) for r in await db.fetch(_EXPORT + " ORDER BY e.id DESC", case_id)]


async def receipt(db: Db, case_id: int, export_id: int) -> Receipt:
    row = await db.fetchrow(_EXPORT + " AND e.id = $2", case_id, export_id)
    if row is None:
        raise CaseNotFound(f"no export {export_id} in case {case_id}")
    return Receipt(**dict(row))


# --- the trail --------------------------------------------------------------------------------


async def trail(db: Db, case_id: int, limit: int = 500) -> list[dict[str, Any]]:
    """The audit log's rows about this case, oldest first (the evidence of each step)."""
    rows = await db.fetch(
        "SELECT at, user_name, action, outcome, status, recording_id FROM audit_log"
        " WHERE detail ? 'case_id' AND detail ->> 'case_id' = $1 ORDER BY id LIMIT $2",
        str(case_id),
        limit,
    )
    return [dict(r) for r in rows]
