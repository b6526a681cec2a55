"""The recorder without Asterisk: every way a recording ends, each failure reason counted once.

The mixer stands in for AMI and writes the file as MixMonitor would (the file, then the marker
once "closed"); journal and outbox are in memory, except for the outbox's reject path, which
runs on the real SQLite journal. Each test synchronises on the recorder's own drain (it
returns once every recording task is over), never on a sleep.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callrec.asterisk.ami import AmiError, AmiUnavailable
from callrec.config import Register, Retention
from callrec.ops.metrics import REGISTRY
from callrec.recording.facts import Parties, Recording, StartRecording
from callrec.recording.file_close import FileClose
from callrec.recording.journal import Journal
from callrec.recording.layout import marker_of
from callrec.recording.lifecycle import State
from callrec.recording.outbox import Outbox
from callrec.recording.recorder import Recorder
from callrec.recording.tracker import FinishRecording, StopRecording

REGISTERS = {
    "customer-service": Register("customer-service", "inbound", Retention(6, "month")),
    "telesales": Register("telesales", "outbound", Retention(1, "month")),
}


@dataclass
class Mixer:
    """AMI as the recorder sees it. ``refuse``: answer Response: Error; ``lose``: the answer
    is lost (the action ran); ``write``: MixMonitor writes the file."""

    dir: Path
    connected: bool = True
    refuse: bool = False
    lose: bool = False
    write: bool = True
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    asked: asyncio.Event = field(default_factory=asyncio.Event)
    back: asyncio.Event = field(default_factory=asyncio.Event)
    stop_asked: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_connected(self) -> None:
        await self.back.wait()

    def send_mix_monitor(self, channel: str, file: str, *, options: str = "", command: str = "") -> Any:
        """The action is written at the call, as AmiClient.send writes it; the answer comes later."""
        self.started.append(file)
        self.asked.set()
        return self._answer(file)

    async def _answer(self, file: str) -> None:
        if self.refuse:
            raise AmiError("MixMonitor", "No such channel")
        if self.write:
            await asyncio.to_thread(Path(file).write_bytes, b"RIFF" + bytes(1000))
        if self.lose:
            raise AmiUnavailable("connection lost")

    async def stop_mix_monitor(self, channel: str) -> None:
        self.stopped.append(channel)
        self.stop_asked.set()

    def close(self, file: str) -> None:
        """MixMonitor's thread ends: the post-process command leaves the marker."""
        marker_of(Path(file)).touch()


@dataclass
class Memory:
    pending: dict[uuid.UUID, StartRecording] = field(default_factory=dict)
    rows: list[tuple[Recording, str]] = field(default_factory=list)

    async def begin(self, rec: StartRecording) -> None:
        self.pending[rec.recording_id] = rec

    async def forget(self, recording_id: uuid.UUID) -> None:
        self.pending.pop(recording_id, None)

    async def put(self, row: Recording, retention: str) -> None:
        self.pending.pop(row.id, None)
        self.rows.append((row, retention))


@dataclass
class World:
    recorder: Recorder
    mixer: Mixer
    memory: Memory
    dir: Path


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    mixer, memory = Mixer(tmp_path), Memory()
    # No inotify here (None): the marker tells, as on a host without it; a short timeout
    # makes "never closed" quick.
    closes = FileClose(None, timeout=0.2)
    recorder = Recorder(
        mixer, memory, memory, REGISTERS, tmp_path, closes=closes, node="pbx1", clock=lambda: 100.0
    )
    yield World(recorder, mixer, memory, tmp_path)
    await recorder.drain(1)


def start(n: int = 1, register: str = "customer-service") -> StartRecording:
    return StartRecording(
        recording_id=uuid.UUID(int=n),
        call_id=f"L{n}",
        register=register,
        direction="inbound",
        channel_id=f"c{n}",
        channel_name=f"PJSIP/trunk-{n}",
        file_path=f"2026/12/01/{uuid.UUID(int=n)}.wav",
        answered_at=99.5,
        service_number="0300",
        customer_number_masked="+358401234***",
        agent_name="alice",
    )


def finish(n: int = 1, **kw: bool) -> FinishRecording:
    parties = Parties("0300", "+358401234***", None, "bob")
    return FinishRecording(uuid.UUID(int=n), ended_at=130.0, parties=parties, **kw)


