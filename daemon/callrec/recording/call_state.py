"""What the call tracker knows (recording/tracker.py): the channels Asterisk reported, grouped
into calls by linkedid, and the agents on each call. Plain data and pure functions over it,
no I/O; the tracker decides when to record.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from callrec.config import Register


@dataclass(slots=True)
class Channel:
    id: str
    name: str
    state: str
    call: Call
    agent: str | None = None
    stint: Stint | None = None
    """The agent's time on the call, once this agent leg answered."""
    split: bool = False
    """A Local half whose twin is in another call (a bridge moved one of them)."""


@dataclass(slots=True)
class Stint:
    agent: str
    joined_at: float
    left_at: float | None = None


@dataclass(slots=True)
class Call:
    id: str
    channels: dict[str, Channel] = field(default_factory=dict)
    register: Register | None = None
    unknown_register_reported: bool = False
    anchor: Channel | None = None
    service_number: str | None = None
    customer_explicit: tuple[str | None, str | None] | None = None
    """(masked, hmac) of CALLREC_CUSTOMER_NUMBER, which wins over the caller ID."""
    customer_from_caller: tuple[str | None, str | None] = (None, None)
    """(masked, hmac) of the anchor's caller ID number."""
    caller_seen: int | None = None
    """``hash()`` of the caller ID number ``customer_from_caller`` was made from (in memory only)."""
    agent: str | None = None
    agents: list[Stint] = field(default_factory=list)
    recording: uuid.UUID | None = None
    recorded_channel: str | None = None
    stop_sent: bool = False


class CallState:
    """The channels and calls the tracker follows, and what the rest of the daemon may ask of
    them (metrics, the pause API, lean mode); ``CallTracker`` changes them."""

    def __init__(self) -> None:
        self._channels: dict[str, Channel] = {}
        self._calls: dict[str, Call] = {}

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    @property
    def call_count(self) -> int:
        return len(self._calls)

    @property
    def recording_count(self) -> int:
        return sum(1 for c in self._calls.values() if c.recording is not None)

    def live_recording_of_agent(self, agent: str) -> uuid.UUID | None:
        """The recording of the call this agent is on now (their leg answered and is up)."""
        for call in self._calls.values():
            if call.recorded_channel is not None and any(
                s.agent == agent and s.left_at is None for s in call.agents
            ):
                return call.recording
        return None

    def agents_of(self, recording_id: uuid.UUID) -> frozenset[str] | None:
        """Every agent listed so far on the live call with this recording; None if none is live."""
        for call in self._calls.values():
            if call.recording == recording_id and call.recorded_channel is not None:
                return frozenset(s.agent for s in call.agents)
        return None

    def tracks(self, channel_id: str) -> bool:
        return channel_id in self._channels

    def recorded_channels(self) -> list[str]:
        """Ids of the channels being recorded (lean mode subscribes to these again after a
        reconnect)."""
        return [c.recorded_channel for c in self._calls.values() if c.recorded_channel is not None]

    def recording_of(self, channel_id: str) -> uuid.UUID | None:
        """The recording of the call this channel belongs to, if it has one."""
        chan = self._channels.get(channel_id)
        return chan.call.recording if chan is not None else None


def local_twin(name: str) -> str | None:
    """``Local/x@ctx-00000001;1`` <-> ``;2``: the two halves are one leg of the call."""
    if name.startswith("Local/") and name[-2:] in (";1", ";2"):
        return name[:-1] + ("2" if name[-1] == "1" else "1")
    return None


def by_name(call: Call, name: str) -> Channel | None:
    for c in call.channels.values():
        if c.name == name:
            return c
    return None


def twin_of(chan: Channel, twin_name: str | None, channels: Mapping[str, Channel]) -> Channel | None:
    """The other half of a Local channel: in the same call, unless a bridge moved one half to
    another call (the tracker's ``_move``); then looked up among all ``channels``."""
    if twin_name is None:
        return None
    twin = by_name(chan.call, twin_name)
    if twin is None and chan.split:
        twin = next((c for c in channels.values() if c.name == twin_name), None)
    return twin


def note_agents(chan: Channel, now: float, channels: Mapping[str, Channel]) -> None:
    """An agent is on the call once their leg answered: a queue rings every member, and each
    member leg sets CALLREC_AGENT before it rings. A Local agent leg has answered only once
    both halves are Up (a member whose ;2 answered but lost the race keeps its ;1 Down). The
    first to answer is the row's agent_name; all are in its agents list."""
    twin_name = local_twin(chan.name)
    if not chan.agent and twin_name is None:
        return
    twin = twin_of(chan, twin_name, channels)
    for leg, other in ((chan, twin), (twin, chan)):
        if leg is None or not leg.agent or leg.state != "Up" or leg.stint is not None:
            continue
        if twin_name is None or (other is not None and other.state == "Up"):
            # The leg's own call: after a bridge's move the halves may be in two calls.
            call = leg.call
            leg.stint = Stint(leg.agent, now)
            call.agents.append(leg.stint)
            if call.agent is None:
                call.agent = leg.agent


def agent_left(chan: Channel, now: float, channels: Mapping[str, Channel]) -> None:
    """An agent leg (either half of a Local one) hangs up: the agent left the call."""
    twin = twin_of(chan, local_twin(chan.name), channels)
    for leg in (chan, twin):
        if leg is not None and leg.stint is not None and leg.stint.left_at is None:
            leg.stint.left_at = now


def anchor_agent(call: Call) -> str | None:
    return call.anchor.agent if call.anchor is not None else None


def answered_by_customer(call: Call, anchor: Channel) -> Channel | None:
    """Outbound: the customer's channel, the first of the call to be Up other than the agent's
    own leg (the anchor and its Local twin); None while the customer's phone rings."""
    twin = local_twin(anchor.name)
    for c in call.channels.values():
        if c.state == "Up" and c is not anchor and c.name != twin:
            return c
    return None
