"""Carries out the tracker's commands: MixMonitor through AMI, then the row.

Each recording is one owned task that walks journal -> MixMonitor -> stop -> file closed ->
row in the outbox. The journal entry is written before MixMonitor is asked, so a crash at
any point leaves either a live call to adopt or a file to recover a row from.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import structlog

from callrec.asterisk.ami import AmiError, AmiUnavailable
from callrec.config import Register
from callrec.db.pool import RecordingRow
from callrec.ops import metrics
from callrec.recording.file_close import CloseWatch
from callrec.recording.journal import PendingRecording
from callrec.recording.tracker import Command, FinishRecording, Problem, StartRecording, StopRecording

log = structlog.get_logger("callrec.recorder")

# MixMonitor runs its post-process command only after it has closed the file, whatever
# ended the recording (StopMixMonitor or the channel going away; DESIGN.md). The marker
# it leaves is the one reliable "file complete" signal: there is no MixMonitorStop event
# for a plain hangup, and StopMixMonitor at hangup often answers "No such channel".
MARKER_SUFFIX = ".done"
# Where Linux inotify is there (closewatch.py), the file's own close is the signal and Asterisk
# runs no command: its fork() per call cost the PBX more than the call itself. A recording
# still open is written every 20 ms, so a file this many seconds quiet is closed.
_QUIET_SECONDS = 2.0


class Mixer(Protocol):
    """What the recorder needs of the AMI client."""

    @property
    def connected(self) -> bool: ...
    async def wait_connected(self) -> None: ...
    async def mix_monitor(self, channel: str, file: str, *, options: str = "", command: str = "") -> None: ...
    async def stop_mix_monitor(self, channel: str) -> None: ...


class StartRefused(Exception):
    """MixMonitor surely did not start (raised by an ``Attach``)."""


class AttachUnavailable(Exception):
    """Raised by an ``Attach`` that can no longer reach the call (the AGI session is over)
    before it asked for anything: MixMonitor is then started through AMI after all."""


Attach = Callable[[str, str], Awaitable[None]]
"""AGI mode: runs MixMonitor(file, command) on the call's own channel (no command if ""). Raises
StartRefused if it surely did not run; any other exception leaves that open (the file decides)."""


class PendingLog(Protocol):
    """Where recordings in progress are remembered (the journal)."""

    async def begin(self, rec: PendingRecording) -> None: ...
    async def forget(self, recording_id: uuid.UUID) -> None: ...


class RowSink(Protocol):
    """Where finished rows go (the outbox); also drops the pending entry."""

    async def put(self, row: RecordingRow) -> None: ...


@dataclass(eq=False)
class _Recording:
    facts: PendingRecording
    stop_at: float | None = None
    """When the recorded channel began to hang up (StopRecording)."""
    finish: FinishRecording | None = None
    """Set once the recorded channel is gone (FinishRecording)."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set whenever ``stop_at`` or ``finish`` is: one Event per recording (5,000 calls up hold
    5,000 of them; an Event is ~0.9 KB), never a task per thing waited for."""
    attach: Attach | None = None
    """AGI mode: how MixMonitor is started instead of the AMI action."""
    attached: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    """True once MixMonitor runs (or may run); False if it surely does not."""
    closed: asyncio.Event | None = None
    """Set when Asterisk closes the file (inotify); None: wait for the marker instead."""
    uses_marker: bool = True
    """MixMonitor was (or may have been) given the marker command, so delete the marker."""


def file_digest(path: Path) -> tuple[int, str]:
    """Size and sha256 of a closed recording (runs in a worker thread)."""
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            size += len(chunk)
            sha.update(chunk)
    return size, sha.hexdigest()


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


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
        file_wait_timeout: float = 30.0,
        node: str = "",
        clock: Callable[[], float] = time.time,
        closes: CloseWatch | None = None,
    ) -> None:
        self._mixer = mixer
        self._closes = closes
        self._pending = pending
        self._sink = sink
        self._registers = registers
        self._dir = recordings_dir
        self._file_wait_timeout = file_wait_timeout
        self._node = node
        self._clock = clock
        self._active: dict[uuid.UUID, _Recording] = {}
        self._made_dirs: set[Path] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.accepting = True
        """Cleared at shutdown: calls answered during the drain are left to the next start."""

    @property
    def active(self) -> int:
        return len(self._active)

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

    def _start(self, cmd: StartRecording, attach: Attach | None = None) -> _Recording | None:
        if not self.accepting:
            log.warning(
                "call answered during shutdown, left to the next start",
                call_id=cmd.call_id,
                register=cmd.register,
            )
            metrics.RECORDINGS_FAILED.labels(register=cmd.register, reason="shutting_down").inc()
            return None
        facts = PendingRecording(
            recording_id=cmd.recording_id,
            call_id=cmd.call_id,
            register=cmd.register,
            direction=cmd.direction,
            channel_id=cmd.channel_id,
            channel_name=cmd.channel_name,
            file_path=cmd.file_path,
            answered_at=cmd.answered_at,
            service_number=cmd.service_number,
            customer_number_masked=cmd.customer_number_masked,
            customer_number_hmac=cmd.customer_number_hmac,
            agent_name=cmd.agent_name,
        )
        rec = _Recording(facts, attach=attach)
        self._spawn(rec, self._lifecycle)
        return rec

    def adopt(self, facts: PendingRecording) -> None:
        """Take over a recording a previous run started on a channel that is still up."""
        metrics.RECORDINGS_ADOPTED.inc()
        log.info(
            "recording adopted",
            call_id=facts.call_id,
            register=facts.register,
            recording_id=str(facts.recording_id),
        )
        rec = _Recording(facts)
        rec.attached.set_result(True)
        self._spawn(rec, self._resume)

    def recover(self, facts: PendingRecording, *, interrupted: bool) -> None:
        """A recording whose call ended while no daemon watched: its row comes from the file."""
        rec = _Recording(facts)
        rec.finish = FinishRecording(
            recording_id=facts.recording_id,
            ended_at=self._clock(),
            service_number=facts.service_number,
            customer_number_masked=facts.customer_number_masked,
            customer_number_hmac=facts.customer_number_hmac,
            agent_name=facts.agent_name,
            missed_end=True,
            interrupted=interrupted,
        )
        rec.changed.set()
        rec.attached.set_result(False)
        self._spawn(rec, self._resume)

    def _spawn(self, rec: _Recording, body: Callable[[_Recording], object]) -> None:
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

    def _bound(self, facts: PendingRecording) -> structlog.BoundLogger:
        return log.bind(call_id=facts.call_id, register=facts.register, recording_id=str(facts.recording_id))  # type: ignore[no-any-return]

    async def _lifecycle(self, rec: _Recording) -> None:
        facts = rec.facts
        bound = self._bound(facts)
        path = self._dir / facts.file_path
        try:
            if path.parent not in self._made_dirs:
                # Once per day folder: a thread hop per call would delay every MixMonitor.
                await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
                self._made_dirs = {path.parent}
            if self._expect_close(rec, path):
                rec.uses_marker = False
            await self._pending.begin(facts)
            started_at = await self._start_mixmonitor(rec, path, bound)
            if not rec.attached.done():
                rec.attached.set_result(started_at is not None)
            if started_at is None:
                await self._pending.forget(facts.recording_id)
                return
            await self._until_end(rec)
            await self._finalise(rec, path, started_at, bound)
        finally:
            if not rec.attached.done():
                rec.attached.set_result(False)
            self._forget(facts.recording_id)

    async def _resume(self, rec: _Recording) -> None:
        facts = rec.facts
        try:
            self._expect_close(rec, self._dir / facts.file_path)
            await self._until_end(rec)
            started = facts.started_at if facts.started_at is not None else facts.answered_at
            await self._finalise(rec, self._dir / facts.file_path, started, self._bound(facts))
        finally:
            self._forget(facts.recording_id)

    def _forget(self, recording_id: uuid.UUID) -> None:
        rec = self._active.pop(recording_id, None)
        if rec is not None and rec.closed is not None and self._closes is not None:
            self._closes.forget(self._dir / rec.facts.file_path)
        metrics.RECORDINGS_ACTIVE.set(len(self._active))

    async def _until_end(self, rec: _Recording) -> None:
        while rec.finish is None and rec.stop_at is None:
            rec.changed.clear()
            await rec.changed.wait()
        if rec.finish is None:
            # Closes the file at the hangup itself rather than when the channel is freed.
            with contextlib.suppress(AmiError, AmiUnavailable, ValueError):
                await self._mixer.stop_mix_monitor(rec.facts.channel_name)
        await _finished(rec)

    async def _start_mixmonitor(
        self, rec: _Recording, path: Path, bound: structlog.BoundLogger
    ) -> float | None:
        """Returns when MixMonitor was accepted, or ``None`` if it surely was not."""
        facts = rec.facts
        if rec.attach is not None:
            try:
                return await self._attach_in_call(rec, rec.attach, path, bound)
            except AttachUnavailable:
                bound.warning("agi session over before mixmonitor; starting it through ami")
        while not self._mixer.connected:
            # Not sent yet, so waiting for AMI and sending then cannot record twice.
            await _first_of(self._mixer.wait_connected(), _finished(rec))
            if rec.finish is not None:
                bound.error("call ended before AMI was back: not recorded")
                metrics.RECORDINGS_FAILED.labels(register=facts.register, reason="ami_down").inc()
                return None
        try:
            await self._mixer.mix_monitor(
                facts.channel_name,
                str(path),
                command=f"touch {path}{MARKER_SUFFIX}" if rec.uses_marker else "",
            )
        except (AmiError, ValueError) as exc:
            bound.error("mixmonitor refused", message=str(exc)[:200])
            metrics.RECORDINGS_FAILED.labels(register=facts.register, reason="mixmonitor_refused").inc()
            return None
        except AmiUnavailable:
            # The action may have run: never send it again (a second MixMonitor on the same
            # file would corrupt it). Whether a file appears decides at the end.
            bound.warning("mixmonitor answer lost; the file will tell")
        return self._started(facts, bound, "ami")

    async def _attach_in_call(
        self, rec: _Recording, attach: Attach, path: Path, bound: structlog.BoundLogger
    ) -> float | None:
        facts = rec.facts
        try:
            await attach(str(path), f"touch {path}{MARKER_SUFFIX}" if rec.uses_marker else "")
        except StartRefused as exc:
            bound.error("mixmonitor refused", message=str(exc)[:200], via="agi")
            metrics.RECORDINGS_FAILED.labels(register=facts.register, reason="mixmonitor_refused").inc()
            return None
        except AttachUnavailable:
            raise
        except Exception as exc:
            # As with a lost AMI answer: it may have run, so it is never tried again.
            bound.warning("mixmonitor answer lost; the file will tell", error=type(exc).__name__, via="agi")
        return self._started(facts, bound, "agi")

    def _started(self, facts: PendingRecording, bound: structlog.BoundLogger, via: str) -> float:
        now = self._clock()
        metrics.RECORDINGS_STARTED.labels(register=facts.register).inc()
        metrics.ANSWER_TO_MIXMONITOR.observe(max(now - facts.answered_at, 0.0))
        bound.info("recording started", channel=facts.channel_id, via=via)
        return now

    async def _finalise(
        self, rec: _Recording, path: Path, started_at: float, bound: structlog.BoundLogger
    ) -> None:
        facts, fin = rec.facts, rec.finish
        assert fin is not None
        marker = path.with_name(path.name + MARKER_SUFFIX)
        # After an Asterisk restart no MixMonitor survives to leave a marker: the file is as
        # the crash left it. Otherwise wait for Asterisk to close it.
        closed = (
            await asyncio.to_thread(marker.exists) if fin.interrupted else await self._wait_closed(rec, path)
        )
        try:
            size, sha = await asyncio.to_thread(file_digest, path)
        except FileNotFoundError:
            bound.error("mixmonitor wrote no file")
            metrics.RECORDINGS_FAILED.labels(register=facts.register, reason="no_file").inc()
            await self._pending.forget(facts.recording_id)
            return
        if not closed and not fin.interrupted:
            bound.warning("file not confirmed closed in time; hashed as it is")
            metrics.RECORDINGS_FAILED.labels(register=facts.register, reason="close_unconfirmed").inc()
        if fin.missed_end:
            # The end was not seen: the file's last write is the best evidence of it.
            ended_at = (
                await asyncio.to_thread(_mtime, marker)
                or await asyncio.to_thread(_mtime, path)
                or fin.ended_at
            )
            metrics.RECORDINGS_RECOVERED.labels(
                register=facts.register, interrupted=str(fin.interrupted).lower()
            ).inc()
        else:
            ended_at = rec.stop_at if rec.stop_at is not None else fin.ended_at
        row = RecordingRow(
            id=facts.recording_id,
            call_id=facts.call_id,
            register_name=facts.register,
            direction=facts.direction,
            started_at=datetime.fromtimestamp(started_at, UTC),
            ended_at=datetime.fromtimestamp(max(ended_at, started_at), UTC),
            service_number=fin.service_number,
            customer_number_masked=fin.customer_number_masked,
            customer_number_hmac=fin.customer_number_hmac,
            agent_name=fin.agent_name,
            file_path=facts.file_path,
            file_size=size,
            sha256=sha,
            retention=self._retention(facts.register, bound),
            node=self._node,
            recovered=fin.missed_end and not fin.interrupted,
            interrupted=fin.interrupted,
        )
        await self._sink.put(row)
        if rec.uses_marker:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(marker.unlink)
        bound.info("recording finished", duration_seconds=float(row.duration_seconds), bytes=size)

    def _retention(self, register: str, bound: structlog.BoundLogger) -> str:
        known = self._registers.get(register)
        if known is not None:
            return known.retention.interval
        # The register left the config while the call was recorded: keep the row as long as
        # the longest register would, rather than destroy it early.
        bound.warning("register no longer configured; longest retention applied")
        return max(self._registers.values(), key=lambda r: r.retention.approx_days).retention.interval

    def _expect_close(self, rec: _Recording, path: Path) -> bool:
        """Ask inotify for the file's close; False where it cannot tell (then: the marker)."""
        if self._closes is None or not self._closes.watch(path.parent):
            return False
        rec.closed = self._closes.expect(path)
        return True

    async def _wait_closed(self, rec: _Recording, path: Path) -> bool:
        """True once Asterisk has closed the file; False if not confirmed within the timeout."""
        marker = path.with_name(path.name + MARKER_SUFFIX)
        if rec.closed is None:
            return await self._wait_for(marker)
        assert rec.finish is not None
        if rec.finish.missed_end and not rec.closed.is_set():
            # The call ended while no daemon watched: MixMonitor closed the file right after,
            # so its close came before our watch, unless that end was a moment ago.
            mtime = await asyncio.to_thread(_mtime, path)
            if mtime is not None and self._clock() - mtime > _QUIET_SECONDS:
                return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rec.closed.wait(), self._file_wait_timeout)
            return True
        # A recording a previous run started with the marker command may have closed unseen.
        return rec.uses_marker and await asyncio.to_thread(marker.exists)

    async def _wait_for(self, marker: Path) -> bool:
        # No file-system notification is portable to every Asterisk host; the marker
        # usually appears within milliseconds of the hangup, so a short backoff is cheap.
        deadline = time.monotonic() + self._file_wait_timeout
        delay = 0.01
        while True:
            if await asyncio.to_thread(marker.exists):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


async def _finished(rec: _Recording) -> None:
    while rec.finish is None:
        rec.changed.clear()
        await rec.changed.wait()


async def _first_of(*aws: object) -> None:
    """Await whichever finishes first; cancel and reap the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