def stored_row(n: int) -> Recording:
    """A finished row of recording ``n`` (10 s, one byte), as the outbox receives it."""
    return Recording.finished(
        start(n),
        started_at=100.0,
        ended_at=110.0,
        file_size=1,
        sha256="0" * 64,
        node="pbx1",
        recovered=False,
        interrupted=False,
        parties=Parties(None, None, None, None),
    )


def failed(reason: str, register: str = "customer-service") -> float:
    value = REGISTRY.get_sample_value(
        "callrec_recordings_failed_total", {"register": register, "reason": reason}
    )
    return value or 0.0


async def until_asked(w: World) -> None:
    await asyncio.wait_for(w.mixer.asked.wait(), 5)


async def test_a_recorded_call_gets_one_row_with_the_parties_at_its_end(world: World) -> None:
    w = world
    w.recorder.execute([start()])
    await until_asked(w)
    assert w.recorder.state_of(uuid.UUID(int=1)) in (State.STARTING, State.RECORDING)
    w.recorder.execute([StopRecording(uuid.UUID(int=1), "PJSIP/trunk-1", 128.0)])
    await asyncio.wait_for(w.mixer.stop_asked.wait(), 5)
    assert w.recorder.state_of(uuid.UUID(int=1)) is State.STOPPING
    w.mixer.close(w.mixer.started[0])
    w.recorder.execute([finish()])
    assert await w.recorder.drain(5) == 0
    ((row, retention),) = w.memory.rows
    assert retention == "6 months"
    assert row.agent_name == "bob"  # the agent at the end (a transfer changed it)
    assert (row.file_size, row.node, row.recovered, row.interrupted) == (1004, "pbx1", False, False)
    assert row.duration_seconds == 28.0  # clock 100 at the start, stop at 128
    assert w.mixer.stopped == ["PJSIP/trunk-1"]
    assert not marker_of(Path(w.mixer.started[0])).exists(), "the marker is removed with the row"
    assert w.memory.pending == {}


async def test_mixmonitor_is_asked_for_within_the_answer_handler_once_the_day_folder_exists(
    world: World,
) -> None:
    w = world
    w.recorder.execute([start(1)])
    await until_asked(w)  # the day's first call: its task makes the folder, then asks
    # The next answer of that day: the action is written before execute() returns, not by the
    # recording's task a loop turn later (docs/performance.md#head-loss).
    w.recorder.execute([start(2)])
    assert w.mixer.started == [str(w.dir / start(1).file_path), str(w.dir / start(2).file_path)]
    assert w.recorder.state_of(uuid.UUID(int=2)) is State.STARTING
    for n in (1, 2):
        w.mixer.close(w.mixer.started[n - 1])
        w.recorder.execute([finish(n)])
    assert await w.recorder.drain(5) == 0
    assert sorted(row.call_id for row, _ in w.memory.rows) == ["L1", "L2"]
    assert len(w.mixer.started) == 2, "asked once per recording"


async def test_a_refusal_of_an_early_mixmonitor_fails_the_recording_without_a_row(world: World) -> None:
    w = world
    w.recorder.execute([start(1)])
    await until_asked(w)
    w.mixer.refuse = True
    before = failed("mixmonitor_refused")
    w.recorder.execute([start(2)])
    assert len(w.mixer.started) == 2
    w.mixer.close(w.mixer.started[0])
    w.recorder.execute([finish(1)])
    assert await w.recorder.drain(5) == 0
    assert failed("mixmonitor_refused") == before + 1
    assert [row.call_id for row, _ in w.memory.rows] == ["L1"] and w.memory.pending == {}


async def test_ami_down_until_the_call_ended(world: World) -> None:
    w = world
    w.mixer.connected = False
    before = failed("ami_down")
    w.recorder.execute([start(), finish()])
    assert await w.recorder.drain(5) == 0
    assert failed("ami_down") == before + 1
    assert w.mixer.started == [] and w.memory.rows == [] and w.memory.pending == {}


async def test_ami_back_before_the_call_ended_records(world: World) -> None:
    w = world
    w.mixer.connected = False
    w.recorder.execute([start()])
    w.mixer.connected = True
    w.mixer.back.set()
    await until_asked(w)
    w.mixer.close(w.mixer.started[0])
    w.recorder.execute([finish()])
    assert await w.recorder.drain(5) == 0
    assert len(w.memory.rows) == 1


