"""Who may reach which recording: the one place where access to recordings is decided.

The policy is a matrix of role x action (``POLICY``). Each action's reach is ``own`` (the
recordings whose agent id is the person's own), ``team`` (own plus every direct and indirect
subordinate's) or ``all``. Every read of ``recordings`` for the API goes through a ``Grant``
and is filtered in SQL, so a recording outside one's reach is simply not found: 404, never
403, and nothing leaks about its existence (REQUIREMENTS.md R5, R10).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from callrec.access.people import Principal, Role, team_agent_ids


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


Reach = Literal["own", "team", "all"]
View = Literal["full", "operational"]
_LISTEN: tuple[Action, ...] = (Action.SEARCH, Action.VIEW, Action.PLAY, Action.DOWNLOAD)

POLICY: Mapping[Role, Mapping[Action, Reach]] = {
    "agent": dict.fromkeys(_LISTEN, "own"),
    "supervisor": dict.fromkeys(_LISTEN, "team"),
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


async def grant(db: Any, principal: Principal, action: Action) -> Grant:
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


@dataclass(frozen=True, slots=True)
class Recording:
    """A row of ``recordings`` as the API may use it (the HMAC never leaves this module)."""

    id: uuid.UUID
    register_name: str
    direction: str
    started_at: datetime
    ended_at: datetime
    duration_seconds: float
    service_number: str | None
    customer_number_masked: str | None
    customer_number_hmac: str | None
    agent_name: str | None
    agent_user: str | None
    file_path: str
    file_size: int
    sha256: str
    retain_until: datetime
    legal_hold: bool
    node: str
    recovered: bool
    interrupted: bool

    def to_json(self, role: Role) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "register": self.register_name,
            "direction": self.direction,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_seconds": self.duration_seconds,
            "service_number": self.service_number,
            "file_path": self.file_path,
            "file_size": self.file_size,
            "sha256": self.sha256,
            "retain_until": self.retain_until,
            "legal_hold": self.legal_hold,
            "node": self.node,
            "recovered": self.recovered,
            "interrupted": self.interrupted,
        }
        if VIEWS[role] == "full":
            out["customer_number_masked"] = self.customer_number_masked
            out["agent"] = self.agent_name
            out["agent_user"] = self.agent_user
        if allowed(role, Action.PLAY):
            out["audio_url"] = f"/api/recordings/{self.id}/audio"
        return out

    def audio_path(self, recordings_dir: Path) -> Path:
        """The file, refusing anything that would resolve outside recordings_dir."""
        root = recordings_dir.resolve()
        path = (root / self.file_path).resolve()
        if not path.is_relative_to(root):
            raise NotVisible(f"recording {self.id}: file path outside recordings_dir")
        return path


_SELECT = """
SELECT r.id, r.register_name, r.direction, r.started_at, r.ended_at,
       r.duration_seconds::float8 AS duration_seconds, r.service_number, r.customer_number_masked,
       r.customer_number_hmac, r.agent_name, u.name AS agent_user, r.file_path, r.file_size, r.sha256,
       r.retain_until, r.legal_hold, r.node, r.recovered, r.interrupted
FROM recordings r LEFT JOIN users u ON u.agent_id = r.agent_name
WHERE ($1::text[] IS NULL OR r.agent_name = ANY($1::text[]))
"""


def _scope(g: Grant) -> list[str] | None:
    return None if g.agent_ids is None else sorted(g.agent_ids)


@dataclass(frozen=True, slots=True)
class Filters:
    """A search: started in [since, until), in a register, by an agent (an agent id, or the
    name of the user it belongs to)."""

    since: datetime | None = None
    until: datetime | None = None
    register: str | None = None
    agent: str | None = None

    def detail(self) -> dict[str, str]:
        """For the audit row."""
        return {k: str(getattr(self, k)) for k in self.__slots__ if getattr(self, k) is not None}


async def search(db: Any, g: Grant, f: Filters, *, limit: int = 100, offset: int = 0) -> list[Recording]:
    """Newest first, within the grant's reach."""
    if f.agent is not None and g.view != "full":
        raise Forbidden(f"role {g.principal.role} sees no agent data and cannot search by agent")
    rows = await db.fetch(
        _SELECT
        + """
          AND ($2::timestamptz IS NULL OR r.started_at >= $2)
          AND ($3::timestamptz IS NULL OR r.started_at < $3)
          AND ($4::text IS NULL OR r.register_name = $4)
          AND ($5::text IS NULL OR r.agent_name = $5
               OR r.agent_name = (SELECT agent_id FROM users WHERE name = $5))
        ORDER BY r.started_at DESC, r.id LIMIT $6 OFFSET $7
        """,
        _scope(g),
        f.since,
        f.until,
        f.register,
        f.agent,
        limit,
        offset,
    )
    return [Recording(**dict(r)) for r in rows]


async def get(db: Any, g: Grant, recording_id: uuid.UUID) -> Recording:
    row = await db.fetchrow(_SELECT + " AND r.id = $2", _scope(g), recording_id)
    if row is None:
        raise NotVisible(f"no recording {recording_id}")
    return Recording(**dict(row))


async def get_many(db: Any, g: Grant, ids: Sequence[uuid.UUID]) -> list[Recording]:
    """All of them in the given order, or ``NotVisible`` naming the first one missing."""
    rows = await db.fetch(_SELECT + " AND r.id = ANY($2::uuid[])", _scope(g), list(ids))
    found = {r["id"]: Recording(**dict(r)) for r in rows}
    for rid in ids:
        if rid not in found:
            raise NotVisible(f"no recording {rid}")
    return [found[rid] for rid in ids]


async def by_masked_number(
    db: Any, g: Grant, masked: str, since: datetime, until: datetime
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
    return [Recording(**dict(r)) for r in rows]
