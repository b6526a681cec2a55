"""ARI events as the call tracker sees them: the dialplan contract, the raw-byte pre-filter and
the parsing of channel events into plain snapshots (docs/asterisk.md#channel-variables-in-events).

Asterisk's channel JSON lacks the linkedid that groups a call's channels; ari.conf's
``channelvars = CHANNEL(linkedid),...`` adds it and the contract variables to every snapshot
(docs/asterisk.md#no-linkedid-in-ari-channel-json).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

LINKEDID = "CHANNEL(linkedid)"
VAR_REGISTER = "CALLREC_REGISTER"
VAR_SERVICE_NUMBER = "CALLREC_SERVICE_NUMBER"
VAR_AGENT = "CALLREC_AGENT"
VAR_CUSTOMER_NUMBER = "CALLREC_CUSTOMER_NUMBER"
VAR_MIXMONITOR_FILENAME = "MIXMONITOR_FILENAME"
"""Set by MixMonitor itself on the channel it records: lets a restart adopt a recording whose
journal entry was never written (docs/architecture.md#adoption-after-a-crash)."""
CONTRACT_VARS = frozenset({VAR_REGISTER, VAR_SERVICE_NUMBER, VAR_AGENT, VAR_CUSTOMER_NUMBER})
# Set(CALLREC_PAUSE=1) / Set(CALLREC_PAUSE=0) on any channel of a call pauses and resumes its
# recording (docs/dialplan.md#pause-for-card-numbers). Only its event is read, never a snapshot:
# it needs no channelvars line.
VAR_PAUSE = "CALLREC_PAUSE"
EVENT_VARS = CONTRACT_VARS | {VAR_PAUSE}
# Stored values are capped: they come from the dialplan, which may copy caller input into them.
MAX_VALUE_LEN = 128

EventKind = Literal["snapshot", "varset", "hangup_request", "destroyed"]
_KINDS: Mapping[str, EventKind] = {
    "ChannelCreated": "snapshot",
    "ChannelStateChange": "snapshot",
    "ChannelVarset": "varset",
    "ChannelHangupRequest": "hangup_request",
    "ChannelDestroyed": "destroyed",
    "ChannelEnteredBridge": "snapshot",
    "ChannelCallerId": "snapshot",
}
# The event types the tracker reads; the ARI client asks Asterisk for no others (eventFilter).
EVENT_TYPES = tuple(_KINDS)

# ChannelVarset is most of what is left: of about 41 per inbound call, 36 are the variables of
# Dial, Playback and the bridge (DIALSTATUS, BRIDGEPEER, ...), which the tracker ignores and
# which carry nothing new (a snapshot only changes with the events of the other types). The
# eventFilter goes by type only, so these are dropped before decoding. Asterisk 22's compact
# JSON (ari.conf pretty = no) starts a ChannelVarset with the variable's name:
# {"variable":"NAME","value":...,"type":"ChannelVarset",...}; any other shape is decoded.
_VARSET_START = b'{"variable":"'
_VARSET_TYPE = b'"type":"ChannelVarset"'
_CONTRACT_PREFIX = b"CALLREC_"


def irrelevant_raw(raw: bytes) -> bool:
    """True for a raw ARI event the tracker certainly ignores: a ChannelVarset of a
    variable outside the dialplan contract. Cheap enough to run on every event."""
    if not raw.startswith(_VARSET_START):
        return False
    name = raw[len(_VARSET_START) : len(_VARSET_START) + 40].lstrip(b"_")
    return not name.startswith(_CONTRACT_PREFIX) and _VARSET_TYPE in raw


class MalformedEvent(ValueError):
    """An ARI event that does not have the shape Asterisk documents. Text has no payload."""


@dataclass(frozen=True, slots=True)
class ChannelSnapshot:
    """The parts of an ARI channel object the tracker uses."""

    id: str
    name: str
    state: str
    linkedid: str | None
    caller_number: str | None
    """Raw caller ID number. Masked on first use and never stored."""
    vars: Mapping[str, str]
    """Contract variables present in ``channelvars`` (non-empty values only)."""
    mixmonitor_file: str | None = None
    """MIXMONITOR_FILENAME, when ``channelvars`` carries it and MixMonitor runs (ran)."""


@dataclass(frozen=True, slots=True)
class ChannelEvent:
    kind: EventKind
    channel: ChannelSnapshot
    variable: str | None = None
    value: str | None = None


def _channel(obj: Any) -> ChannelSnapshot:
    if not isinstance(obj, dict):
        raise MalformedEvent("channel is not an object")
    cid, name, state = obj.get("id"), obj.get("name"), obj.get("state")
    if not (isinstance(cid, str) and cid and isinstance(name, str) and isinstance(state, str)):
        raise MalformedEvent("channel lacks id, name or state")
    caller = obj.get("caller")
    number = caller.get("number") if isinstance(caller, dict) else None
    cvars = obj.get("channelvars")
    linkedid: str | None = None
    contract: dict[str, str] = {}
    if isinstance(cvars, dict):
        lid = cvars.get(LINKEDID)
        linkedid = lid if isinstance(lid, str) and lid else None
        for var in CONTRACT_VARS:
            val = cvars.get(var)
            if isinstance(val, str) and val:
                contract[var] = val
    mixed = cvars.get(VAR_MIXMONITOR_FILENAME) if isinstance(cvars, dict) else None
    return ChannelSnapshot(
        cid,
        name,
        state,
        linkedid,
        number if isinstance(number, str) else None,
        contract,
        mixed if isinstance(mixed, str) and mixed else None,
    )


def parse_event(obj: Mapping[str, Any]) -> ChannelEvent | None:
    """An ARI event as the tracker sees it; ``None`` for events it does not use."""
    kind = _KINDS.get(obj.get("type"))  # type: ignore[arg-type]
    if kind is None:
        return None
    if kind == "varset":
        var, val = obj.get("variable"), obj.get("value")
        if isinstance(var, str) and var.lstrip("_") not in EVENT_VARS:
            # Half of a call's events set other variables (DIALSTATUS, BRIDGEPEER, ...). Their
            # snapshots hold nothing new: state, caller ID and the contract variables each come
            # with events of their own. Skipping them early halves the tracker's work.
            return None
        channel = _channel(obj.get("channel"))
        if not isinstance(var, str) or not isinstance(val, str):
            raise MalformedEvent("ChannelVarset lacks variable or value")
        return ChannelEvent(kind, channel, var.lstrip("_"), val)
    return ChannelEvent(kind, _channel(obj.get("channel")))


def published_at(obj: Mapping[str, Any]) -> float | None:
    """When Asterisk published the event, from its ``timestamp`` (``2026-12-02T07:30:27.123+0000``,
    milliseconds); None if it has none in that form."""
    stamp = obj.get("timestamp")
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except ValueError:
        return None


def parse_channel(obj: Any) -> ChannelEvent:
    """A channel from ``GET /channels`` as a snapshot event (reconciliation)."""
    return ChannelEvent("snapshot", _channel(obj))


def parse_channels(objs: list[dict[str, Any]]) -> tuple[list[ChannelEvent], int]:
    """GET /channels as the tracker reconciles with it: the channels in creation order, and
    how many were malformed (skipped)."""
    live: list[ChannelEvent] = []
    malformed = 0
    for obj in sorted(objs, key=lambda c: str(c.get("creationtime", ""))):
        try:
            live.append(parse_channel(obj))
        except MalformedEvent:
            malformed += 1
    return live, malformed


def playing(channels: list[ChannelEvent]) -> set[str]:
    """The files MixMonitor is writing on the channels that are up (MIXMONITOR_FILENAME)."""
    return {ev.channel.mixmonitor_file for ev in channels if ev.channel.mixmonitor_file}
