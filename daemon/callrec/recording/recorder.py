"""Carries out the tracker's commands: one owned task per recording walks it through its
lifecycle (recording/lifecycle.py) from the journal to the row.

The journal entry is written before MixMonitor is asked, so a crash at any point leaves either
a live call to adopt or a file to recover a row from (docs/architecture.md#nothing-lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import structlog

from callrec import wav
from callrec.config import Register
from callrec.ops import metrics
from callrec.recording import mixmonitor
from callrec.recording.facts import Parties, Recording, StartRecording
from callrec.recording.file_close import FileClose, mtime_of
from callrec.recording.in_flight import InFlight
from callrec.recording.lifecycle import Failure, Lifecycle, State
from callrec.recording.mixmonitor import Attach, Mixer
from callrec.recording.pause import Pauses, pause_head
from callrec.recording.tracker import Command, FinishRecording, PauseRecording, Problem, StopRecording

log = structlog.get_logger("callrec.recorder")


class PendingLog(Protocol):
    """Where recordings in progress are remembered (the journal)."""

    async def begin(self, rec: StartRecording) -> None: ...
    async def forget(self, recording_id: uuid.UUID) -> None: ...


class RowSink(Protocol):
    """Where finished rows go (the outbox); also drops the pending entry."""

    async def put(self, row: Recording, retention: str) -> None: ...


class Recorder:
    """Owns one task per recording in progress."""

    def __init__(
        self,
        mixer: Mixer,
        pending: PendingLog,
        sink: RowSink,
        registers: Mapping[str, Register],
        recordings_dir: Path,
        *,
        closes: FileClose,
        node: str = "",
        clock: Callable[[], float] = time.time,
        pauses: Pauses | None = None,
    ) -> None:
        self._mixer = mixer
        self._closes = closes
        self._pending = pending
        self._sink = sink
        self._registers = registers
        self._dir = recordings_dir
        self._node = node
        self._clock = clock
        self.pauses = pauses
        """Pause and resume (recording/pause.py); None: CALLREC_PAUSE is ignored."""
        self._active: dict[uuid.UUID, InFlight] = {}
        self._made_dirs: set[Path] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.accepting = True
        """Cleared at shutdown: calls answered during the drain are left to the next start."""

    @property
    def active(self) -> int:
        return len(self._active)

    def state_of(self, recording_id: uuid.UUID) -> State | None:
        rec = self._active.get(recording_id)
        return rec.life.state if rec is not None else None

    def execute(self, commands: list[Command]) -> None:
        """Take the tracker's commands; never blocks, never raises."""
        for cmd in commands:
            if isinstance(cmd, StartRecording):
                self._start(cmd)
            elif isinstance(cmd, StopRecording):
                rec = self._active.get(cmd.recording_id)
                if rec is not None:
                    rec.stop_at = cmd.at
                    rec.changed.set()
            elif isinstance(cmd, FinishRecording):
                rec = self._active.get(cmd.recording_id)
                if rec is not None:
                    rec.finish = cmd
                    rec.changed.set()
            elif isinstance(cmd, PauseRecording):
                if self.pauses is not None:
                    self.pauses.request(cmd.recording_id, cmd.paused, cmd.at, "dialplan")
            elif isinstance(cmd, Problem):
                metrics.RECORDINGS_FAILED.labels(register=cmd.register or "", reason=cmd.kind).inc()
                log.warning(
                    "call not tracked as expected",
                    problem=cmd.kind,
                    call_id=cmd.call_id,
                    register=cmd.register,
                )

    async def record_in_call(self, cmd: StartRecording, attach: Attach) -> bool:
        """AGI mode: start the recording through ``attach`` (the call's dialplan waits for it);
        True once MixMonitor runs. Stop, file and row then go as in the event mode."""
        rec = self._start(cmd, attach)
        return rec is not None and await asyncio.shield(rec.attached)

    async def wait_attached(self, recording_id: uuid.UUID) -> bool:
        """Wait until the MixMonitor of a recording in progress runs; False if it is not ours
        (any more) or surely did not start."""
        rec = self._active.get(recording_id)
        return rec is not None and await asyncio.shield(rec.attached)

    def _start(self, cmd: StartRecording, attach: Attach | None = None) -> InFlight | None:
        rec = InFlight(cmd, attach=attach)
        if not self.accepting:
            log.warning(
                "call answered during shutdown, left to the next start",
                call_id=cmd.call_id,
                register=cmd.register,
            )
            self._failed(rec, "shutting_down")
            return None
        if attach is None:
            self._send_early(rec)
        self._spawn(rec, self._lifecycle)
        return rec

    def _send_early(self, rec: InFlight) -> None:
        """Event mode: from the handler of the answer event itself, write the journal entry's
        request and the MixMonitor action before the next event is read
        (mixmonitor.send_now). Left to the task when the day's folder is new or AMI is down."""
        path = self._dir / rec.facts.file_path
        if path.parent not in self._made_dirs or not self._mixer.connected:
            return
        self._prepare(rec, path)
        assert rec.close is not None
        rec.sent = mixmonitor.send_now(self._mixer, rec.facts.channel_name, path, rec.close.command)

    def _prepare(self, rec: InFlight, path: Path) -> None:
        rec.close = self._closes.expect(path, ours=True)
        # MixMonitor is asked for while the journal entry is being written, not after its fsync
        # (tens of ms on a busy disk, all of it lost audio). A kill -9 in between leaves a
        # recording without an entry, which the next start finds by its MIXMONITOR_FILENAME
        # (docs/architecture.md#the-journal). AGI holds the call anyway.
        rec.journaled = asyncio.ensure_future(self._pending.begin(rec.facts))
        rec.life.to(State.JOURNALED)
        rec.life.to(State.STARTING)

    def adopt(self, facts: StartRecording) -> None:
        """Take over a recording a previous run started on a channel that is still up."""
        metrics.RECORDINGS_ADOPTED.inc()
        log.info(
            "recording adopted",
            call_id=facts.call_id,
            register=facts.register,
            recording_id=str(facts.recording_id),
        )
        rec = InFlight(facts, life=Lifecycle.adopted())
        rec.settle(True)
        self._spawn(rec, self._resume)

    def recover(self, facts: StartRecording, *, interrupted: bool) -> None:
        """A recording whose call ended while no daemon watched: its row comes from the file."""
        rec = InFlight(facts, life=Lifecycle.recovered())
        rec.finish = FinishRecording(
            recording_id=facts.recording_id,
            ended_at=self._clock(),
            parties=_parties_of(facts),
            missed_end=True,
            interrupted=interrupted,
        )
        rec.settle(False)
        self._spawn(rec, self._resume)

    def _spawn(self, rec: InFlight, body: Callable[[InFlight], object]) -> None:
        rid = rec.facts.recording_id
        self._active[rid] = rec
        metrics.RECORDINGS_ACTIVE.set(len(self._active))
        self._idle.clear()
        task: asyncio.Task[None] = asyncio.create_task(body(rec), name=f"recording-{rid}")  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The task's name carries the recording id; the journal still holds the recording.
            log.error("recording task failed", task=task.get_name(), error=type(task.exception()).__name__)
        if not self._tasks:
            self._idle.set()

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` for recordings in progress to get their rows; cancel the
        rest (they stay in the journal for the next start). Returns how many were left."""
        self.accepting = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        left = len(self._tasks)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        return left

    @staticmethod
    def _bound(facts: StartRecording) -> structlog.typing.FilteringBoundLogger:
        bound: structlog.typing.FilteringBoundLogger = log.bind(
            call_id=facts.call_id, register=facts.register, recording_id=str(facts.recording_id)
        )
        return bound

    def _failed(self, rec: InFlight, reason: Failure) -> None:
        rec.life.fail(reason)
        metrics.RECORDINGS_FAILED.labels(register=rec.facts.register, reason=reason).inc()

    # --- the lifecycle ----------------------------------------------------------------------

    async def _lifecycle(self, rec: InFlight) -> None:
        facts = rec.facts
        bound = self._bound(facts)
        path = self._dir / facts.file_path
        try:
            if rec.journaled is None:
                if path.parent not in self._made_dirs:
                    # Once per day folder: a thread hop per call would delay every MixMonitor.
                    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
                    self._made_dirs = {path.parent}
                self._prepare(rec, path)
            assert rec.journaled is not None and rec.close is not None
            if rec.attach is not None:
                await rec.journaled  # AGI holds the call anyway: the entry comes first
            via, failure = await mixmonitor.start(
                self._mixer,
                rec.attach,
                facts.channel_name,
                path,
                rec.close.command,
                ended=rec.until_finished,
                has_ended=lambda: rec.finish is not None,
                bound=bound,
                sent=rec.sent,
            )
            await rec.journaled
            if failure is not None:
                rec.settle(False)
                self._failed(rec, failure)
                await self._pending.forget(facts.recording_id)
                return
            rec.settle(True)
            started_at = self._clock()
            rec.life.to(State.RECORDING)
            metrics.RECORDINGS_STARTED.labels(register=facts.register).inc()
            metrics.ANSWER_TO_MIXMONITOR.observe(max(started_at - facts.answered_at, 0.0))
            bound.info("recording started", channel=facts.channel_id, via=via)
            if self.pauses is not None:
                self.pauses.started(facts.recording_id, facts.channel_name, facts.register, started_at)
            await self._until_end(rec)
            await self._finalise(rec, path, started_at, bound)
        finally:
            rec.settle(False)
            if inspect.iscoroutine(rec.sent):
                rec.sent.close()  # cancelled before it was awaited: no "never awaited" warning
            await self._forget(rec)

    async def _resume(self, rec: InFlight) -> None:
        facts = rec.facts
        path = self._dir / facts.file_path
        try:
            rec.close = self._closes.expect(path, ours=False)
            if rec.life.state is State.RECORDING:
                if self.pauses is not None:
                    self.pauses.started(
                        facts.recording_id, facts.channel_name, facts.register, facts.answered_at
                    )
                await self._until_end(rec)
            await self._finalise(rec, path, facts.answered_at, self._bound(facts))
        finally:
            await self._forget(rec)

    async def _until_end(self, rec: InFlight) -> None:
        while rec.finish is None and rec.stop_at is None:
            rec.changed.clear()
            await rec.changed.wait()
        if rec.finish is None:
            rec.life.to(State.STOPPING)
            await mixmonitor.stop(self._mixer, rec.facts.channel_name)
        await rec.until_finished()
        rec.life.to(State.ENDED)

    async def _finalise(
        self, rec: InFlight, path: Path, started_at: float, bound: structlog.typing.FilteringBoundLogger
    ) -> None:
        facts, fin, close = rec.facts, rec.finish, rec.close
        assert fin is not None and close is not None
        closed = await self._closes.wait(close, missed_end=fin.missed_end, interrupted=fin.interrupted)
        rec.life.to(State.CLOSED)
        try:
            size, sha, first_sample = await asyncio.to_thread(
                wav.examine, path, first_sample=not fin.missed_end
            )
        except FileNotFoundError:
            bound.error("mixmonitor wrote no file")
            self._failed(rec, "no_file")
            await self._pending.forget(facts.recording_id)
            return
        if not closed and not fin.interrupted:
            bound.warning("file not confirmed closed in time; hashed as it is")
            metrics.RECORDINGS_FAILED.labels(register=facts.register, reason="close_unconfirmed").inc()
        if fin.missed_end:
            # The end was not seen: the file's last write is the best evidence of it.
            ended_at = (
                await asyncio.to_thread(mtime_of, close.marker)
                or await asyncio.to_thread(mtime_of, path)
                or fin.ended_at
            )
            metrics.RECORDINGS_RECOVERED.labels(
                register=facts.register, interrupted=str(fin.interrupted).lower()
            ).inc()
        else:
            ended_at = rec.stop_at if rec.stop_at is not None else fin.ended_at
        # The file's last write and its length tell when its first sample was written, where
        # the clock could not (docs/architecture.md#the-file-knows-its-length).
        head = pause_head(first_sample, started_at)
        paused = self.pauses.finished(facts.recording_id, ended_at, head=head) if self.pauses else ()
        if first_sample is not None and first_sample < started_at - 0.5:
            # Adopted after MixMonitor had run a while (started before this daemon saw it).
            started_at = first_sample
        row = Recording.finished(
            facts,
            started_at=started_at,
            ended_at=ended_at,
            file_size=size,
            sha256=sha,
            node=self._node,
            recovered=fin.missed_end and not fin.interrupted,
            interrupted=fin.interrupted,
            parties=fin.parties,
            paused=paused,
        )
        await self._sink.put(row, self._retention(facts.register, bound))
        rec.life.to(State.STORED)
        bound.info("recording finished", duration_seconds=row.duration_seconds, bytes=size)

    async def _forget(self, rec: InFlight) -> None:
        self._active.pop(rec.facts.recording_id, None)
        if self.pauses is not None:
            self.pauses.finished(rec.facts.recording_id, self._clock())
        metrics.RECORDINGS_ACTIVE.set(len(self._active))
        if rec.close is not None:
            await self._closes.release(rec.close, remove_marker=rec.life.state is State.STORED)

    def _retention(self, register: str, bound: structlog.typing.FilteringBoundLogger) -> str:
        known = self._registers.get(register)
        if known is not None:
            return known.retention.interval
        # The register left the config while the call was recorded: keep the row as long as
        # the longest register would, rather than destroy it early.
        bound.warning("register no longer configured; longest retention applied")
        return max(self._registers.values(), key=lambda r: r.retention.approx_days).retention.interval


def _parties_of(facts: StartRecording) -> Parties:
    return Parties(
        facts.service_number, facts.customer_number_masked, facts.customer_number_hmac, facts.agent_name
    )
