"""One definition of a recording: the facts known at the answer, and the register's row.

``StartRecording`` is what the tracker knows when the call is answered; it is the command to
start MixMonitor and, unchanged, the journal's entry for a recording in progress (a crash
then leaves enough to write the row from the file). ``Recording`` is the register's row. Its
fields carry their column, JSON key, who may see them and their OpenAPI schema, so the SQL
column list (``db/recordings.py``), the API's JSON (``to_json``) and the OpenAPI schema
(``http/openapi.py``) are all derived from here; tests/integration/test_store.py proves they
agree with the real table and the served API.

What the register may hold is fixed by docs/privacy.md (R3): the masked number and its keyed
HMAC, never the full number.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

View = Literal["full", "operational"]
"""Operational metadata leaves out the customer's and the agent's personal data (R10)."""


@dataclass(frozen=True, slots=True)
class StartRecording:
    """Attach MixMonitor to ``channel_name``, writing ``file_path`` under recordings_dir.
    The call's facts as known at the answer; the journal keeps them until the row is written."""

    recording_id: uuid.UUID
    call_id: str | None
    """Asterisk's linkedid; ``None`` for a file found without journal entry (recording/strays.py)."""
    register: str
    direction: str
    channel_id: str
    channel_name: str
    file_path: str
    answered_at: float
    service_number: str | None = None
    customer_number_masked: str | None = None
    customer_number_hmac: str | None = None
    agent_name: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StartRecording:
        d = {k: v for k, v in d.items() if k in _START_FIELDS}  # an older journal's extra keys
        d["recording_id"] = uuid.UUID(d["recording_id"])
        return cls(**d)


_START_FIELDS = frozenset(f.name for f in dataclasses.fields(StartRecording))


@dataclass(frozen=True, slots=True)
class Column:
    """How one field of ``Recording`` appears in the table, the JSON and the API schema."""

    schema: Mapping[str, Any]
    """The OpenAPI (JSON Schema) type of the JSON value."""
    json: str | None
    """The key in the API's JSON; ``None``: never leaves the server (the HMAC, the call id)."""
    view: View = "operational"
    """``full``: only roles that see personal data (not admin) get it."""
    select: str | None = None
    """The SQL expression read (default ``r.<field>``)."""
    written: bool = True
    """Inserted by callrec; otherwise set by the database (defaults, joins, computations)."""
    jsonb: bool = False
    """Stored as jsonb: written as JSON text, read back decoded (db/recordings.py)."""


def _col(schema: Mapping[str, Any], json: str | None = "", **kw: Any) -> dict[str, Any]:
    """A field's ``Column`` facts, as dataclass field metadata; json="" means the field's name."""
    return {"column": (schema, json, kw)}


_TEXT = {"type": "string"}
_TEXT_OR_NULL = {"type": ["string", "null"]}
_TIME = {"type": "string", "format": "date-time"}
_PAUSED = {
    "type": "array",
    "description": "spans muted for card numbers: [start, end] seconds from the start; silence in the audio",
    "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
}
_AGENTS = {
    "type": "array",
    "description": "every agent whose leg answered, in order (transfers, queues), within the recording",
    "items": {
        "type": "object",
        "properties": {"agent": _TEXT, "joined_at": _TIME, "left_at": _TIME},
        "required": ["agent", "joined_at", "left_at"],
    },
}


