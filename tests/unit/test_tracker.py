"""The pure call tracker: replayed transcripts from a real Asterisk 22, then edge cases."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from callrec.asterisk.ari_events import ChannelEvent, MalformedEvent, parse_channel, parse_event, published_at
from callrec.config import Register, Retention
from callrec.recording.facts import StartRecording
from callrec.recording.tracker import CallTracker, FinishRecording, Problem, StopRecording

TRANSCRIPTS = Path(__file__).parent / "transcripts"
REGISTERS = {
    "customer-service": Register("customer-service", "inbound", Retention(6, "month")),
    "telesales": Register("telesales", "outbound", Retention(1, "month")),
}


def transcript(name: str) -> Iterator[dict[str, Any]]:
    """Events captured from the real Asterisk loading dialplan/ (tests/e2e/asterisk)."""
    with (TRANSCRIPTS / f"{name}.jsonl").open() as f:
        for line in f:
            yield json.loads(line)


def replay(tracker: CallTracker, events: Any) -> list[tuple[int, Any]]:
    out = []
    for i, obj in enumerate(events):
        ev = parse_event(obj)
        if ev is not None:
            out.extend((i, cmd) for cmd in tracker.handle(ev, float(i)))
    return out


def of(kind: type, cmds: list[tuple[int, Any]]) -> list[Any]:
    return [c for _, c in cmds if isinstance(c, kind)]


def test_inbound_call_recorded_once_on_the_customer_channel() -> None:
    events = list(transcript("inbound"))
    tracker = CallTracker(REGISTERS, node="pbx1.example.org")
    cmds = replay(tracker, events)
    (start,) = of(StartRecording, cmds)
    assert start.channel_name.startswith("Local/0300@callrec-inbound-") and start.channel_name.endswith(";2")
    assert (start.register, start.direction) == ("customer-service", "inbound")
    # The file names its register and node: a file left without a row says whose it is.
    assert start.file_path.endswith(f"/{start.recording_id}.customer-service.pbx1.example.org.wav")
    assert start.file_path.count("/") == 3
    # It starts at the event that marks the call, which comes after the answer.
    i_start = next(i for i, c in cmds if isinstance(c, StartRecording))
    assert events[i_start]["type"] == "ChannelVarset" and events[i_start]["variable"] == "__CALLREC_REGISTER"
    (stop,) = of(StopRecording, cmds)
    (finish,) = of(FinishRecording, cmds)
    assert stop.recording_id == finish.recording_id == start.recording_id
    assert finish.parties.service_number == "0300"
    assert finish.parties.customer_number_masked == "+358401234***"
    assert finish.parties.agent_name == "alice"
    assert (tracker.channel_count, tracker.call_count) == (0, 0)


def test_outbound_starts_when_the_customer_answers_not_while_ringing() -> None:
    events = list(transcript("outbound"))
    cmds = replay(CallTracker(REGISTERS), events)
    (start,) = of(StartRecording, cmds)
    i_start = next(i for i, c in cmds if isinstance(c, StartRecording))
    trigger = events[i_start]
    assert trigger["type"] == "ChannelStateChange"
    assert trigger["channel"]["state"] == "Up"
    assert "test-customer-phone" in trigger["channel"]["name"]
    # Nothing started while the customer's phone was ringing.
    assert any(e["channel"]["state"] == "Ringing" for e in events[:i_start])
    # Recorded on the customer's channel, the one that answered: it stays when the agent transfers.
    assert start.channel_id == trigger["channel"]["id"] and start.direction == "outbound"
    (finish,) = of(FinishRecording, cmds)
    assert finish.parties.customer_number_masked == "0401234***"
    assert finish.parties.agent_name == "bob"
    assert finish.parties.service_number == "0201234567"


def test_queue_agent_is_the_member_who_answered() -> None:
    # Both members' phones answered; alice's leg won the race (only her ;1 went Up).
    cmds = replay(CallTracker(REGISTERS), transcript("queue"))
    assert len(of(StartRecording, cmds)) == 1
    (finish,) = of(FinishRecording, cmds)
    assert finish.parties.agent_name == "alice"


def test_call_without_register_is_never_recorded() -> None:
    tracker = CallTracker(REGISTERS)
    assert replay(tracker, transcript("internal")) == []
    assert tracker.call_count == 0


def test_unknown_register_is_reported_once_and_not_recorded() -> None:
    events = [_rename_register(e, "no-such-register") for e in transcript("inbound")]
    cmds = replay(CallTracker(REGISTERS), events)
    assert of(StartRecording, cmds) == []
    assert [p.kind for p in of(Problem, cmds)] == ["unknown_register"]


def _rename_register(e: dict[str, Any], name: str) -> dict[str, Any]:
    e = json.loads(json.dumps(e))
    if e.get("variable", "").lstrip("_") == "CALLREC_REGISTER":
        e["value"] = name
    cv = e["channel"].get("channelvars", {})
    if cv.get("CALLREC_REGISTER"):
        cv["CALLREC_REGISTER"] = name
    return e


# --- transfers (transcripts of tests/harness/calls.py, captured by tests/harness/capture.py) ---

# name: (the recorded channel's name starts with, the agents listed in order, talk seconds)
TRANSFERS = {
    "inbound_blind_dtmf": ("Local/0300@test-trunk-", ["alice", "bob"], 9),
    "inbound_attended_dtmf": ("Local/0300@test-trunk-", ["alice", "bob"], 10),
    "inbound_blind_ami": ("Local/0300@test-trunk-", ["alice", "bob"], 8),
    "inbound_attended_ami": ("Local/0300@test-trunk-", ["alice", "bob"], 10),
    "inbound_redirect_ami": ("Local/0300@test-trunk-", ["alice", "bob"], 8),
    "inbound_blind_to_queue": ("Local/0300@test-trunk-", ["alice", "*"], 8),
    "inbound_park_and_pickup": ("Local/0300@test-trunk-", ["alice", "bob"], 10),
    "outbound_blind_dtmf": ("Local/0401234567@test-customer-phone-", ["bob", "carol"], 9),
    "outbound_attended_dtmf": ("Local/0401234567@test-customer-phone-", ["bob", "carol"], 10),
    "outbound_blind_ami": ("Local/0401234567@test-customer-phone-", ["bob", "carol"], 8),
    "outbound_attended_ami": ("Local/0401234567@test-customer-phone-", ["bob", "carol"], 10),
    "outbound_redirect_ami": ("Local/0401234567@test-customer-phone-", ["bob", "carol"], 8),
    "outbound_park_and_pickup": ("Local/0401234567@test-customer-phone-", ["bob", "carol"], 10),
}


def _at(e: dict[str, Any]) -> float:
    return datetime.fromisoformat(e["timestamp"].replace("+0000", "+00:00")).timestamp()


@pytest.mark.parametrize("name", sorted(TRANSFERS))
def test_a_transferred_call_is_one_recording_of_the_customer_channel(name: str) -> None:
    recorded, agents, talk = TRANSFERS[name]
    events = list(transcript(name))
    t0 = _at(events[0])
    tracker = CallTracker(REGISTERS)
    cmds = []
    for obj in events:
        parsed = parse_event(obj)
        if parsed is not None:
            cmds += tracker.handle(parsed, _at(obj) - t0)
    (start,) = [c for c in cmds if isinstance(c, StartRecording)]
    (stop,) = [c for c in cmds if isinstance(c, StopRecording)]
    (finish,) = [c for c in cmds if isinstance(c, FinishRecording)]
    assert start.channel_name.startswith(recorded), start.channel_name
    assert stop.recording_id == finish.recording_id == start.recording_id
    # The recording runs until the customer hangs up: talk seconds after the answer, which is
    # within a second of the start (the notice plays first; outbound, the ringing is not in it).
    assert talk - 1 <= finish.ended_at - start.answered_at <= talk + 0.1
    listed = [s.agent for s in finish.parties.agents]
    assert len(listed) >= len(agents) and all(a in ("*", b) for a, b in zip(agents, listed, strict=False))
    assert finish.parties.agent_name == agents[0]
    first, last = finish.parties.agents[0], finish.parties.agents[-1]
    # The first agent left at the transfer; the last was there until the customer hung up.
    assert first.left_at is not None and first.left_at < finish.ended_at
    assert last.joined_at >= first.joined_at and (last.left_at or finish.ended_at) >= finish.ended_at - 0.1
    assert (tracker.channel_count, tracker.call_count) == (0, 0)


def test_blind_transfer_from_the_phone_hands_the_customer_to_bob_at_once() -> None:
    events = list(transcript("inbound_blind_dtmf"))
    t0 = _at(events[0])
    transfer = next(_at(e) - t0 for e in events if e["type"] == "BridgeBlindTransfer")
    tracker = CallTracker(REGISTERS)
    finish = None
    for obj in events:
        parsed = parse_event(obj)
        for c in tracker.handle(parsed, _at(obj) - t0) if parsed else ():
            finish = c if isinstance(c, FinishRecording) else finish
    assert finish is not None
    alice, bob = finish.parties.agents
    assert alice.left_at is not None and abs(alice.left_at - transfer) < 0.05
    assert abs(bob.joined_at - transfer) < 0.05


# --- hand-made events ------------------------------------------------------------------------


def chan(
    cid: str,
    state: str = "Up",
    *,
    name: str | None = None,
    linkedid: str = "L1",
    number: str = "+358401234567",
    **cvars: str,
) -> dict[str, Any]:
    return {
        "id": cid,
        "name": name or f"PJSIP/{cid}-0001",
        "state": state,
        "caller": {"name": "", "number": number},
        "channelvars": {"CHANNEL(linkedid)": linkedid, **cvars},
    }


def ev(kind: str, channel: dict[str, Any], **extra: Any) -> ChannelEvent:
    parsed = parse_event({"type": kind, "channel": channel, **extra})
    assert parsed is not None
    return parsed


def test_register_set_before_answer_starts_at_answer() -> None:
    t = CallTracker(REGISTERS)
    assert t.handle(ev("ChannelCreated", chan("a", "Ring")), 0) == []
    t.handle(
        ev("ChannelVarset", chan("a", "Ring"), variable="__CALLREC_REGISTER", value="customer-service"), 1
    )
    (start,) = t.handle(ev("ChannelStateChange", chan("a", "Up")), 2)
    assert isinstance(start, StartRecording) and start.answered_at == 2


def test_register_set_on_a_channel_already_up_starts_at_once() -> None:
    t = CallTracker(REGISTERS)
    t.handle(ev("ChannelCreated", chan("a", "Up")), 0)
    cmds = t.handle(ev("ChannelVarset", chan("a"), variable="CALLREC_REGISTER", value="customer-service"), 1)
    assert [type(c) for c in cmds] == [StartRecording]


def test_register_known_only_from_channelvars_snapshot() -> None:
    # After a restart the daemon sees the call only through GET /channels.
    t = CallTracker(REGISTERS)
    live = [parse_channel(chan("a", CALLREC_REGISTER="customer-service", CALLREC_AGENT="carol"))]
    (start,) = t.reconcile(live, 5)
    assert isinstance(start, StartRecording)


def test_reconcile_finishes_recordings_of_channels_that_vanished() -> None:
    t = CallTracker(REGISTERS)
    t.handle(ev("ChannelStateChange", chan("a", CALLREC_REGISTER="customer-service")), 0)
    cmds = t.reconcile([], 9)
    (finish,) = cmds
    assert isinstance(finish, FinishRecording) and finish.ended_at == 9
    assert t.call_count == 0


def test_inherited_channels_do_not_record_twice() -> None:
    t = CallTracker(REGISTERS)
    cmds = t.handle(
        ev("ChannelVarset", chan("a"), variable="__CALLREC_REGISTER", value="customer-service"), 0
    )
    assert len(cmds) == 1
    for i, child in enumerate(["b", "c", "d"]):
        more = t.handle(
            ev("ChannelVarset", chan(child), variable="__CALLREC_REGISTER", value="customer-service"), i + 1
        )
        more += t.handle(ev("ChannelStateChange", chan(child)), i + 1)
        assert more == []


def test_each_call_of_several_is_recorded() -> None:
    t = CallTracker(REGISTERS)
    starts = []
    for n in range(5):
        starts += t.handle(
            ev(
                "ChannelVarset",
                chan(f"c{n}", linkedid=f"L{n}"),
                variable="__CALLREC_REGISTER",
                value="customer-service",
            ),
            n,
        )
    assert len({s.recording_id for s in starts}) == 5


def test_hangup_then_destroy_emit_stop_then_finish_once() -> None:
    t = CallTracker(REGISTERS)
    (start,) = t.handle(
        ev("ChannelVarset", chan("a"), variable="CALLREC_REGISTER", value="customer-service"), 0
    )
    (stop,) = t.handle(ev("ChannelHangupRequest", chan("a")), 3)
    assert t.handle(ev("ChannelHangupRequest", chan("a")), 3.1) == []
    (finish,) = t.handle(ev("ChannelDestroyed", chan("a")), 3.2)
    assert isinstance(stop, StopRecording) and isinstance(finish, FinishRecording)
    assert stop.recording_id == finish.recording_id == start.recording_id
    assert t.handle(ev("ChannelDestroyed", chan("a")), 4) == []


def test_customer_number_variable_wins_and_is_masked_at_once() -> None:
    t = CallTracker(REGISTERS)
    t.handle(
        ev("ChannelVarset", chan("a", "Ring"), variable="CALLREC_CUSTOMER_NUMBER", value="040 765 4321"), 0
    )
    t.handle(
        ev("ChannelVarset", chan("a", "Ring"), variable="__CALLREC_REGISTER", value="customer-service"), 0
    )
    t.handle(ev("ChannelStateChange", chan("a")), 1)
    (finish,) = t.handle(ev("ChannelDestroyed", chan("a")), 2)
    assert finish.parties.customer_number_masked == "0407654***"
    assert "4321" not in repr(t.__dict__)


@pytest.mark.parametrize("number", ["", "anonymous", "Unavailable"])
def test_anonymous_caller_has_no_number(number: str) -> None:
    t = CallTracker(REGISTERS)
    t.handle(
        ev("ChannelVarset", chan("a", number=number), variable="CALLREC_REGISTER", value="customer-service"),
        0,
    )
    (finish,) = t.handle(ev("ChannelDestroyed", chan("a", number=number)), 1)
    assert finish.parties.customer_number_masked is None


def test_missing_linkedid_is_reported_and_the_call_still_recorded() -> None:
    t = CallTracker(REGISTERS)
    c = chan("a")
    del c["channelvars"]
    cmds = t.handle(ev("ChannelVarset", c, variable="CALLREC_REGISTER", value="customer-service"), 0)
    assert [type(x) for x in cmds] == [Problem, StartRecording]


def test_hostile_values_are_capped() -> None:
    t = CallTracker(REGISTERS)
    t.handle(ev("ChannelVarset", chan("a"), variable="CALLREC_AGENT", value="x" * 5000), 0)
    t.handle(ev("ChannelVarset", chan("a"), variable="CALLREC_SERVICE_NUMBER", value="9" * 5000), 0)
    t.handle(ev("ChannelVarset", chan("a"), variable="CALLREC_REGISTER", value="customer-service"), 0)
    (finish,) = t.handle(ev("ChannelDestroyed", chan("a")), 1)
    assert len(finish.parties.agent_name) == 128 and len(finish.parties.service_number) == 128


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "ChannelCreated"},
        {"type": "ChannelCreated", "channel": "x"},
        {"type": "ChannelCreated", "channel": {"id": 5, "name": "n", "state": "Up"}},
        {"type": "ChannelVarset", "channel": {"id": "a", "name": "n", "state": "Up"}, "variable": None},
    ],
)
def test_malformed_events_raise_malformed_event(obj: dict[str, Any]) -> None:
    with pytest.raises(MalformedEvent):
        parse_event(obj)


def test_unused_event_types_are_ignored() -> None:
    assert parse_event({"type": "DeviceStateChanged"}) is None
    assert parse_event({"type": 7}) is None


def test_ids_are_injectable() -> None:
    fixed = uuid.UUID(int=1)
    t = CallTracker(REGISTERS, new_id=lambda: fixed, file_path=lambda rid, now, register: f"x/{rid}.wav")
    (start,) = t.handle(
        ev("ChannelVarset", chan("a"), variable="CALLREC_REGISTER", value="customer-service"), 0
    )
    assert start.recording_id == fixed and start.file_path == f"x/{fixed}.wav"


def test_hmac_of_the_customer_number_with_a_key() -> None:
    from callrec.privacy import number_hmac

    key = b"secret-key-abcdefghij"
    t = CallTracker(REGISTERS, hmac_key=key)
    t.handle(ev("ChannelVarset", chan("a"), variable="CALLREC_REGISTER", value="customer-service"), 0)
    (finish,) = t.handle(ev("ChannelDestroyed", chan("a")), 1)
    assert finish.parties.customer_number_hmac == number_hmac("+358401234567", key)
    assert "4567" not in repr(t.__dict__)


def test_the_callers_number_is_masked_again_only_when_it_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every event of the recorded channel carries its caller ID; masking and HMAC run once per
    # number it has (bench/event_path.py), and a changed number still reaches the row.
    from callrec.recording import tracker as module

    hashed: list[str | None] = []
    real = module.number_hmac
    monkeypatch.setattr(module, "number_hmac", lambda raw, key: hashed.append(raw) or real(raw, key))
    t = CallTracker(REGISTERS, hmac_key=b"secret-key-abcdefghij")
    t.handle(ev("ChannelVarset", chan("a"), variable="CALLREC_REGISTER", value="customer-service"), 0)
    for i in range(5):
        t.handle(ev("ChannelStateChange", chan("a")), 1 + i)
    t.handle(ev("ChannelCallerId", chan("a", number="+358409876543")), 7)
    t.handle(ev("ChannelStateChange", chan("a", number="+358409876543")), 8)
    (finish,) = t.handle(ev("ChannelDestroyed", chan("a", number="+358409876543")), 9)
    assert finish.parties.customer_number_masked == "+358409876***"
    assert len(hashed) == 2


# --- AGI mode: claim() -----------------------------------------------------------------------


def snap(cid: str, state: str = "Ring", **kw: Any) -> Any:
    """A channel as the AGI endpoint sees it (the same shape as an event's channel)."""
    return parse_channel(chan(cid, state, **kw)).channel


def test_claim_starts_before_the_answer_and_the_answer_starts_nothing_more() -> None:
    t = CallTracker(REGISTERS)
    t.handle(ev("ChannelCreated", chan("a", "Ring")), 0)
    (start,) = t.claim(snap("a", CALLREC_REGISTER="customer-service", CALLREC_SERVICE_NUMBER="0300"), 1)
    assert isinstance(start, StartRecording)
    assert (start.channel_id, start.register, start.answered_at) == ("a", "customer-service", 1)
    assert start.service_number == "0300" and start.customer_number_masked == "+358401234***"
    assert t.recording_of("a") == start.recording_id
    # The events that follow (the answer, the register's own varset, an inheriting channel).
    assert t.handle(ev("ChannelStateChange", chan("a", "Up", CALLREC_REGISTER="customer-service")), 2) == []
    assert t.handle(ev("ChannelCreated", chan("b", "Up", CALLREC_REGISTER="customer-service")), 3) == []
    assert t.handle(ev("ChannelHangupRequest", chan("a")), 4) == [
        StopRecording(start.recording_id, "PJSIP/a-0001", 4)
    ]
    (finish,) = t.handle(ev("ChannelDestroyed", chan("a")), 5)
    assert isinstance(finish, FinishRecording) and finish.parties.service_number == "0300"


def test_claim_of_a_channel_not_seen_yet_over_ari() -> None:
    # The AGI request may overtake the channel's first events on the websocket.
    t = CallTracker(REGISTERS)
    (start,) = t.claim(snap("a", CALLREC_REGISTER="customer-service"), 0)
    assert isinstance(start, StartRecording)
    assert t.handle(ev("ChannelCreated", chan("a", "Ring", CALLREC_REGISTER="customer-service")), 1) == []
    assert t.handle(ev("ChannelStateChange", chan("a", "Up")), 2) == []


def test_claim_follows_the_register_rules() -> None:
    t = CallTracker(REGISTERS)
    assert t.claim(snap("a", linkedid="L1"), 0) == []
    assert t.recording_of("a") is None
    (problem,) = t.claim(snap("b", linkedid="L2", CALLREC_REGISTER="nope"), 0)
    assert isinstance(problem, Problem) and problem.kind == "unknown_register"
    assert t.recording_of("b") is None


def test_claim_when_the_event_mode_was_first_starts_nothing() -> None:
    t = CallTracker(REGISTERS)
    (start,) = t.handle(
        ev("ChannelVarset", chan("a"), variable="CALLREC_REGISTER", value="customer-service"), 0
    )
    assert t.claim(snap("a", "Up", CALLREC_REGISTER="customer-service"), 1) == []
    assert t.recording_of("a") == start.recording_id


def test_outbound_claim_waits_for_the_customer_to_answer() -> None:
    t = CallTracker(REGISTERS)
    agent = {"CALLREC_REGISTER": "telesales", "CALLREC_AGENT": "bob"}
    t.handle(ev("ChannelCreated", chan("agent", "Up", **agent)), 0)
    t.handle(ev("ChannelCreated", chan("cust", "Ring", CALLREC_REGISTER="telesales")), 1)
    # Asked for while the customer's phone rings: the ringing is never recorded.
    assert t.claim(snap("agent", "Up", **agent), 2) == []
    assert t.recording_of("agent") is None
    # Asked for on the customer's leg once it answered (Dial's U() option): recorded there.
    t_up = CallTracker(REGISTERS)
    t_up.handle(ev("ChannelCreated", chan("agent", "Up", **agent)), 0)
    (start,) = t_up.claim(snap("cust", "Up", CALLREC_REGISTER="telesales"), 1)
    assert isinstance(start, StartRecording) and start.channel_id == "cust" and start.direction == "outbound"
    assert start.agent_name == "bob"


def test_callrec_pause_on_any_channel_of_a_recorded_call_pauses_its_recording() -> None:
    from callrec.recording.tracker import PauseRecording

    t = CallTracker(REGISTERS)
    assert (
        t.handle(ev("ChannelVarset", chan("a"), variable="CALLREC_PAUSE", value="1"), 0) == []
    )  # not recorded
    (start,) = t.handle(
        ev("ChannelVarset", chan("a"), variable="CALLREC_REGISTER", value="customer-service"), 1
    )
    assert t.handle(ev("ChannelVarset", chan("b"), variable="CALLREC_PAUSE", value="1"), 2) == [
        PauseRecording(start.recording_id, True, 2)
    ]
    assert t.handle(ev("ChannelVarset", chan("a"), variable="CALLREC_PAUSE", value="0"), 3) == [
        PauseRecording(start.recording_id, False, 3)
    ]
    assert t.handle(ev("ChannelVarset", chan("a"), variable="CALLREC_PAUSE", value=""), 4) == [
        PauseRecording(start.recording_id, False, 4)
    ]


def test_live_calls_by_agent_for_the_pause_api() -> None:
    events = list(transcript("inbound_blind_dtmf"))
    t = CallTracker(REGISTERS)
    seen: dict[str, set[str]] = {"alice": set(), "bob": set()}
    rid = None
    for i, obj in enumerate(events):
        parsed = parse_event(obj)
        for c in t.handle(parsed, float(i)) if parsed else ():
            rid = c.recording_id if isinstance(c, StartRecording) else rid
        for agent in seen:
            if t.live_recording_of_agent(agent) is not None:
                seen[agent].add(obj["type"])
    # alice is on the live call until her transfer, bob from his answer; after the customer
    # hangs up neither is.
    assert seen["alice"] and seen["bob"]
    assert t.live_recording_of_agent("alice") is None and t.agents_of(rid) is None  # type: ignore[arg-type]


def test_a_picked_up_agent_is_listed_on_the_call_their_leg_moved_to() -> None:
    # bob's pickup: his ;2 is bridged with the parked customer (linkedid L1), his ;1 (the phone)
    # keeps its own L2; his leg counts as answered only when the ;1 goes Up afterwards.
    t = CallTracker(REGISTERS)
    (start,) = t.handle(
        ev("ChannelVarset", chan("a"), variable="CALLREC_REGISTER", value="customer-service"), 0
    )
    one, two = "Local/701@callrec-pickup-0001;1", "Local/701@callrec-pickup-0001;2"
    t.handle(ev("ChannelCreated", chan("b1", "Down", name=one, linkedid="L2")), 1)
    t.handle(ev("ChannelCreated", chan("b2", "Ring", name=two, linkedid="L2", CALLREC_AGENT="bob")), 1)
    t.handle(ev("ChannelEnteredBridge", chan("b2", "Up", name=two, linkedid="L1", CALLREC_AGENT="bob")), 2)
    t.handle(ev("ChannelStateChange", chan("b1", "Up", name=one, linkedid="L2")), 3)
    assert t.agents_of(start.recording_id) == frozenset({"bob"})
    (finish,) = t.handle(ev("ChannelDestroyed", chan("a")), 9)
    assert [(s.agent, s.joined_at) for s in finish.parties.agents] == [("bob", 3)]


def test_published_at_reads_asterisks_timestamp_and_nothing_else() -> None:
    # ARI's form: milliseconds and a numeric offset (Asterisk 22, res_ari).
    assert published_at({"timestamp": "2026-12-02T07:30:27.123+0000"}) == 1796196627.123
    assert published_at({"timestamp": "2026-12-02T09:30:27.123+0200"}) == 1796196627.123
    for bad in ({}, {"timestamp": 5}, {"timestamp": "yesterday"}, {"timestamp": "2026-12-02T07:30:27"}):
        assert published_at(bad) is None
