"""Lean mode's pure parts: the config key, and what the tracker keeps when it sees only what
the dialplan tells it (recording/lean.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from callrec.asterisk.ari_events import ChannelEvent, ChannelSnapshot
from callrec.config import ConfigError, load
from callrec.recording.facts import StartRecording
from callrec.recording.tracker import CallTracker, FinishRecording
from tests.unit.test_config import GOOD, write
from tests.unit.test_tracker import REGISTERS


def snap(cid: str, name: str, state: str = "Up", **cvars: str) -> ChannelSnapshot:
    return ChannelSnapshot(cid, name, state, "call-1", "0401234567", cvars)


def test_mode_defaults_to_event_and_lean_needs_the_agi_endpoint(tmp_path: Path) -> None:
    assert load(write(tmp_path, GOOD)).mode == "event"
    lean = GOOD + '[daemon]\nmode = "lean"\n'
    with pytest.raises(ConfigError, match=r'daemon.mode = "lean" needs \[agi\] listen'):
        load(write(tmp_path, lean))
    assert load(write(tmp_path, lean + '[agi]\nlisten = "127.0.0.1:4573"\n')).mode == "lean"
    with pytest.raises(ConfigError, match=r'daemon\.mode: expected "event" or "lean"'):
        load(write(tmp_path, GOOD + '[daemon]\nmode = "quiet"\n'))


def test_outbound_claim_from_the_answered_channel_starts_there() -> None:
    tracker = CallTracker(REGISTERS)
    customer = snap("c1", "PJSIP/trunk-1", CALLREC_REGISTER="telesales", CALLREC_AGENT="bob")
    # Without the dialplan's word the tracker sees no other channel Up: no start.
    assert tracker.claim(customer, 1.0) == []
    tracker.drop("c1")
    assert tracker.channel_count == 0
    (start,) = tracker.claim(customer, 2.0, answered=True)
    assert isinstance(start, StartRecording)
    assert (start.channel_id, start.agent_name, start.direction) == ("c1", "bob", "outbound")


def test_agent_who_answered_is_noted_on_the_call_and_ends_in_the_row() -> None:
    tracker = CallTracker(REGISTERS)
    customer = snap("c1", "PJSIP/trunk-1", CALLREC_REGISTER="customer-service")
    (start,) = tracker.claim(customer, 1.0)
    assert isinstance(start, StartRecording) and start.agent_name is None
    assert tracker.answered_by("call-1", "alice")
    assert not tracker.answered_by("another-call", "bob")
    assert tracker.recorded_channels() == ["c1"]
    (finish,) = tracker.handle(ChannelEvent("destroyed", customer), 5.0)
    assert isinstance(finish, FinishRecording) and finish.parties.agent_name == "alice"
    assert tracker.channel_count == tracker.call_count == 0


def test_drop_keeps_the_recorded_channel() -> None:
    tracker = CallTracker(REGISTERS)
    tracker.claim(snap("c1", "PJSIP/trunk-1", CALLREC_REGISTER="customer-service"), 1.0)
    tracker.claim(snap("c2", "Local/alice@x-1;1", CALLREC_REGISTER="customer-service"), 1.0)
    tracker.drop("c2")
    tracker.drop("c1")
    assert tracker.channel_count == 1 and tracker.recorded_channels() == ["c1"]


def test_a_recording_named_by_callrec_is_adopted_without_a_journal_entry() -> None:
    import uuid

    from callrec.recording.layout import named_by_callrec

    rid = uuid.uuid4()
    root = Path("/var/spool/asterisk/callrec")
    assert named_by_callrec(f"{root}/2026/12/01/{rid}.wav", root) == (rid, f"2026/12/01/{rid}.wav")
    for other in (f"/elsewhere/2026/12/01/{rid}.wav", f"{root}/{rid}.wav", f"{root}/2026/12/01/x.wav"):
        assert named_by_callrec(other, root) is None
    tracker = CallTracker(REGISTERS)
    live = ChannelEvent("snapshot", snap("c1", "PJSIP/trunk-1", CALLREC_REGISTER="customer-service"))
    facts = tracker.adopt_unjournaled(live, rid, f"2026/12/01/{rid}.wav", 9.0)
    assert facts is not None and (facts.recording_id, facts.customer_number_masked) == (rid, "0401234***")
    # The call is recorded: the same channel seen again starts nothing.
    assert tracker.handle(live, 10.0) == []
    unmarked = ChannelEvent("snapshot", snap("c2", "PJSIP/trunk-2"))
    assert tracker.adopt_unjournaled(unmarked, uuid.uuid4(), "x", 9.0) is None


async def test_a_failed_subscription_is_retried_and_a_channel_gone_meanwhile_ends_its_recording() -> None:
    from callrec.asterisk.ari_rest import AriUnavailable
    from callrec.recording.lean import Lean

    class Ari:
        def __init__(self) -> None:
            self.answers: list[bool | None] = [None, None, False]  # None: REST failure

        async def subscribe_channel(self, channel_id: str) -> bool:
            answer = self.answers.pop(0)
            if answer is None:
                raise AriUnavailable("POST /ari/applications/callrec/subscription: ClientOSError")
            return answer

    class Recorder:
        def __init__(self) -> None:
            self.commands: list[object] = []

        def execute(self, commands: list[object]) -> None:
            self.commands.extend(commands)

    tracker = CallTracker(REGISTERS)
    customer = snap("c1", "PJSIP/trunk-1", CALLREC_REGISTER="customer-service")
    (start,) = tracker.claim(customer, 1.0)
    ari, recorder = Ari(), Recorder()
    lean = Lean(ari, tracker, recorder)  # type: ignore[arg-type]
    lean.retry_interval = 0.0
    await lean.watch(customer)
    assert recorder.commands == []  # not yet: retried in the background
    await asyncio.wait_for(asyncio.gather(*lean._retries), 5)
    (finish,) = recorder.commands
    assert isinstance(finish, FinishRecording) and finish.recording_id == start.recording_id  # type: ignore[union-attr]
    assert ari.answers == [] and tracker.channel_count == 0
    await lean.close()
