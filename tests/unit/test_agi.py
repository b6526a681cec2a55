"""The FastAGI endpoint (AGI mode) against a fake of Asterisk's side of FastAGI.

The fake speaks what res_agi does (checked against Asterisk 22.10): the ``agi_*`` environment
and a blank line, then one answer line per command, ``HANGUP`` lines in between when the
channel hangs up. The tracker and the recorder are the real ones; AMI, journal and outbox are
in-memory stand-ins.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from callrec.asterisk.ari_events import parse_event
from callrec.config import Register, Retention
from callrec.ops import metrics
from callrec.recording.agi import AgiServer
from callrec.recording.facts import Recording, StartRecording
from callrec.recording.file_close import FileClose
from callrec.recording.lean import Lean
from callrec.recording.recorder import Recorder
from callrec.recording.tracker import CallTracker
from tests.harness.asterisk import free_port

REGISTERS = {"customer-service": Register("customer-service", "inbound", Retention(6, "month"))}


@dataclass
class Mixer:
    connected: bool = True
    started: list[tuple[str, str]] = field(default_factory=list)

    async def wait_connected(self) -> None:
        return None

    def send_mix_monitor(self, channel: str, file: str, *, options: str = "", command: str = "") -> Any:
        self.started.append((channel, file))
        return asyncio.sleep(0)

    async def stop_mix_monitor(self, channel: str) -> None:
        return None


@dataclass
class Memory:
    pending: dict[uuid.UUID, StartRecording] = field(default_factory=dict)
    rows: list[Recording] = field(default_factory=list)

    async def begin(self, rec: StartRecording) -> None:
        self.pending[rec.recording_id] = rec

    async def forget(self, recording_id: uuid.UUID) -> None:
        self.pending.pop(recording_id, None)

    async def put(self, row: Recording, retention: str) -> None:
        self.rows.append(row)


@dataclass
class Daemon:
    tracker: CallTracker
    recorder: Recorder
    mixer: Mixer
    memory: Memory
    port: int


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    mixer, memory = Mixer(), Memory()
    tracker = CallTracker(REGISTERS)
    recorder = Recorder(mixer, memory, memory, REGISTERS, tmp_path, closes=FileClose(None, timeout=0.1))
    port = free_port()
    server = AgiServer(("127.0.0.1", port), tracker, recorder)
    task = asyncio.create_task(server.run())
    await server.wait_listening()
    yield Daemon(tracker, recorder, mixer, memory, port)
    await recorder.drain(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


Answer = Callable[[str], list[str]]


def channel_vars(register: str = "customer-service", state: str = "Ring") -> str:
    """The answer to the endpoint's GET FULL VARIABLE: base64 values in the order it asks
    (state, linkedid, caller ID, then agent, customer number, register, service number)."""
    values = [state, "L1", "+358401234567", "", "", register, "0300"]
    return "200 result=1 (" + ",".join(b64(v) for v in values) + ")"


async def asterisk_asks(
    port: int,
    answer: Answer,
    *,
    script: str = "record",
    uniqueid: str = "a",
    channel: str = "PJSIP/trunk-00000001",
) -> list[str]:
    """Play res_agi: send the environment, answer each command; return the commands."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    env = {
        "agi_network": "yes",
        "agi_network_script": script,
        "agi_request": f"agi://127.0.0.1:{port}/{script}",
        "agi_channel": channel,
        "agi_uniqueid": uniqueid,
        "agi_callerid": "unknown",
    }
    writer.write("".join(f"{k}: {v}\n" for k, v in env.items()).encode() + b"\n")
    commands = []
    while line := (await reader.readline()).decode():
        commands.append(line.rstrip("\n"))
        for reply in answer(commands[-1]):
            writer.write(reply.encode() + b"\n")
    writer.close()
    return commands


