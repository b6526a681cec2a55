"""Who may reach which recording: the one place where access to recordings is decided.

The policy is a matrix of role x action (``POLICY``). Each action's reach is ``own`` (the
recordings whose agent id is the person's own), ``team`` (own plus every direct and indirect
subordinate's) or ``all``. Every read of ``recordings`` for the API goes through a ``Grant``
and is filtered in SQL, so a recording outside one's reach is simply not found: 404, never
403, and nothing leaks about its existence (docs/privacy.md#who-may-listen, R5 and R10).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from callrec.access.people import Principal, Role, team_agent_ids
from callrec.db import recordings
from callrec.db.pool import Db
from callrec.privacy import redact
from callrec.recording.facts import Recording, View


class Action(StrEnum):
    """What a person does to recordings; also the action names in the audit log."""

    SEARCH = "search"
    VIEW = "view"
    PLAY = "play"
    DOWNLOAD = "download"
    EXPORT = "export"
    HOLD = "hold"
    RELEASE = "release"
    ERASE = "erase"
    DSAR_SEARCH = "dsar_search"
    AUDIT_READ = "audit_read"
    PAUSE = "pause"
    RESUME = "resume"


Reach = Literal["own", "team", "all"]
_LISTEN: tuple[Action, ...] = (Action.SEARCH, Action.VIEW, Action.PLAY, Action.DOWNLOAD)
# Pausing a live call's recording for card numbers (docs/dialplan.md#pause-for-card-numbers):
# the agent their own call, a supervisor their team's, the DPO any.
_LIVE: tuple[Action, ...] = (Action.PAUSE, Action.RESUME)

POLICY: Mapping[Role, Mapping[Action, Reach]] = {
    "agent": dict.fromkeys(_LISTEN + _LIVE, "own"),
    "supervisor": dict.fromkeys(_LISTEN + _LIVE, "team"),
    # The data protection officer answers data-subject and police requests and runs retention.
    "dpo": dict.fromkeys(Action, "all"),
    # Runs the system: sees that recordings exist and their technical state, never audio.
    "admin": {Action.SEARCH: "all", Action.VIEW: "all"},
}
# What of a recording each role sees. Operational metadata leaves out the personal data of
# the customer and of the agent (R10: only what the work needs).
VIEWS: Mapping[Role, View] = {"agent": "full", "supervisor": "full", "dpo": "full", "admin": "operational"}


class Forbidden(Exception):
    """The role may not do this at all (403): it says nothing about any one recording."""


class NotVisible(Exception):
    """No such recording within the person's reach (404)."""


def allowed(role: Role, action: Action) -> bool:
    return action in POLICY[role]


@dataclass(frozen=True, slots=True)
class Grant:
    """Permission to do one action, with the recordings it reaches."""

    principal: Principal
    action: Action
    agent_ids: frozenset[str] | None
    """The agent ids whose recordings are in reach; ``None`` means every recording."""

    @property
    def view(self) -> View:
        return VIEWS[self.principal.role]


async def grant(db: Db, principal: Principal, action: Action) -> Grant:
    """Decide, or raise ``Forbidden``. Team membership is read now, so a move takes effect at once."""
    reach = POLICY[principal.role].get(action)
    if reach is None:
        raise Forbidden(f"role {principal.role} may not {action.value.replace('_', ' ')}")
    agent_ids: frozenset[str] | None
    if reach == "all":
        agent_ids = None
    elif reach == "own":
        agent_ids = frozenset({principal.agent_id} if principal.agent_id else ())
    else:
        agent_ids = await team_agent_ids(db, principal.user_id)
    return Grant(principal, action, agent_ids)


def as_json(rec: Recording, role: Role) -> dict[str, Any]:
    """What this role gets of a recording: its view of the metadata, and audio only if it may play."""
    return rec.to_json(VIEWS[role], audio=allowed(role, Action.PLAY))


def _on_call(ids: str) -> str:
    """SQL: one of the agents ``ids`` (a text[] expression) was on the call. A transfer or a
    queue adds agents to the row's agents list, whose first is agent_name; each listed agent
    hears the recording (docs/privacy.md#who-may-listen)."""
    return (
        f"(r.agent_name = ANY({ids}) OR r.agents @> ANY(ARRAY("
        f"SELECT jsonb_build_array(jsonb_build_object('agent', a)) FROM unnest({ids}) a)))"
    )


# Every read for the API goes through this WHERE: the grant's reach, in SQL.
_REACH = f" WHERE ($1::text[] IS NULL OR {_on_call('$1::text[]')})"
_SELECT = recordings.SELECT + _REACH
# The search's agent: an agent id, or the login or display name of the user it belongs to.
_BY_AGENT = _on_call(
    "ARRAY[$5::text] || ARRAY(SELECT agent_id FROM users WHERE agent_id IS NOT NULL"
    " AND (name = $5 OR lower(display_name) = lower($5)))"
)


