"""Pausing a recording while a card number is read out (PCI DSS 4.0 3.3.1: card security codes
are not kept after authorisation, recordings included).

A pause mutes both directions of the call's MixMonitor (AMI ``MixMonitorMute``): the file gets
silence of the same length, so every offset in it stays true
(docs/asterisk.md#mixmonitormute-keeps-the-timeline). The paused spans go on the row as offsets
in seconds from the recording's start. A pause comes from the dialplan (``Set(CALLREC_PAUSE=1)``
on any channel of the call) or from the API; one left on longer than ``[daemon] max_pause``
resumes by itself, so a forgotten resume never silences the rest of a call
(docs/dialplan.md#pause-for-card-numbers).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import structlog

from callrec.access import audit
from callrec.asterisk.ami import AmiError, AmiUnavailable
from callrec.ops import metrics

log = structlog.get_logger("callrec.pause")

Source = Literal["dialplan", "api", "auto"]
AuditSink = Callable[[audit.Entry], Awaitable[object]]


class Muter(Protocol):
    async def mix_monitor_mute(self, channel: str, muted: bool) -> None: ...


class NotRecording(Exception):
    """No recording in progress with this id (it ended, or MixMonitor does not run yet)."""


class MuteFailed(Exception):
    """Asterisk refused or did not answer MixMonitorMute; the recording's state is unchanged."""


@dataclass(eq=False)
class _Live:
    channel_name: str
    register: str
    started_at: float
    spans: list[list[float]] = field(default_factory=list)
    """[start, end] offsets in seconds; the last one's end is missing while paused."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One MixMonitorMute at a time per recording, so the spans follow Asterisk's order."""
    auto_resume: asyncio.Task[None] | None = None

    @property
    def paused(self) -> bool:
        return bool(self.spans) and len(self.spans[-1]) == 1


MAX_HEAD = 2.0
"""Seconds of head beyond which a file's late start is not MixMonitor's (a gap mid-call)."""


def pause_head(first_sample: float | None, started_at: float) -> float:
    """How long after ``started_at`` (when callrec saw the recording start) the file's first
    sample was written: MixMonitor writes from the first frame after it attached, tens of ms
    later, more under load. The spans are offsets in the file, so ``finished`` moves them back
    by it; a head no start explains (unknown, negative, over MAX_HEAD) counts as none
    (docs/dialplan.md#pause-for-card-numbers)."""
    head = first_sample - started_at if first_sample is not None else 0.0
    return head if 0.0 < head < MAX_HEAD else 0.0