def answering(facts: str, mixmonitor: list[str] | None = None) -> Answer:
    def answer(command: str) -> list[str]:
        if command.startswith("GET FULL VARIABLE "):
            assert "${BASE64_ENCODE(${CALLREC_REGISTER})}" in command
            return [facts]
        if command.startswith("EXEC MixMonitor "):
            return mixmonitor or ["200 result=0"]
        return ["510 Invalid or unknown command"]

    return answer


async def test_mixmonitor_runs_on_the_channel_before_the_agi_returns(daemon: Daemon) -> None:
    commands = await asterisk_asks(daemon.port, answering(channel_vars()))
    assert len(commands) == 2
    exec_line = commands[1]
    (rid,) = daemon.memory.pending
    assert exec_line.startswith('EXEC MixMonitor "') and exec_line.endswith(
        f'{rid}.customer-service.wav.done"'
    )
    assert f"/{rid}.customer-service.wav,,touch " in exec_line
    assert daemon.mixer.started == []  # no AMI hop
    # ARI then reports the answer: the event mode starts nothing more.
    up = parse_event(
        {
            "type": "ChannelStateChange",
            "channel": {
                "id": "a",
                "name": "PJSIP/trunk-00000001",
                "state": "Up",
                "channelvars": {"CHANNEL(linkedid)": "L1", "CALLREC_REGISTER": "customer-service"},
            },
        }
    )
    assert up is not None
    assert daemon.tracker.handle(up, 1.0) == []
    assert daemon.tracker.recording_of("a") == rid


@pytest.mark.parametrize("register", ["", "not-a-register"])
async def test_no_recording_without_a_configured_register(daemon: Daemon, register: str) -> None:
    commands = await asterisk_asks(daemon.port, answering(channel_vars(register=register)))
    assert [c.split(" ")[0] for c in commands] == ["GET"]  # asked, then let the call go on
    assert daemon.memory.pending == {} and daemon.mixer.started == []


def refused_count() -> float:
    labels = {"register": "customer-service", "reason": "mixmonitor_refused"}
    return metrics.REGISTRY.get_sample_value("callrec_recordings_failed_total", labels) or 0.0


async def test_a_refused_mixmonitor_is_counted_and_the_call_goes_on(daemon: Daemon) -> None:
    before = refused_count()
    forgotten: asyncio.Queue[uuid.UUID] = asyncio.Queue()
    forget = daemon.memory.forget

    async def forget_and_tell(recording_id: uuid.UUID) -> None:
        await forget(recording_id)
        forgotten.put_nowait(recording_id)

    daemon.memory.forget = forget_and_tell  # type: ignore[method-assign]
    commands = await asterisk_asks(daemon.port, answering(channel_vars(), ["200 result=-2"]))
    assert len(commands) == 2 and commands[1].startswith("EXEC MixMonitor ")
    # The refusal is counted, then the journal entry is dropped: the recording's last step.
    rid = await asyncio.wait_for(forgotten.get(), 5)
    assert f"/{rid}.customer-service.wav," in commands[1]
    assert refused_count() - before == 1
    assert daemon.memory.pending == {}  # forgotten again: nothing to recover
    assert daemon.memory.rows == [] and daemon.mixer.started == []  # and not retried through AMI


async def test_hangup_lines_between_answers_are_skipped(daemon: Daemon) -> None:
    commands = await asterisk_asks(daemon.port, answering(channel_vars(), ["HANGUP", "200 result=0"]))
    assert len(commands) == 2 and len(daemon.memory.pending) == 1


