"""Starting MixMonitor on the recorded channel: through AMI (event mode) or through the call's
own AGI session (AGI mode), falling back to AMI when that session is already over.

The one rule: a MixMonitor that may have run is never asked for again. Two MixMonitors on one
file corrupt it, and a lost answer does not mean the action did not run; whether a file
appears decides at the end (docs/architecture.md#nothing-lost).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import structlog

from callrec.asterisk.ami import AmiError, AmiUnavailable
from callrec.recording.lifecycle import Failure


class Mixer(Protocol):
    """What the recorder needs of the AMI client."""

    @property
    def connected(self) -> bool: ...
    async def wait_connected(self) -> None: ...
    def send_mix_monitor(
        self, channel: str, file: str, *, options: str = "", command: str = ""
    ) -> Awaitable[object]: ...
    async def stop_mix_monitor(self, channel: str) -> None: ...


class StartRefused(Exception):
    """MixMonitor surely did not start (raised by an ``Attach``)."""


class AttachUnavailable(Exception):
    """Raised by an ``Attach`` that can no longer reach the call (the AGI session is over)
    before it asked for anything: MixMonitor is then started through AMI after all."""


Attach = Callable[[str, str], Awaitable[None]]
"""AGI mode: runs MixMonitor(file, command) on the call's own channel (no command if ""). Raises
StartRefused if it surely did not run; any other exception leaves that open (the file decides)."""


def send_now(mixer: Mixer, channel_name: str, path: Path, command: str) -> Awaitable[object] | None:
    """Event mode: write the MixMonitor action at once, from the event handler that saw the
    answer, rather than from the recording's task a loop turn later: at 50 answers in one burst
    that turn waits behind the other 49 calls' events and was p50 5-13 ms, p99 21-39 ms of lost
    audio (docs/performance.md#head-loss). None if AMI is down: ``start`` then waits for it."""
    return _send(mixer, channel_name, path, command) if mixer.connected else None


def _send(mixer: Mixer, channel_name: str, path: Path, command: str) -> Awaitable[object]:
    try:
        return mixer.send_mix_monitor(channel_name, str(path), command=command)
    except (AmiUnavailable, ValueError) as exc:
        return _raise(exc)  # judged with the answer, in one place (_answered)


async def _raise(exc: Exception) -> object:
    raise exc


async def start(
    mixer: Mixer,
    attach: Attach | None,
    channel_name: str,
    path: Path,
    command: str,
    *,
    ended: Callable[[], Awaitable[None]],
    has_ended: Callable[[], bool],
    bound: structlog.typing.FilteringBoundLogger,
    sent: Awaitable[object] | None = None,
) -> tuple[str | None, Failure | None]:
    """Ask for MixMonitor once. Returns ``(via, None)`` when it runs or may run, where ``via``
    is "ami" or "agi"; ``(None, reason)`` when it surely does not. ``ended`` returns once the
    call is over and ``has_ended`` says so (a call may end while AMI is down). ``sent``: the
    answer of an action ``send_now`` already wrote, awaited in place of a new one."""
    if sent is not None:
        return await _answered(sent, bound)
    if attach is not None:
        try:
            await attach(str(path), command)
        except AttachUnavailable:
            bound.warning("agi session over before mixmonitor; starting it through ami")
        except StartRefused as exc:
            bound.error("mixmonitor refused", message=str(exc)[:200], via="agi")
            return None, "mixmonitor_refused"
        except Exception as exc:
            # As with a lost AMI answer: it may have run, so it is never tried again.
            bound.warning("mixmonitor answer lost; the file will tell", error=type(exc).__name__, via="agi")
            return "agi", None
        else:
            return "agi", None
    while not mixer.connected:
        # Not sent yet, so waiting for AMI and sending then cannot record twice.
        await _first_of(mixer.wait_connected(), ended())
        if has_ended():
            bound.error("call ended before AMI was back: not recorded")
            return None, "ami_down"
    return await _answered(_send(mixer, channel_name, path, command), bound)


async def _answered(
    answer: Awaitable[object], bound: structlog.typing.FilteringBoundLogger
) -> tuple[str | None, Failure | None]:
    try:
        await answer
    except (AmiError, ValueError) as exc:
        bound.error("mixmonitor refused", message=str(exc)[:200])
        return None, "mixmonitor_refused"
    except AmiUnavailable:
        bound.warning("mixmonitor answer lost; the file will tell")
    return "ami", None


async def stop(mixer: Mixer, channel_name: str) -> None:
    """Close the file at the hangup itself rather than when the channel is freed. Often
    "No such channel" on Local channels (docs/asterisk.md#stopmixmonitor-at-hangup): harmless,
    the file closes anyway."""
    with contextlib.suppress(AmiError, AmiUnavailable, ValueError):
        await mixer.stop_mix_monitor(channel_name)


async def _first_of(*aws: Awaitable[None]) -> None:
    """Await whichever finishes first; cancel and reap the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
