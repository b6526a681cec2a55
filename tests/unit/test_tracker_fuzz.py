"""Property-based fuzzing of the call tracker with random event sequences (channels sometimes
change their linkedid, as a bridge makes them do).

Invariants: at most one recording per call at a time; every started recording ends with
exactly one FinishRecording once its channels are gone; StopRecording at most once and only
before the finish; nothing left in memory after every channel is destroyed; only masked
numbers come out.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.asterisk.ari_events import parse_event
from callrec.config import Register, Retention
from callrec.recording.facts import StartRecording
from callrec.recording.tracker import CallTracker, FinishRecording, StopRecording

REGISTERS = {
    "in": Register("in", "inbound", Retention(1, "month")),
    "out": Register("out", "outbound", Retention(1, "month")),
}
MASKED = re.compile(r"^\+?[0-9]*\*\*\*$")
CHANNELS = [
    ("a", "PJSIP/trunk-0001", "L1"),
    ("b", "Local/x@ctx-0001;1", "L1"),
    ("c", "Local/x@ctx-0001;2", "L1"),
    ("d", "PJSIP/agent-0002", "L1"),
    ("e", "PJSIP/trunk-0003", "L2"),
    ("f", "Local/y@ctx-0004;1", "L2"),
    ("g", "Local/y@ctx-0004;2", "L2"),
]
numbers = st.one_of(st.just(""), st.text(max_size=30), st.from_regex(r"\+?[0-9 ]{1,20}", fullmatch=True))
states = st.sampled_from(["Down", "Ring", "Ringing", "Up"])
variables = st.sampled_from(
    [
        "__CALLREC_REGISTER",
        "CALLREC_REGISTER",
        "CALLREC_AGENT",
        "CALLREC_SERVICE_NUMBER",
        "CALLREC_CUSTOMER_NUMBER",
        "OTHER",
    ]
)
values = st.one_of(st.sampled_from(["in", "out", "nope", ""]), st.text(max_size=40))


@st.composite
def event(draw: st.DrawFn) -> dict[str, Any]:
    cid, name, linkedid = draw(st.sampled_from(CHANNELS))
    kind = draw(
        st.sampled_from(
            [
                "ChannelCreated",
                "ChannelStateChange",
                "ChannelVarset",
                "ChannelHangupRequest",
                "ChannelDestroyed",
                "ChannelEnteredBridge",
            ]
        )
    )
    # A bridge may give a channel another call's linkedid (a parked call picked up): move it.
    if draw(st.integers(0, 9)) == 0:
        linkedid = "L2" if linkedid == "L1" else "L1"
    cvars: dict[str, str] = {"CHANNEL(linkedid)": linkedid}
    if draw(st.booleans()):
        cvars["CALLREC_REGISTER"] = draw(values)
    obj: dict[str, Any] = {
        "type": kind,
        "channel": {
            "id": cid,
            "name": name,
            "state": draw(states),
            "caller": {"number": draw(numbers)},
            "channelvars": cvars,
        },
    }
    if kind == "ChannelVarset":
        obj["variable"] = draw(variables)
        obj["value"] = draw(values)
    return obj


@settings(max_examples=400, deadline=None)
@given(st.lists(event(), max_size=60))
def test_invariants_hold_for_any_sequence(events: list[dict[str, Any]]) -> None:
    tracker = CallTracker(REGISTERS)
    active: dict[str, Any] = {}  # call_id -> recording id
    started: dict[Any, StartRecording] = {}
    stopped: set[Any] = set()
    finished: set[Any] = set()
    seen = {cid: (name, lid) for cid, name, lid in CHANNELS}
    tail = [
        {
            "type": "ChannelDestroyed",
            "channel": {"id": cid, "name": n, "state": "Up", "channelvars": {"CHANNEL(linkedid)": lid}},
        }
        for cid, (n, lid) in seen.items()
    ]
    for now, obj in enumerate(events + tail):
        ev = parse_event(obj)
        if ev is None:  # a variable outside the contract: nothing for the tracker
            assert obj["variable"] == "OTHER"
            continue
        for cmd in tracker.handle(ev, float(now)):
            if isinstance(cmd, StartRecording):
                assert cmd.call_id not in active, "two recordings of one call at once"
                assert cmd.recording_id not in started
                active[cmd.call_id] = cmd.recording_id
                started[cmd.recording_id] = cmd
            elif isinstance(cmd, StopRecording):
                assert cmd.recording_id in started and cmd.recording_id not in finished
                assert cmd.recording_id not in stopped, "StopRecording twice"
                stopped.add(cmd.recording_id)
            elif isinstance(cmd, FinishRecording):
                assert cmd.recording_id in started and cmd.recording_id not in finished
                finished.add(cmd.recording_id)
                active.pop(started[cmd.recording_id].call_id)
                masked = cmd.parties.customer_number_masked
                assert masked is None or MASKED.match(masked)
    assert set(started) == finished, "every started recording finishes exactly once"
    assert (tracker.channel_count, tracker.call_count, tracker.recording_count) == (0, 0, 0)