async def test_mixmonitor_refused(world: World) -> None:
    w = world
    w.mixer.refuse = True
    before = failed("mixmonitor_refused")
    w.recorder.execute([start()])
    await until_asked(w)
    assert await w.recorder.drain(5) == 0
    assert failed("mixmonitor_refused") == before + 1
    assert w.memory.rows == [] and w.memory.pending == {}


async def test_a_lost_answer_is_never_resent_and_the_file_decides(world: World) -> None:
    w = world
    w.mixer.lose = True
    w.recorder.execute([start()])
    await until_asked(w)
    w.mixer.close(w.mixer.started[0])
    w.recorder.execute([finish()])
    assert await w.recorder.drain(5) == 0
    assert len(w.mixer.started) == 1
    assert len(w.memory.rows) == 1


async def test_close_unconfirmed_still_writes_the_row(world: World) -> None:
    w = world
    before = failed("close_unconfirmed")
    w.recorder.execute([start()])
    await until_asked(w)
    w.recorder.execute([finish()])  # no marker ever comes
    assert await w.recorder.drain(5) == 0
    assert failed("close_unconfirmed") == before + 1
    assert len(w.memory.rows) == 1


async def test_no_file(world: World) -> None:
    w = world
    w.mixer.write = False
    before = failed("no_file")
    w.recorder.execute([start()])
    await until_asked(w)
    w.recorder.execute([finish()])
    assert await w.recorder.drain(5) == 0
    assert failed("no_file") == before + 1
    assert w.memory.rows == [] and w.memory.pending == {}


async def test_shutting_down(world: World) -> None:
    w = world
    await w.recorder.drain(1)
    before = failed("shutting_down")
    w.recorder.execute([start()])
    assert failed("shutting_down") == before + 1
    assert w.mixer.started == [] and w.recorder.active == 0


async def test_register_removed_mid_call_keeps_the_longest_retention(world: World) -> None:
    w = world
    w.recorder.execute([start(register="gone")])
    await until_asked(w)
    w.mixer.close(w.mixer.started[0])
    w.recorder.execute([finish()])
    assert await w.recorder.drain(5) == 0
    ((row, retention),) = w.memory.rows
    assert row.register_name == "gone" and retention == "6 months"


async def test_recovered_from_the_file_after_a_crash(world: World) -> None:
    w = world
    facts = start()
    path = w.dir / facts.file_path
    path.parent.mkdir(parents=True)
    path.write_bytes(b"RIFF" + bytes(10))
    marker_of(path).touch()
    w.recorder.recover(facts, interrupted=False)
    assert await w.recorder.drain(5) == 0
    ((row, _),) = w.memory.rows
    assert row.recovered and not row.interrupted and row.file_size == 14
    assert w.mixer.started == [], "a recovered recording never starts MixMonitor again"


async def test_the_outbox_sets_a_refused_row_aside(tmp_path: Path) -> None:
    class Refusing:
        async def execute(self, query: str, *args: object) -> str:
            raise asyncpg.CheckViolationError("new row violates check constraint")

    journal = await Journal.open(tmp_path)
    outbox = Outbox(journal, Refusing())
    task = asyncio.create_task(outbox.run())
    before = failed("row_rejected")
    try:
        row = stored_row(1)
        await outbox.put(row, "6 months")
        assert await outbox.flush(5)
        assert failed("row_rejected") == before + 1
        kept = journal.db.execute("SELECT recording_id, reason FROM rejected").fetchall()
        assert kept == [(str(row.id), "CheckViolationError")]
        assert await journal.depth() == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await journal.close()


@pytest.mark.parametrize("waiting", [3, 150])
async def test_the_outbox_depth_gauge_counts_every_row_waiting_for_the_database(
    tmp_path: Path, waiting: int
) -> None:
    """Below one batch (100 rows) the batch read is the count; past it the journal counts."""

    class Down:
        def __init__(self) -> None:
            self.asked = asyncio.Event()

        async def execute(self, query: str, *args: object) -> str:
            self.asked.set()
            raise ConnectionRefusedError("the database is down")

    journal = await Journal.open(tmp_path)
    for n in range(1, waiting + 1):
        row = stored_row(n)
        await journal.complete(row, "6 months")
    db = Down()
    task = asyncio.create_task(Outbox(journal, db).run())
    try:
        await asyncio.wait_for(db.asked.wait(), 5)  # the gauge is set before the first insert
        assert REGISTRY.get_sample_value("callrec_outbox_depth") == waiting
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await journal.close()