def _scope(g: Grant) -> list[str] | None:
    return None if g.agent_ids is None else sorted(g.agent_ids)


SORTS: Mapping[str, str] = {
    "started": "r.started_at",
    "duration": "r.duration_seconds",
    "register": "r.register_name",
    "direction": "r.direction",
    "service": "r.service_number",
    "agent": "coalesce(u.display_name, u.name, r.agent_name)",
}
"""What a search may be ordered by (``sort``; ``-name`` for descending); ties by start, id."""
SORT_KEYS = tuple(key for name in SORTS for key in (name, "-" + name))


@dataclass(frozen=True, slots=True)
class Filters:
    """A search: started in [since, until), in a register, by an agent (an agent id, or the
    login or display name of the user it belongs to), to or from a service number, in one
    direction, lasting between min_seconds and max_seconds, with a masked number containing
    ``number`` (a fragment: digits, + and *), on legal hold or not."""

    since: datetime | None = None
    until: datetime | None = None
    register: str | None = None
    agent: str | None = None
    service_number: str | None = None
    direction: str | None = None
    min_seconds: float | None = None
    max_seconds: float | None = None
    number: str | None = None
    on_hold: bool | None = None

    def detail(self) -> dict[str, str]:
        """For the audit row: a phone number typed into any field is masked."""
        found = {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}
        return {k: redact(v) if isinstance(v, str) else str(v) for k, v in found.items()}


@dataclass(frozen=True, slots=True)
class Page:
    recordings: list[Recording]
    total: int
    """How many match in all, across every page."""


_WHERE = f"""
  AND ($2::timestamptz IS NULL OR r.started_at >= $2)
  AND ($3::timestamptz IS NULL OR r.started_at < $3)
  AND ($4::text IS NULL OR r.register_name = $4)
  AND ($5::text IS NULL OR {_BY_AGENT})
  AND ($6::text IS NULL OR r.service_number = $6)
  AND ($7::text IS NULL OR r.direction = $7)
  AND ($8::float8 IS NULL OR r.duration_seconds >= $8)
  AND ($9::float8 IS NULL OR r.duration_seconds <= $9)
  AND ($10::text IS NULL OR strpos(r.customer_number_masked, $10) > 0)
  AND ($11::boolean IS NULL OR r.legal_hold = $11)
"""


async def search(
    db: Db, g: Grant, f: Filters, *, limit: int = 100, offset: int = 0, sort: str = "-started"
) -> Page:
    """One page of the matches within the grant's reach, newest first unless ``sort`` says."""
    if g.view != "full" and (f.agent is not None or f.number is not None):
        raise Forbidden(f"role {g.principal.role} sees no agent or customer data and cannot search by them")
    column = SORTS[sort.removeprefix("-")]
    order = "DESC" if sort.startswith("-") else "ASC"
    args = (
        _scope(g),
        f.since,
        f.until,
        f.register,
        f.agent,
        f.service_number,
        f.direction,
        f.min_seconds,
        f.max_seconds,
        f.number,
        f.on_hold,
    )
    rows = await db.fetch(
        _SELECT + _WHERE + f" ORDER BY {column} {order} NULLS LAST, r.started_at DESC, r.id"
        " LIMIT $12 OFFSET $13",
        *args,
        limit,
        offset,
    )
    if offset == 0 and len(rows) < limit:
        total = len(rows)
    else:
        total = int(await db.fetchval(f"SELECT count(*) {recordings.FROM}{_REACH}{_WHERE}", *args))
    return Page([recordings.from_record(r) for r in rows], total)


async def get(db: Db, g: Grant, recording_id: uuid.UUID) -> Recording:
    row = await db.fetchrow(_SELECT + " AND r.id = $2", _scope(g), recording_id)
    if row is None:
        raise NotVisible(f"no recording {recording_id}")
    return recordings.from_record(row)


async def get_many(db: Db, g: Grant, ids: Sequence[uuid.UUID]) -> list[Recording]:
    """All of them in the given order, or ``NotVisible`` naming the first one missing."""
    rows = await db.fetch(_SELECT + " AND r.id = ANY($2::uuid[])", _scope(g), list(ids))
    found = {r["id"]: recordings.from_record(r) for r in rows}
    for rid in ids:
        if rid not in found:
            raise NotVisible(f"no recording {rid}")
    return [found[rid] for rid in ids]


async def by_masked_number(
    db: Db, g: Grant, masked: str, since: datetime, until: datetime
) -> list[Recording]:
    """Calls with this masked number whose time overlaps [since, until]."""
    rows = await db.fetch(
        _SELECT
        + """
          AND r.customer_number_masked = $2 AND r.started_at <= $4 AND r.ended_at >= $3
        ORDER BY r.started_at
        """,
        _scope(g),
        masked,
        since,
        until,
    )
    return [recordings.from_record(r) for r in rows]
