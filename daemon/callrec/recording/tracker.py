"""The call tracker: ARI channel events in, recording commands out. Pure: no I/O, no awaits.

In the sans-I/O style of h11, ``CallTracker.handle`` is fed one event at a time and returns
what to do; the recorder carries it out. Everything hard about watching Asterisk lives here,
so it can be tested with plain function calls and replayed event transcripts:

* Channels are grouped into calls by linkedid, which ARI's channel JSON lacks; ari.conf's
  ``channelvars = CHANNEL(linkedid),...`` adds it to every snapshot (docs/asterisk.md).
* ``__CALLREC_REGISTER`` is inherited by every channel the call creates (Local halves, queue
  members, the dialled customer), and each inheriting channel reports it at creation. The
  first channel of the call seen carrying it is the *anchor*; only the anchor is recorded,
  so a call is recorded once however many channels inherit the variable.
* Inbound, recording starts when the anchor is Up (R2: "starts when the call is answered").
  Outbound, the anchor is the agent's channel, already Up while the customer's phone rings,
  so recording starts when another channel of the call (not the anchor's own Local twin)
  goes Up: the customer answered.
* The channel recorded is the customer's, because it is the one that stays on the call when
  agents transfer it (docs/asterisk.md#blind-transfer-moves-the-transferee): inbound the
  anchor (the trunk channel, where the dialplan marks the call), outbound the channel that
  answered. A transfer keeps the linkedid, so the new agent's channels join the same call.
* Every agent whose leg answered is listed in order, with when they joined and left.
* The customer's number is masked the moment it is read; the tracker never stores it whole.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping

from callrec.asterisk.ari_events import (
    CONTRACT_VARS,
    MAX_VALUE_LEN,
    VAR_AGENT,
    VAR_CUSTOMER_NUMBER,
    VAR_PAUSE,
    VAR_REGISTER,
    VAR_SERVICE_NUMBER,
    ChannelEvent,
    ChannelSnapshot,
)
from callrec.config import Register
from callrec.privacy import mask_number, number_hmac
from callrec.recording import layout
from callrec.recording.call_state import (
    Call,
    CallState,
    Channel,
    agent_left,
    anchor_agent,
    answered_by_customer,
    by_name,
    local_twin,
    note_agents,
)
from callrec.recording.commands import (
    Command,
    FinishRecording,
    PauseRecording,
    Problem,
    StopRecording,
)
from callrec.recording.facts import AgentStint, Parties, StartRecording

# The commands are re-exported: the recorder and the tests take them from here.
__all__ = [
    "CallTracker",
    "Command",
    "FinishRecording",
    "PauseRecording",
    "Problem",
    "StopRecording",
    "local_twin",  # the AGI server reads the agent from the other half (lean mode)
]


class CallTracker(CallState):
    """Follows every channel Asterisk reports and says when to start and stop recording."""

    def __init__(
        self,
        registers: Mapping[str, Register],
        *,
        hmac_key: bytes | None = None,
        new_id: Callable[[], uuid.UUID] = uuid.uuid4,
        file_path: Callable[[uuid.UUID, float, str], str] | None = None,
        node: str = "",
    ) -> None:
        self._registers = registers
        self._hmac_key = hmac_key
        self._new_id = new_id
        # The file names its register and node: a file left without a row still says whose it
        # is (recording/layout.py, recording/strays.py).
        self._file_path = file_path or (lambda rid, now, register: layout.file_path(rid, now, register, node))
        super().__init__()

    def handle(self, event: ChannelEvent, now: float) -> list[Command]:
        out: list[Command] = []
        snap = event.channel
        chan = self._channels.get(snap.id)
        if event.kind == "destroyed":
            if chan is not None:
                self._destroy(chan, now, out)
            return out
        if chan is None:
            chan = self._track(snap, out)
        elif snap.linkedid is not None and snap.linkedid != chan.call.id:
            self._move(chan, snap.linkedid, now)
        chan.state = snap.state
        chan.name = snap.name
        call = chan.call
        for var, val in snap.vars.items():
            self._set_var(chan, var, val, out, now)
        if event.kind == "varset" and event.variable in CONTRACT_VARS and event.value:
            self._set_var(chan, event.variable, event.value, out, now)
        elif event.kind == "varset" and event.variable == VAR_PAUSE and call.recorded_channel is not None:
            assert call.recording is not None
            out.append(PauseRecording(call.recording, (event.value or "0").strip() not in ("0", ""), now))
        if call.anchor is chan:
            # Masked at once; a later caller ID change (a transfer) updates it.
            self._caller_customer(call, snap.caller_number)
        note_agents(chan, now, self._channels)
        if event.kind == "hangup_request":
            agent_left(chan, now, self._channels)
        if event.kind == "hangup_request" and call.recorded_channel == chan.id and not call.stop_sent:
            call.stop_sent = True
            assert call.recording is not None
            out.append(StopRecording(call.recording, chan.name, now))
        if call.recording is None and call.register is not None and event.kind != "hangup_request":
            self._maybe_start(call, now, out)
        return out

    def reconcile(
        self, live: Iterable[ChannelEvent], now: float, *, restarted: bool = False
    ) -> list[Command]:
        """After a (re)connect: channels not in ``live`` ended while we were away;
        ``restarted`` says Asterisk itself restarted, which cut them."""
        out: list[Command] = []
        seen = set()
        for event in live:
            seen.add(event.channel.id)
            out.extend(self.handle(event, now))
        for chan in [c for cid, c in self._channels.items() if cid not in seen]:
            self._destroy(chan, now, out, missed=True, interrupted=restarted)
        return out

    def adopt(self, event: ChannelEvent, recording_id: uuid.UUID, register: str) -> None:
        """A recording a previous run of the daemon started on this live channel: track it
        as ours, so the call is not recorded a second time and gets its row at the end."""
        chan = self._channels.get(event.channel.id) or self._track(event.channel, [])
        call = chan.call
        call.register = self._registers.get(register, call.register)
        call.anchor = chan
        call.recording = recording_id
        call.recorded_channel = chan.id

    def claim(self, snap: ChannelSnapshot, now: float, *, answered: bool = False) -> list[Command]:
        """AGI mode: the channel's own dialplan asks for recording now, and waits for it.

        The register rule is the event mode's: the channel must carry ``CALLREC_REGISTER``
        naming a configured register. Then, unless the call already has a recording, the
        answer is a ``StartRecording`` of *this* channel (AGI runs MixMonitor on the channel
        that called it), and the call counts as recorded from here on, so the event mode
        never starts a second MixMonitor. An inbound call is claimed wherever the AGI is in
        the dialplan (its place marks the answer); an outbound one only once the customer
        answered, as in the event mode, so the ringing is never recorded. ``answered``: the
        request comes from the far end's channel at its answer (lean mode, Dial's ``U()``), which
        is the proof of the answer the tracker cannot see itself there."""
        out: list[Command] = []
        chan = self._channels.get(snap.id) or self._track(snap, out)
        chan.state = snap.state
        chan.name = snap.name
        for var, val in snap.vars.items():
            self._set_var(chan, var, val, out, now)
        call = chan.call
        note_agents(chan, now, self._channels)
        register = call.register
        if (
            call.recording is not None
            or register is None
            or self._registers.get(snap.vars.get(VAR_REGISTER, "")) is None
        ):
            return out
        outbound = register.direction == "outbound"
        if outbound and not answered and answered_by_customer(call, call.anchor or chan) is None:
            return out
        call.anchor = chan
        self._caller_customer(call, snap.caller_number)
        self._start(call, chan, register, now, out)
        return out

    def adopt_unjournaled(
        self, event: ChannelEvent, recording_id: uuid.UUID, file_path: str, now: float
    ) -> StartRecording | None:
        """A live channel whose MIXMONITOR_FILENAME is a file callrec named, with no journal
        entry: a previous run asked for MixMonitor and died before the entry was written. The
        call is then this recording (never a second MixMonitor); the facts are rebuilt from the
        channel as at the answer. ``None`` if the channel carries no configured register."""
        out: list[Command] = []
        chan = self._channels.get(event.channel.id) or self._track(event.channel, out)
        for var, val in event.channel.vars.items():
            self._set_var(chan, var, val, out, now)
        call = chan.call
        if call.register is None or call.recording is not None:
            return None
        call.anchor = chan
        self._caller_customer(call, event.channel.caller_number)
        self._start(call, chan, call.register, now, out, (recording_id, file_path))
        return next((c for c in out if isinstance(c, StartRecording)), None)

    def answered_by(self, linkedid: str, agent: str) -> bool:
        """Lean mode: the agent who answered a call being recorded (an AGI request from the
        answering leg, recording/lean.py), where the tracker sees no agent leg. False if the
        call is not one the tracker follows."""
        call = self._calls.get(linkedid)
        if call is None or not agent:
            return False
        call.agent = agent[:MAX_VALUE_LEN]
        return True

    def drop(self, channel_id: str) -> None:
        """Lean mode: stop following a channel that is not recorded. No events will come for
        it (callrec is not subscribed to it), so keeping it would only grow the tracker."""
        chan = self._channels.get(channel_id)
        if chan is not None and chan.call.recorded_channel != channel_id:
            self._destroy(chan, 0.0, [])

    def _track(self, snap: ChannelSnapshot, out: list[Command]) -> Channel:
        call_id = snap.linkedid
        if call_id is None:
            # Without linkedid the channels of a call cannot be grouped; recording each one
            # alone risks duplicates, but losing calls is worse. ari.conf must carry it.
            out.append(Problem("no_linkedid"))
            call_id = snap.id
        call = self._calls.get(call_id)
        if call is None:
            call = self._calls[call_id] = Call(call_id)
        chan = Channel(snap.id, snap.name, snap.state, call)
        self._channels[snap.id] = chan
        call.channels[snap.id] = chan
        return chan

    def _move(self, chan: Channel, linkedid: str, now: float) -> None:
        """A bridge gives every channel in it the oldest linkedid among them
        (docs/asterisk.md#a-bridge-merges-linkedids): an agent picking up a parked call joins
        the customer's call. The recorded channel stays where it is (its call is the customer's)."""
        old = chan.call
        if old.recorded_channel == chan.id:
            return
        twin_name = local_twin(chan.name)
        twin = by_name(old, twin_name) if twin_name else None
        if twin is not None:
            chan.split = twin.split = True
        del old.channels[chan.id]
        if old.anchor is chan:
            old.anchor = None
        if chan.stint is not None and chan.stint in old.agents:
            old.agents.remove(chan.stint)
            chan.stint = None  # joins the new call's list afresh, from now
        if not old.channels:
            del self._calls[old.id]
        call = self._calls.get(linkedid)
        if call is None:
            call = self._calls[linkedid] = Call(linkedid)
        chan.call = call
        call.channels[chan.id] = chan

    def _set_var(self, chan: Channel, var: str, val: str, out: list[Command], now: float) -> None:
        call = chan.call
        if var == VAR_REGISTER:
            if call.register is None:
                register = self._registers.get(val)
                if register is None:
                    if not call.unknown_register_reported:
                        call.unknown_register_reported = True
                        out.append(Problem("unknown_register", call.id))
                    return
                call.register = register
            if call.anchor is None and call.register.name == val:
                call.anchor = chan
        elif var == VAR_AGENT:
            agent = val[:MAX_VALUE_LEN]
            if chan.stint is not None and chan.stint.agent != agent:
                # The same leg now serves another agent (its dialplan went on): a new stint.
                chan.stint.left_at = chan.stint.left_at or now
                chan.stint = None
            chan.agent = agent
        elif var == VAR_SERVICE_NUMBER:
            if call.service_number is None:
                call.service_number = val[:MAX_VALUE_LEN]
        elif var == VAR_CUSTOMER_NUMBER:
            call.customer_explicit = self._customer(val)

    def _customer(self, raw: str | None) -> tuple[str | None, str | None]:
        # The one place a full number is read; only its masked form and HMAC are kept.
        return mask_number(raw), number_hmac(raw, self._hmac_key)

    def _caller_customer(self, call: Call, raw: str | None) -> None:
        """Every event of the anchor carries its caller ID: masked and HMAC'd only when it
        changes (a transfer), not 14 times a call (bench/event_path.py). What is kept to tell
        is Python's per-process salted hash of it, in memory, never written anywhere."""
        seen = hash(raw)
        if seen != call.caller_seen:
            call.caller_seen = seen
            call.customer_from_caller = self._customer(raw)

    def _maybe_start(self, call: Call, now: float, out: list[Command]) -> None:
        anchor, register = call.anchor, call.register
        if anchor is None or register is None:
            return
        if register.direction == "inbound":
            if anchor.state == "Up":
                self._start(call, anchor, register, now, out)
        elif (answered := answered_by_customer(call, anchor)) is not None:
            self._start(call, answered, register, now, out)

    def _start(
        self,
        call: Call,
        recorded: Channel,
        register: Register,
        now: float,
        out: list[Command],
        found: tuple[uuid.UUID, str] | None = None,
    ) -> None:
        """Record ``recorded``: the customer's channel, which stays on the call through
        transfers (the module's docstring). ``found``: the id and file of a recording a previous
        run started but never journaled (``adopt_unjournaled``)."""
        rid = found[0] if found is not None else self._new_id()
        customer = call.customer_explicit or call.customer_from_caller
        call.recording = rid
        call.recorded_channel = recorded.id
        out.append(
            StartRecording(
                recording_id=rid,
                call_id=call.id,
                register=register.name,
                direction=register.direction,
                channel_id=recorded.id,
                channel_name=recorded.name,
                file_path=found[1] if found is not None else self._file_path(rid, now, register.name),
                answered_at=now,
                service_number=call.service_number,
                customer_number_masked=customer[0],
                customer_number_hmac=customer[1],
                agent_name=call.agent or anchor_agent(call) or recorded.agent,
            )
        )

    def _destroy(
        self,
        chan: Channel,
        now: float,
        out: list[Command],
        *,
        missed: bool = False,
        interrupted: bool = False,
    ) -> None:
        call = chan.call
        agent_left(chan, now, self._channels)
        del self._channels[chan.id]
        del call.channels[chan.id]
        if call.recorded_channel == chan.id and call.recording is not None:
            customer = call.customer_explicit or call.customer_from_caller
            out.append(
                FinishRecording(
                    recording_id=call.recording,
                    ended_at=now,
                    parties=Parties(
                        service_number=call.service_number,
                        customer_number_masked=customer[0],
                        customer_number_hmac=customer[1],
                        agent_name=call.agent or anchor_agent(call),
                        agents=tuple(AgentStint(s.agent, s.joined_at, s.left_at) for s in call.agents),
                    ),
                    missed_end=missed,
                    interrupted=interrupted,
                )
            )
            call.recorded_channel = None
        if call.anchor is chan:
            call.anchor = None
        if not call.channels:
            del self._calls[call.id]
