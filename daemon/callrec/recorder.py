"""Carries out the tracker's commands: MixMonitor through AMI, then the row in PostgreSQL.

Each recording is one owned task that walks start -> stop -> file closed -> row written.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import structlog

from callrec import metrics
from callrec.asterisk.ami import AmiError, AmiUnavailable
from callrec.calls import Command, FinishRecording, Problem, StartRecording, StopRecording
from callrec.config import Register
from callrec.store import RecordingRow, StoreUnavailable

log = structlog.get_logger("callrec.recorder")

# MixMonitor runs its post-process command only after it has closed the file, whatever
# ended the recording (StopMixMonitor or the channel going away; DESIGN.md). The marker
# it leaves is the one reliable "file complete" signal: there is no MixMonitorStop event
# for a plain hangup, and StopMixMonitor at hangup often answers "No such channel".
MARKER_SUFFIX = ".done"


class Mixer(Protocol):
    """What the recorder needs of the AMI client."""

    @property
    def connected(self) -> bool: ...
    async def wait_connected(self) -> None: ...
    async def mix_monitor(self, channel: str, file: str, *, options: str = "", command: str = "") -> None: ...
    async def stop_mix_monitor(self, channel: str) -> None: ...


class RowSink(Protocol):
    """Where finished rows go (the store)."""

    async def insert_recording(self, row: RecordingRow) -> bool: ...


@dataclass(eq=False)
class _Recording:
    start: StartRecording
    stop_at: float | None = None
    finish: FinishRecording | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)


def file_digest(path: Path) -> tuple[int, str]:
    """Size and sha256 of a closed recording (runs in a worker thread)."""
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            size += len(chunk)
            sha.update(chunk)
    return size, sha.hexdigest()


class Recorder:
    """Owns one task per recording in progress."""

    def __init__(
        self,
        mixer: Mixer,
        sink: RowSink,
        registers: Mapping[str, Register],
        recordings_dir: Path,
        *,
        file_wait_timeout: float = 30.0,
        node: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._mixer = mixer
        self._sink = sink
        self._registers = registers
        self._dir = recordings_dir
        self._file_wait_timeout = file_wait_timeout
        self._node = node
        self._clock = clock
        self._active: dict[uuid.UUID, _Recording] = {}
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
                    rec.stopped.set()
            elif isinstance(cmd, FinishRecording):
                rec = self._active.get(cmd.recording_id)
                if rec is not None:
                    rec.finish = cmd
                    rec.finished.set()
            elif isinstance(cmd, Problem):
                metrics.RECORDINGS_FAILED.labels(register=cmd.register or "", reason=cmd.kind).inc()
                log.warning("call not tracked as expected", problem=cmd.kind, call_id=cmd.call_id)

    def _start(self, cmd: StartRecording) -> None:
        if not self.accepting:
            log.warning("call answered during shutdown, left to the next start", call_id=cmd.call_id)
            metrics.RECORDINGS_FAILED.labels(register=cmd.register, reason="shutting_down").inc()
            return
        rec = _Recording(cmd)
        self._active[cmd.recording_id] = rec
        metrics.RECORDINGS_ACTIVE.set(len(self._active))
        self._idle.clear()
        task = asyncio.create_task(self._lifecycle(rec), name=f"recording-{cmd.recording_id}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recording task failed", error=repr(task.exception()))
        if not self._tasks:
            self._idle.set()

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` for recordings in progress to get their rows; cancel the rest.
        Returns how many were left unfinished."""
        self.accepting = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        left = len(self._tasks)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        return left

    async def _lifecycle(self, rec: _Recording) -> None:
        cmd = rec.start
        bound = log.bind(call_id=cmd.call_id, register=cmd.register, recording_id=str(cmd.recording_id))
        path = self._dir / cmd.file_path
        try:
            started_at = await self._start_mixmonitor(rec, path, bound)
            if started_at is not None and not rec.finished.is_set():
                await _first(rec.stopped, rec.finished)
                if not rec.finished.is_set():
                    # Closes the file at the hangup itself rather than when the channel is freed.
                    with contextlib.suppress(AmiError, AmiUnavailable):
                        await self._mixer.stop_mix_monitor(cmd.channel_name)
            await rec.finished.wait()
            if started_at is None:
                return
            await self._finalise(rec, path, started_at, bound)
        finally:
            self._active.pop(cmd.recording_id, None)
            metrics.RECORDINGS_ACTIVE.set(len(self._active))

    async def _start_mixmonitor(
        self, rec: _Recording, path: Path, bound: structlog.BoundLogger
    ) -> float | None:
        """Returns when MixMonitor was accepted, or ``None`` if it surely was not."""
        cmd = rec.start
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        while not self._mixer.connected:
            # Not sent yet, so waiting for AMI and sending then cannot record twice.
            await _first_of(self._mixer.wait_connected(), rec.finished.wait())
            if rec.finished.is_set():
                bound.error("call ended before AMI was back: not recorded")
                metrics.RECORDINGS_FAILED.labels(register=cmd.register, reason="ami_down").inc()
                return None
        try:
            await self._mixer.mix_monitor(cmd.channel_name, str(path), command=f"touch {path}{MARKER_SUFFIX}")
        except AmiError as exc:
            bound.error("mixmonitor refused", message=exc.message[:200])
            metrics.RECORDINGS_FAILED.labels(register=cmd.register, reason="mixmonitor_refused").inc()
            return None
        except AmiUnavailable:
            # The action may have run: never send it again (a second MixMonitor on the same
            # file would corrupt it). Whether a file appears decides at the end.
            bound.warning("mixmonitor answer lost; the file will tell")
        now = self._clock()
        metrics.RECORDINGS_STARTED.labels(register=cmd.register).inc()
        metrics.ANSWER_TO_MIXMONITOR.observe(max(now - cmd.answered_at, 0.0))
        bound.info("recording started", channel=cmd.channel_id)
        return now

    async def _finalise(
        self, rec: _Recording, path: Path, started_at: float, bound: structlog.BoundLogger
    ) -> None:
        cmd, fin = rec.start, rec.finish
        assert fin is not None
        marker = path.with_name(path.name + MARKER_SUFFIX)
        closed = await self._wait_for(marker)
        try:
            size, sha = await asyncio.to_thread(file_digest, path)
        except FileNotFoundError:
            bound.error("mixmonitor wrote no file")
            metrics.RECORDINGS_FAILED.labels(register=cmd.register, reason="no_file").inc()
            return
        if not closed:
            bound.warning("file not confirmed closed in time; hashed as it is")
            metrics.RECORDINGS_FAILED.labels(register=cmd.register, reason="close_unconfirmed").inc()
        ended_at = rec.stop_at if rec.stop_at is not None else fin.ended_at
        register = self._registers[cmd.register]
        row = RecordingRow(
            id=cmd.recording_id,
            call_id=cmd.call_id,
            register_name=cmd.register,
            direction=cmd.direction,
            started_at=datetime.fromtimestamp(started_at, UTC),
            ended_at=datetime.fromtimestamp(max(ended_at, started_at), UTC),
            service_number=fin.service_number,
            customer_number_masked=fin.customer_number_masked,
            customer_number_hmac=fin.customer_number_hmac,
            agent_name=fin.agent_name,
            file_path=cmd.file_path,
            file_size=size,
            sha256=sha,
            retention=register.retention.interval,
            node=self._node,
        )
        await self._write(row, bound)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(marker.unlink)
        metrics.RECORDINGS_COMPLETED.labels(register=cmd.register).inc()
        bound.info("recording stored", duration_seconds=float(row.duration_seconds), bytes=size)

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

    async def _write(self, row: RecordingRow, bound: structlog.BoundLogger) -> None:
        delay = 0.5
        while True:
            t0 = time.perf_counter()
            try:
                await self._sink.insert_recording(row)
            except StoreUnavailable as exc:
                metrics.DB_WRITE_RETRIES.inc()
                bound.warning("database write failed; retrying", error=str(exc)[:200], retry_in=delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 30.0)
                continue
            metrics.DB_WRITE_SECONDS.observe(time.perf_counter() - t0)
            return


async def _first(*events: asyncio.Event) -> None:
    await _first_of(*(e.wait() for e in events))


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
