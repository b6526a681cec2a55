"""Lean mode: the dialplan tells callrec what it needs, and callrec watches only what it records.

The event mode watches every channel of the PBX (``subscribeAll``) to find the calls to record;
that stream is most of what callrec costs Asterisk (docs/performance.md#what-callrec-costs-the-pbx).
In lean mode (``[daemon] mode = "lean"``) nothing is watched until the dialplan asks:

* ``AGI(agi://.../record)`` at the answer of an inbound call, as in AGI mode: MixMonitor runs on
  the channel before the call goes on (recording/agi.py);
* ``AGI(agi://.../answered[,agent])`` from the channel that answered, in Dial's ``U()`` or
  Queue's gosub: on an outbound call that is the customer, and the recording starts there and
  then (never while it rings); on an inbound call it says which agent answered;
* the recorded channel's hangup and end come as ARI events, to which callrec subscribes for
  that one channel (asterisk/ari_subscriptions.py), through the tracker as in the event mode.

The guarantees stay those of the event mode (docs/dialplan.md#lean-mode): the journal entry
comes before MixMonitor; after a kill -9 the next start adopts the journal's recordings from
``GET /channels`` and subscribes to them again; a reconnect (an Asterisk restart included)
reconciles only the channels callrec follows, so the tracker never grows with channels no event
will ever end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Protocol

import structlog

from callrec.asterisk.ari_events import VAR_AGENT, VAR_REGISTER, ChannelEvent, ChannelSnapshot
from callrec.asterisk.ari_rest import AriUnavailable
from callrec.config import Register
from callrec.ops import metrics
from callrec.recording.facts import StartRecording
from callrec.recording.mixmonitor import Attach
from callrec.recording.recorder import Recorder
from callrec.recording.tracker import CallTracker

log = structlog.get_logger("callrec.lean")


class Subscriber(Protocol):
    async def subscribe_channel(self, channel_id: str) -> bool: ...


async def claim_and_record(
    tracker: CallTracker, recorder: Recorder, snap: ChannelSnapshot, attach: Attach, *, answered: bool = False
) -> bool | None:
    """Claim the channel for recording. True once its MixMonitor runs, False if that failed,
    ``None`` if the call was not this channel's to start (then after waiting for the call's own
    recording, if it has one, as AGI mode promises)."""
    commands = tracker.claim(snap, time.time(), answered=answered)
    start = next((c for c in commands if isinstance(c, StartRecording)), None)
    recorder.execute([c for c in commands if not isinstance(c, StartRecording)])
    if start is not None:
        return await recorder.record_in_call(start, attach)
    # No register, or the call has a recording already (the event mode may have been first).
    rid = tracker.recording_of(snap.id)
    if rid is not None:
        await recorder.wait_attached(rid)
    return None


class Lean:
    def __init__(
        self,
        ari: Subscriber,
        tracker: CallTracker,
        recorder: Recorder,
        registers: dict[str, Register] | None = None,
    ) -> None:
        self._ari = ari
        self._tracker = tracker
        self._recorder = recorder
        self._registers = registers or {}
        self._retries: set[asyncio.Task[None]] = set()
        self.retry_interval = 1.0

    RETRIES = 30

    async def settle(self, snap: ChannelSnapshot, recording: bool | None) -> None:
        """After an AGI request: watch the channel if it is now recorded here, else forget it."""
        if recording:
            await self.watch(snap)
        else:
            if recording is None and self._tracker.recording_of(snap.id) is None:
                log.info("agi request for a call that is not recorded; the call went on")
            self._tracker.drop(snap.id)

    async def watch(self, snap: ChannelSnapshot) -> None:
        """Subscribe to the recorded channel while its AGI session still holds it."""
        try:
            exists = await self._ari.subscribe_channel(snap.id)
        except AriUnavailable as exc:
            metrics.PROTOCOL_ERRORS.labels(source="ari", kind="subscribe_failed").inc()
            log.error("cannot watch the recorded channel yet; retrying", error=str(exc)[:200])
            task = asyncio.create_task(self._retry(snap), name=f"lean-watch-{snap.id}")
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)
            return
        if not exists:
            self._ended(snap)

    async def _retry(self, snap: ChannelSnapshot) -> None:
        """Once a second for a while: a REST hiccup must not leave the recording without an end.
        If the channel is gone by then, its end is taken as now (at most a retry late). Past the
        last try, the reconciliation after ARI's next reconnect ends it."""
        for _ in range(self.RETRIES):
            await asyncio.sleep(self.retry_interval)
            if not self._tracker.tracks(snap.id):
                return
            try:
                exists = await self._ari.subscribe_channel(snap.id)
            except AriUnavailable:
                continue
            if not exists:
                self._ended(snap)
            return
        log.error("recorded channel not watched; its end is found at the next reconnect", channel=snap.id)

    def _ended(self, snap: ChannelSnapshot) -> None:
        self._recorder.execute(self._tracker.handle(ChannelEvent("destroyed", snap), time.time()))

    async def close(self) -> None:
        for task in list(self._retries):
            task.cancel()
        await asyncio.gather(*self._retries, return_exceptions=True)

    async def answered(
        self,
        snap: ChannelSnapshot,
        agent_arg: str,
        attach: Attach,
        other_agent: str,
    ) -> None:
        """``agi://.../answered``: outbound, record the customer's channel from its answer;
        inbound, note the agent who answered the call being recorded. ``other_agent``: the
        agent found on the channel's other half or the call's first channel ("" if none)."""
        register = self._registers.get(snap.vars.get(VAR_REGISTER, ""))
        agent = agent_arg or snap.vars.get(VAR_AGENT, "") or other_agent
        if register is not None and register.direction == "outbound":
            if agent and VAR_AGENT not in snap.vars:
                snap = _with_agent(snap, agent)
            recording = await claim_and_record(self._tracker, self._recorder, snap, attach, answered=True)
            await self.settle(snap, recording)
            return
        if snap.linkedid is None or not self._tracker.answered_by(snap.linkedid, agent):
            log.info("agi answered: no agent or no recorded call to note it on; the call went on")

    def live(self, live: Iterable[ChannelEvent], pending: Iterable[str]) -> list[ChannelEvent]:
        """What a reconciliation may look at in lean mode: the channels followed, and those the
        journal holds recordings of; never the whole PBX."""
        keep = set(pending)
        return [ev for ev in live if ev.channel.id in keep or self._tracker.tracks(ev.channel.id)]

    async def resubscribe(self) -> None:
        """After a (re)connect: subscriptions do not outlive the websocket that made them."""
        for channel_id in self._tracker.recorded_channels():
            try:
                if not await self._ari.subscribe_channel(channel_id):
                    log.info("recorded channel gone before it was watched again", channel=channel_id)
            except AriUnavailable as exc:
                metrics.PROTOCOL_ERRORS.labels(source="ari", kind="subscribe_failed").inc()
                log.warning("cannot watch a recorded channel again", channel=channel_id, error=str(exc))


def _with_agent(snap: ChannelSnapshot, agent: str) -> ChannelSnapshot:
    return ChannelSnapshot(
        snap.id, snap.name, snap.state, snap.linkedid, snap.caller_number, {**snap.vars, VAR_AGENT: agent}
    )