@dataclass(frozen=True, slots=True)
class Recording:
    """One row of ``recordings``: one recorded customer call (R3)."""

    id: uuid.UUID = field(metadata=_col({"type": "string", "format": "uuid"}))
    call_id: str | None = field(metadata=_col(_TEXT_OR_NULL, None))
    """Asterisk's linkedid of the call; NULL when only the file was left (sql/013)."""
    register_name: str = field(metadata=_col(_TEXT, "register"))
    direction: str = field(metadata=_col({"type": "string", "enum": ["inbound", "outbound"]}))
    started_at: datetime = field(metadata=_col(_TIME))
    ended_at: datetime = field(metadata=_col(_TIME))
    duration_seconds: float = field(metadata=_col({"type": "number"}, select="r.duration_seconds::float8"))
    service_number: str | None = field(metadata=_col(_TEXT_OR_NULL))
    customer_number_masked: str | None = field(
        metadata=_col({"type": ["string", "null"], "example": "+358401234***"}, view="full")
    )
    customer_number_hmac: str | None = field(metadata=_col(_TEXT_OR_NULL, None))
    """Keyed HMAC of the full number; only the DSAR search compares it, it is never shown."""
    agent_name: str | None = field(
        metadata=_col(
            {"type": ["string", "null"], "description": "the CALLREC_AGENT value"}, "agent", view="full"
        )
    )
    file_path: str = field(metadata=_col(_TEXT))
    file_size: int = field(metadata=_col({"type": "integer"}))
    sha256: str = field(metadata=_col(_TEXT))
    node: str = field(metadata=_col(_TEXT))
    recovered: bool = field(metadata=_col({"type": "boolean"}))
    """Written from the file after the daemon missed the call's end."""
    interrupted: bool = field(metadata=_col({"type": "boolean"}))
    """The call was cut by an Asterisk restart; the file is as Asterisk left it."""
    agents: tuple[dict[str, str], ...] = field(default=(), metadata=_col(_AGENTS, view="full", jsonb=True))
    """{agent, joined_at, left_at} (ISO 8601) of every agent on the call; agent_name is the first."""
    paused: tuple[tuple[float, float], ...] = field(default=(), metadata=_col(_PAUSED, jsonb=True))
    """[start, end] offsets in seconds of the spans muted for card numbers (silence in the file)."""
    retain_until: datetime | None = field(default=None, metadata=_col(_TIME, written=False))
    """Set by the database on insert: ended_at + the register's retention."""
    legal_hold: bool = field(default=False, metadata=_col({"type": "boolean"}, written=False))
    audio_format: str = field(
        default="wav",
        metadata=_col({"type": "string", "enum": ["wav", "opus", "flac"]}, "format", written=False),
    )
    """The audio as served: MixMonitor's WAV until archived, then ``[archive] format``."""
    archived_at: datetime | None = field(
        default=None, metadata=_col({"type": ["string", "null"], "format": "date-time"}, written=False)
    )
    """Set by the archive step (archive/pipeline.py); ``None``: the WAV in recordings_dir."""
    encrypted: bool = field(default=False, metadata=_col({"type": "boolean"}, written=False))
    """Sealed with a data key of its own (docs/archive.md)."""
    agent_user: str | None = field(
        default=None,
        metadata=_col(
            {"type": ["string", "null"], "description": "the user linked by agent id"},
            view="full",
            select="u.name",
            written=False,
        ),
    )
    agent_display_name: str | None = field(
        default=None,
        metadata=_col(
            {"type": ["string", "null"], "description": "that user's display name"},
            view="full",
            select="u.display_name",
            written=False,
        ),
    )

    @classmethod
    def finished(
        cls,
        start: StartRecording,
        *,
        started_at: float,
        ended_at: float,
        file_size: int,
        sha256: str,
        node: str,
        recovered: bool,
        interrupted: bool,
        parties: Parties,
        paused: tuple[tuple[float, float], ...] = (),
    ) -> Recording:
        """The row of a recording whose file is closed. ``parties`` are the latest facts of
        the call (a transfer may have changed the agent or the caller ID since the answer)."""
        ended_at = max(ended_at, started_at)
        return cls(
            id=start.recording_id,
            call_id=start.call_id,
            register_name=start.register,
            direction=start.direction,
            started_at=datetime.fromtimestamp(started_at, UTC),
            ended_at=datetime.fromtimestamp(ended_at, UTC),
            duration_seconds=round(ended_at - started_at, 3),
            service_number=parties.service_number,
            customer_number_masked=parties.customer_number_masked,
            customer_number_hmac=parties.customer_number_hmac,
            agent_name=parties.agent_name,
            file_path=start.file_path,
            file_size=file_size,
            sha256=sha256,
            node=node,
            recovered=recovered,
            interrupted=interrupted,
            agents=tuple(s.clamped(started_at, ended_at) for s in parties.agents),
            paused=paused,
        )

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Recording:
        """The inverse of ``orjson.dumps(recording)`` (the journal's outbox)."""
        d = dict(d)
        d["id"] = uuid.UUID(d["id"])
        for name in ("started_at", "ended_at", "retain_until", "archived_at"):
            if d.get(name) is not None:
                d[name] = datetime.fromisoformat(d[name])
        d["agents"] = tuple(d.get("agents", ()))
        d["paused"] = tuple((s[0], s[1]) for s in d.get("paused", ()))
        return cls(**d)

    def to_json(self, view: View, *, audio: bool) -> dict[str, Any]:
        """The API's JSON for a role with this view; ``audio``: the role may play it."""
        out = {c.json: getattr(self, name) for name, c in COLUMNS.items() if c.json and visible(c, view)}
        if audio:
            out["audio_url"] = f"/api/recordings/{self.id}/audio"
        return out


@dataclass(frozen=True, slots=True)
class Parties:
    """Who is on the call, as the register names them (masked, capped, from the dialplan)."""

    service_number: str | None
    customer_number_masked: str | None
    customer_number_hmac: str | None
    agent_name: str | None
    agents: tuple[AgentStint, ...] = ()
    """Every agent whose leg answered, in order (a transfer or a queue adds one)."""


@dataclass(frozen=True, slots=True)
class AgentStint:
    """One agent's time on a call (epoch seconds); ``left_at`` None: still there at the end."""

    agent: str
    joined_at: float
    left_at: float | None = None

    def clamped(self, started_at: float, ended_at: float) -> dict[str, str]:
        """The row's form: ISO 8601 times within the recording (an agent who answered before
        MixMonitor ran joined the recording at its start)."""
        joined = min(max(self.joined_at, started_at), ended_at)
        left = ended_at if self.left_at is None else min(max(self.left_at, joined), ended_at)
        return {
            "agent": self.agent,
            "joined_at": datetime.fromtimestamp(joined, UTC).isoformat(),
            "left_at": datetime.fromtimestamp(left, UTC).isoformat(),
        }


def _columns() -> Iterator[tuple[str, Column]]:
    for f in dataclasses.fields(Recording):
        schema, json, kw = f.metadata["column"]
        yield f.name, Column(schema, f.name if json == "" else json, **kw)


COLUMNS: Mapping[str, Column] = dict(_columns())
"""Every field of ``Recording`` with its column facts, in table order."""


def visible(column: Column, view: View) -> bool:
    return column.json is not None and (column.view == "operational" or view == "full")


def select_list() -> str:
    """The SELECT list that reads a ``Recording`` (``recordings r LEFT JOIN users u``)."""
    return ", ".join(f"{c.select} AS {name}" if c.select else f"r.{name}" for name, c in COLUMNS.items())


def json_schema() -> dict[str, Any]:
    """The OpenAPI schema of ``Recording.to_json`` (the fullest view, with audio_url)."""
    props = {c.json: dict(c.schema) for c in COLUMNS.values() if c.json is not None}
    props["audio_url"] = {"type": "string"}
    hidden = [c.json for c in COLUMNS.values() if c.json is not None and c.view == "full"]
    return {
        "type": "object",
        "description": f"admin sees no {', '.join(hidden)} or audio_url.",
        "properties": props,
    }