class Pauses:
    """The pause state of every recording in progress; owns the auto-resume timers."""

    def __init__(
        self,
        muter: Muter,
        *,
        max_pause: float,
        audit_sink: AuditSink | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._muter = muter
        self._max_pause = max_pause
        self._audit = audit_sink
        self._clock = clock
        self._live: dict[uuid.UUID, _Live] = {}
        self._tasks: set[asyncio.Task[object]] = set()

    def started(self, recording_id: uuid.UUID, channel_name: str, register: str, started_at: float) -> None:
        """MixMonitor runs on ``channel_name`` since ``started_at``: the recording may be paused."""
        self._live[recording_id] = _Live(channel_name, register, started_at)

    def is_paused(self, recording_id: uuid.UUID) -> bool:
        live = self._live.get(recording_id)
        return live is not None and live.paused

    def finished(
        self, recording_id: uuid.UUID, ended_at: float, *, head: float = 0.0
    ) -> tuple[tuple[float, float], ...]:
        """The recording ended: its paused spans, a pause still on closed at ``ended_at``.

        ``head``: seconds between ``started`` and the file's first sample (MixMonitor writes
        from the first frame after it attached, later under load): the spans are offsets in
        the file, where a listener hears the silence, so they move back by it."""
        live = self._live.pop(recording_id, None)
        if live is None:
            return ()
        if live.auto_resume is not None:
            live.auto_resume.cancel()
        end = max(ended_at - live.started_at, 0.0)

        def at(offset: float) -> float:
            return round(max(offset - head, 0.0), 3)

        return tuple((at(s[0]), at(s[1] if len(s) == 2 else max(end, s[0]))) for s in live.spans)

    def request(self, recording_id: uuid.UUID, paused: bool, at: float, source: Source) -> None:
        """From the event path (CALLREC_PAUSE): carried out by an owned task, never awaited there."""
        task = asyncio.create_task(
            self._quietly(recording_id, paused, at, source), name=f"pause-{recording_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quietly(self, recording_id: uuid.UUID, paused: bool, at: float, source: Source) -> None:
        with contextlib.suppress(NotRecording, MuteFailed):  # logged where raised
            await self.set(recording_id, paused, at=at, source=source)

    async def set(
        self, recording_id: uuid.UUID, paused: bool, *, at: float | None = None, source: Source, by: str = ""
    ) -> bool:
        """Pause or resume; False if it already was so. ``by`` names the API's user."""
        live = self._live.get(recording_id)
        if live is None:
            log.warning("pause of a recording not in progress", recording_id=str(recording_id), source=source)
            raise NotRecording(str(recording_id))
        async with live.lock:
            if self._live.get(recording_id) is not live:
                return False
            if live.paused == paused:
                if not paused:
                    # Unmute all the same: a pause from before a restart of callrec is still on
                    # in Asterisk but unknown here (docs/dialplan.md#pause-for-card-numbers).
                    with contextlib.suppress(AmiError, AmiUnavailable, ValueError):
                        await self._muter.mix_monitor_mute(live.channel_name, False)
                return False
            try:
                await self._muter.mix_monitor_mute(live.channel_name, paused)
            except (AmiError, AmiUnavailable, ValueError) as exc:
                log.error(
                    "mixmonitormute failed",
                    recording_id=str(recording_id),
                    paused=paused,
                    error=type(exc).__name__,
                    message=str(exc)[:200],
                )
                raise MuteFailed(str(exc)[:200]) from exc
            offset = round(max((self._clock() if at is None else at) - live.started_at, 0.0), 3)
            if paused:
                live.spans.append([offset])
                live.auto_resume = asyncio.create_task(
                    self._auto_resume(recording_id), name=f"auto-resume-{recording_id}"
                )
                self._tasks.add(live.auto_resume)
                live.auto_resume.add_done_callback(self._tasks.discard)
            else:
                live.spans[-1].append(max(offset, live.spans[-1][0]))
                if live.auto_resume is not None and live.auto_resume is not asyncio.current_task():
                    live.auto_resume.cancel()
                live.auto_resume = None
        action = "pause" if paused else "resume"
        metrics.RECORDINGS_PAUSES.labels(register=live.register, action=action, source=source).inc()
        log.info(f"recording {action}d", recording_id=str(recording_id), source=source, offset_seconds=offset)
        if source != "api":  # the API's own request is its audit row (http/middleware.py)
            await self._write_audit(action, recording_id, source, offset)
        return True

    async def _auto_resume(self, recording_id: uuid.UUID) -> None:
        # A timer, not a synchronisation: the pause may last at most max_pause.
        await asyncio.sleep(self._max_pause)
        log.warning("pause longer than max_pause: resumed", recording_id=str(recording_id))
        with contextlib.suppress(NotRecording, MuteFailed):
            await self.set(recording_id, False, source="auto")

    async def _write_audit(self, action: str, recording_id: uuid.UUID, source: Source, offset: float) -> None:
        if self._audit is None:
            return
        entry = audit.Entry(
            action,
            client=source,
            user_name=f"callrec:{source}",
            recording_id=recording_id,
            outcome="ok",
            detail={"source": source, "offset_seconds": offset},
        )
        try:
            await self._audit(entry)
        except Exception as exc:  # the pause stands; the missing row is counted and logged
            metrics.AUDIT_WRITE_FAILURES.inc()
            log.error("audit row of a pause not written", error=type(exc).__name__, action=action)

    async def close(self) -> None:
        """At shutdown: cancel the timers (a pause still on ends with its recording)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
