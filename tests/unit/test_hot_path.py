"""The event path's shortcut (docs/performance.md): ChannelVarset events of variables
outside the dialplan contract are dropped before decoding. Replaying the real Asterisk
transcripts with and without them must give the tracker's very same commands."""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from callrec.asterisk.ari_events import irrelevant_raw, parse_event
from callrec.config import Register, Retention
from callrec.recording.tracker import CallTracker, Command

TRANSCRIPTS = Path(__file__).parent / "transcripts"
REGISTERS = {
    "customer-service": Register("customer-service", "inbound", Retention(6, "month")),
    "telesales": Register("telesales", "outbound", Retention(1, "month")),
}


def compact(obj: dict[str, Any]) -> bytes:
    """As Asterisk sends it with ari.conf ``pretty = no``."""
    return orjson.dumps(obj)


def replay(events: list[tuple[int, dict[str, Any]]]) -> list[Command]:
    ids = (uuid.UUID(int=n) for n in itertools.count(1))
    tracker = CallTracker(REGISTERS, new_id=lambda: next(ids))
    out: list[Command] = []
    for i, obj in events:
        ev = parse_event(obj)
        if ev is not None:
            out.extend(tracker.handle(ev, float(i)))
    return out


@pytest.mark.parametrize("name", sorted(p.stem for p in TRANSCRIPTS.glob("*.jsonl")))
def test_skipping_irrelevant_varsets_changes_no_command(name: str) -> None:
    lines = (TRANSCRIPTS / f"{name}.jsonl").read_text().splitlines()
    events = [(i, json.loads(line)) for i, line in enumerate(lines) if line.strip()]
    kept = [(i, obj) for i, obj in events if not irrelevant_raw(compact(obj))]
    if name == "inbound":
        assert len(kept) < len(events) * 2 // 3  # most of the stream is skipped
    assert replay(kept) == replay(events)


def varset(variable: str) -> dict[str, Any]:
    """In Asterisk 22's own key order (tests/unit/transcripts)."""
    cvars = {"CHANNEL(linkedid)": "1.1", "CALLREC_REGISTER": "customer-service"}
    return {
        "variable": variable,
        "value": "x",
        "type": "ChannelVarset",
        "timestamp": "2026-11-22T18:51:58.438+0000",
        "channel": {"id": "1.1", "name": "Local/x;2", "state": "Up", "channelvars": cvars},
    }


@pytest.mark.parametrize("variable", ["CALLREC_REGISTER", "__CALLREC_REGISTER", "_CALLREC_AGENT"])
def test_contract_variables_are_never_skipped(variable: str) -> None:
    assert not irrelevant_raw(compact(varset(variable)))


def test_other_varsets_are_skipped_and_other_types_kept() -> None:
    assert irrelevant_raw(compact(varset("BRIDGEPEER")))
    state = {"type": "ChannelStateChange", "channel": varset("X")["channel"]}
    assert not irrelevant_raw(compact(state))
    # Pretty-printed JSON (ari.conf pretty = yes) is never skipped: decoded as before.
    assert not irrelevant_raw(json.dumps(varset("BRIDGEPEER"), indent=1).encode())