async def test_an_environment_past_its_bounds_ends_the_request_and_the_next_is_served(
    daemon: Daemon,
) -> None:
    for env in (
        b"".join(b"agi_x%d: y\n" % n for n in range(200)) + b"\n",  # more lines than res_agi sends
        b"agi_callerid: " + b"1" * 70_000 + b"\n\n",  # more bytes than any caller ID
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
        writer.write(env)
        try:
            answer = await asyncio.wait_for(reader.read(), 5)
        except ConnectionResetError:  # closed with our bytes unread: a reset, not a FIN
            answer = b""
        assert answer == b"", "closed without a command"
        writer.close()
    assert daemon.memory.pending == {}
    await asterisk_asks(daemon.port, answering(channel_vars()))
    assert len(daemon.memory.pending) == 1


async def test_unknown_script_and_garbage_are_ignored(daemon: Daemon) -> None:
    assert await asterisk_asks(daemon.port, answering(channel_vars()), script="other") == []
    assert await asterisk_asks(daemon.port, answering("200 result=1 (not,base64!)")) != []
    assert await asterisk_asks(daemon.port, answering("520 Invalid command syntax.")) != []
    assert daemon.memory.pending == {}
    # The endpoint still serves the next request.
    await asterisk_asks(daemon.port, answering(channel_vars()))
    assert len(daemon.memory.pending) == 1


async def test_when_the_event_mode_was_first_the_agi_waits_for_its_mixmonitor(daemon: Daemon) -> None:
    gate, asked = asyncio.Event(), asyncio.Event()

    def slow_mix_monitor(channel: str, file: str, *, options: str = "", command: str = "") -> Any:
        asked.set()
        return gate.wait()

    daemon.mixer.send_mix_monitor = slow_mix_monitor  # type: ignore[method-assign]
    varset = parse_event(
        {
            "type": "ChannelVarset",
            "variable": "__CALLREC_REGISTER",
            "value": "customer-service",
            "channel": {
                "id": "a",
                "name": "PJSIP/trunk-00000001",
                "state": "Up",
                "channelvars": {"CHANNEL(linkedid)": "L1"},
            },
        }
    )
    assert varset is not None
    daemon.recorder.execute(daemon.tracker.handle(varset, 0.0))
    await asyncio.wait_for(asked.wait(), 5)  # the event mode's MixMonitor is under way, held
    request = asyncio.create_task(asterisk_asks(daemon.port, answering(channel_vars(state="Up"))))
    # While that MixMonitor is held the AGI may not end: it must not outlast a bounded wait.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(request), 0.2)
    gate.set()
    commands = await asyncio.wait_for(request, 5)
    assert [c.split(" ")[0] for c in commands] == ["GET"]


async def test_lean_answered_finds_the_agent_on_the_other_half_in_the_same_round_trip(
    tmp_path: Path,
) -> None:
    class Watching:
        async def subscribe_channel(self, channel_id: str) -> bool:
            return True

    tracker = CallTracker(REGISTERS)
    recorder = Recorder(Mixer(), Memory(), Memory(), REGISTERS, tmp_path, closes=FileClose(None, timeout=0.1))
    noted: list[tuple[str, str]] = []
    lean = Lean(Watching(), tracker, recorder, dict(REGISTERS))
    real = tracker.answered_by
    tracker.answered_by = lambda linkedid, agent: noted.append((linkedid, agent)) or real(linkedid, agent)  # type: ignore[method-assign]
    port = free_port()
    server = AgiServer(("127.0.0.1", port), tracker, recorder, lean)
    task = asyncio.create_task(server.run())
    await server.wait_listening()
    try:
        await asterisk_asks(port, answering(channel_vars(state="Up")))  # the call is recorded
        # The agent leg's ;1 (where Dial's U() runs): no CALLREC_AGENT of its own; its twin ;2
        # has alice. State, linkedid, caller, 4 contract variables, then twin and master.
        values = ["Up", "L1", "", "", "", "customer-service", "0300", "alice", ""]
        facts = "200 result=1 (" + ",".join(b64(v) for v in values) + ")"
        commands = await asterisk_asks(
            port, answering(facts), script="answered", uniqueid="b", channel="Local/alice@agents-0001;1"
        )
    finally:
        await recorder.drain(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    (get,) = commands
    assert "IMPORT(Local/alice@agents-0001;2,CALLREC_AGENT)" in get and "MASTER_CHANNEL(CALLREC_AGENT)" in get
    assert noted == [("L1", "alice")]
