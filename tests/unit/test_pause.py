"""Pauses (recording/pause.py) with a fake AMI: the spans, the automatic resume, refusals."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from callrec.access import audit
from callrec.asterisk.ami import AmiError
from callrec.recording.pause import MuteFailed, NotRecording, Pauses, pause_head

RID = uuid.UUID(int=7)


class FakeAmi:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bool]] = []
        self.refuse = False
        self.unmuted = asyncio.Event()

    async def mix_monitor_mute(self, channel: str, muted: bool) -> None:
        if self.refuse:
            raise AmiError("MixMonitorMute", "No such channel")
        self.sent.append((channel, muted))
        if not muted:
            self.unmuted.set()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_pause_and_resume_mute_the_channel_and_keep_the_span() -> None:
    ami, clock, rows = FakeAmi(), Clock(), []

    async def sink(entry: audit.Entry) -> None:
        rows.append((entry.action, entry.detail["source"], entry.recording_id))

    p = Pauses(ami, max_pause=300, audit_sink=sink, clock=clock)
    p.started(RID, "PJSIP/trunk-1", "customer-service", 100.0)
    clock.now = 102.5
    assert await p.set(RID, True, source="dialplan") is True
    assert await p.set(RID, True, source="api") is False  # already paused: nothing sent
    assert p.is_paused(RID)
    clock.now = 105.0
    assert await p.set(RID, False, source="dialplan") is True
    assert ami.sent == [("PJSIP/trunk-1", True), ("PJSIP/trunk-1", False)]
    assert rows == [("pause", "dialplan", RID), ("resume", "dialplan", RID)]
    assert p.finished(RID, 110.0) == ((2.5, 5.0),)


async def test_a_resume_of_a_recording_not_known_paused_still_unmutes() -> None:
    # Adopted after a restart: Asterisk may still hold a mute callrec no longer knows.
    ami = FakeAmi()
    p = Pauses(ami, max_pause=300, clock=Clock())
    p.started(RID, "c", "r", 100.0)
    assert await p.set(RID, False, source="api") is False
    assert ami.sent == [("c", False)] and p.finished(RID, 101.0) == ()


async def test_a_pause_still_on_at_the_end_closes_there() -> None:
    p = Pauses(FakeAmi(), max_pause=300, clock=Clock())
    p.started(RID, "c", "r", 100.0)
    await p.set(RID, True, at=104.0, source="api")
    assert p.finished(RID, 109.0) == ((4.0, 9.0),)
    await p.close()


def test_the_head_is_the_first_samples_lag_when_a_start_explains_it() -> None:
    assert pause_head(100.25, 100.0) == 0.25
    assert pause_head(None, 100.0) == 0.0  # no seen hangup, not a WAV
    assert pause_head(99.0, 100.0) == 0.0  # earlier: an adopted recording, not a lag
    assert pause_head(103.0, 100.0) == 0.0  # a gap no start explains


async def test_spans_are_offsets_in_the_file_after_its_head() -> None:
    """MixMonitor's first sample came 0.25 s after the start was seen: the silence it wrote is
    0.25 s earlier in the file than the clock's offsets say (never before the file's start)."""
    p = Pauses(FakeAmi(), max_pause=300, clock=Clock())
    p.started(RID, "c", "r", 100.0)
    await p.set(RID, True, at=100.1, source="api")
    await p.set(RID, False, at=102.0, source="api")
    await p.set(RID, True, at=105.0, source="api")
    assert p.finished(RID, 109.0, head=0.25) == ((0.0, 1.75), (4.75, 8.75))
    await p.close()


async def test_a_forgotten_pause_resumes_after_max_pause() -> None:
    ami = FakeAmi()
    p = Pauses(ami, max_pause=0.01, clock=Clock())
    p.started(RID, "c", "r", 100.0)
    await p.set(RID, True, source="dialplan")
    await asyncio.wait_for(ami.unmuted.wait(), 5)
    assert ami.sent == [("c", True), ("c", False)]
    await p.close()


async def test_refusals_leave_the_state_as_it_was() -> None:
    ami = FakeAmi()
    p = Pauses(ami, max_pause=300)
    with pytest.raises(NotRecording):
        await p.set(RID, True, source="api")
    p.started(RID, "c", "r", 100.0)
    ami.refuse = True
    with pytest.raises(MuteFailed):
        await p.set(RID, True, source="api")
    assert not p.is_paused(RID) and p.finished(RID, 200.0) == ()
    p.request(uuid.UUID(int=8), True, 1.0, "dialplan")  # not recording: logged, never raised
    await p.close()
