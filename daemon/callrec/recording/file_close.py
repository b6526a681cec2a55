"""Knowing that Asterisk has closed a recording: ``FileClose`` is the one strategy the
recorder asks, with three ways of telling, cheapest first (docs/asterisk.md#inotify-in_close_write):
inotify (``CloseWatch``), MixMonitor's marker file, and, for a call that ended while no daemon
watched, a file quiet for longer than MixMonitor ever pauses.

The first signal used here was MixMonitor's post-process command, ``touch <file>.done``: it runs
only after the file is closed. But Asterisk runs it through ``ast_safe_system()``, a fork() of
its whole multi-threaded process, and on the benchmark (bench/pbx_cost.py, README
"Performance") that fork was the largest single part of what callrec cost the PBX: about 26 ms
of Asterisk's own CPU and 12 ms in the child per call, more than the call itself cost.

MixMonitor opens its file once and closes it once: when StopMixMonitor runs, or when its
thread ends after the hangup. The kernel reports that close as ``IN_CLOSE_WRITE`` to a watch
on the file's folder, so the same signal comes for free. Asterisk must then write the file in
place (asterisk.conf ``cache_record_files = no``, the default). Where inotify is missing
(not Linux) ``CloseWatch.open()`` gives ``None`` and the recorder goes back to the marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import os
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from callrec.recording.layout import marker_of

log = structlog.get_logger("callrec.closewatch")

# A recording still open is written every 20 ms, so a file this many seconds quiet is closed.
QUIET_SECONDS: Final = 2.0

# <sys/inotify.h>
_IN_CLOSE_WRITE: Final = 0x00000008
_IN_Q_OVERFLOW: Final = 0x00004000
_IN_IGNORED: Final = 0x00008000
_IN_ONLYDIR: Final = 0x01000000
_IN_NONBLOCK: Final = os.O_NONBLOCK
_IN_CLOEXEC: Final = os.O_CLOEXEC
_EVENT: Final = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name


class CloseWatch:
    """One inotify instance: ``expect(path)`` before MixMonitor opens the file, then the
    returned event is set when the file is closed after writing."""

    def __init__(self, libc: ctypes.CDLL, fd: int) -> None:
        self._libc = libc
        self._fd = fd
        self._dirs: dict[Path, int] = {}
        self._by_wd: dict[int, Path] = {}
        self._expected: dict[Path, asyncio.Event] = {}
        self._reading = False

    @classmethod
    def open(cls) -> CloseWatch | None:
        """``None`` where inotify is not available."""
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        except (OSError, AttributeError) as exc:
            log.warning("inotify unavailable; waiting for marker files instead", error=str(exc)[:200])
            return None
        if fd < 0:
            log.warning("inotify unavailable; waiting for marker files instead", errno=ctypes.get_errno())
            return None
        return cls(libc, fd)

    def watch(self, directory: Path) -> bool:
        """Watch a day folder (at once if already watched); False if the kernel refused."""
        if directory in self._dirs:
            return True
        if not self._reading:
            asyncio.get_running_loop().add_reader(self._fd, self._read)
            self._reading = True
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory), _IN_CLOSE_WRITE | _IN_ONLYDIR)
        if wd < 0:
            err = ctypes.get_errno()
            if err != errno.ENOENT:  # no folder: no file either, which the recorder reports
                reason = errno.errorcode.get(err, str(err))
                log.warning("cannot watch recordings folder; using marker files", error=reason)
            return False
        self._dirs[directory] = wd
        self._by_wd[wd] = directory
        # Yesterday's folder is done once nothing in it is awaited: one watch per day, not per year.
        busy = {p.parent for p in self._expected}
        for old, old_wd in list(self._dirs.items()):
            if old != directory and old not in busy:
                self._unwatch(old, old_wd)
        return True

    def expect(self, path: Path) -> asyncio.Event:
        """Register interest in ``path`` (its folder must be watched)."""
        event = self._expected.get(path)
        if event is None:
            event = self._expected[path] = asyncio.Event()
        return event

    def forget(self, path: Path) -> None:
        self._expected.pop(path, None)

    def close(self) -> None:
        if self._reading:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._reading = False
        os.close(self._fd)

    def _unwatch(self, directory: Path, wd: int) -> None:
        del self._dirs[directory]
        self._by_wd.pop(wd, None)
        self._libc.inotify_rm_watch(self._fd, wd)

    def _read(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if mask & _IN_Q_OVERFLOW:
                # Closes may have been lost: their waiters time out and hash the file as it is,
                # counted as close_unconfirmed, like a marker that never came.
                log.warning("inotify queue overflowed; some recordings will wait their file_wait_timeout")
                continue
            directory = self._by_wd.get(wd)
            if directory is None:
                continue
            if mask & _IN_IGNORED:  # the folder was deleted (retention) or unwatched
                self._dirs.pop(directory, None)
                self._by_wd.pop(wd, None)
                continue
            event = self._expected.get(directory / os.fsdecode(name))
            if event is not None:
                event.set()


@dataclass(slots=True)
class PendingClose:
    """What the recorder waits for on one recording's file."""

    path: Path
    closed: asyncio.Event | None
    """Set by inotify when Asterisk closes the file; ``None``: the marker tells instead."""
    uses_marker: bool
    """MixMonitor was (or may have been) told to leave the marker, so it is removed at the end."""

    @property
    def marker(self) -> Path:
        return marker_of(self.path)

    @property
    def command(self) -> str:
        """MixMonitor's post-process command: none where inotify tells (its fork costs Asterisk
        more than the call itself, docs/asterisk.md#post-process-command-forks-asterisk)."""
        return f"touch {self.marker}" if self.uses_marker else ""


class FileClose:
    """The recorder's one way to learn that a recording's file is complete."""

    def __init__(
        self, watch: CloseWatch | None, *, timeout: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._watch = watch
        self._timeout = timeout
        self._clock = clock

    def expect(self, path: Path, *, ours: bool) -> PendingClose:
        """Before MixMonitor opens ``path``. ``ours``: this run starts MixMonitor, so it decides
        whether the marker is needed; otherwise a previous run may have asked for one."""
        if self._watch is not None and self._watch.watch(path.parent):
            return PendingClose(path, self._watch.expect(path), uses_marker=not ours)
        return PendingClose(path, None, uses_marker=True)

    async def wait(self, pending: PendingClose, *, missed_end: bool, interrupted: bool) -> bool:
        """True once Asterisk has closed the file; False if not confirmed within the timeout."""
        if interrupted:
            # After an Asterisk restart no MixMonitor survives to close the file or leave a
            # marker: the file is as the crash left it.
            return await asyncio.to_thread(pending.marker.exists)
        if pending.closed is None:
            return await self._wait_for_marker(pending.marker)
        if missed_end and not pending.closed.is_set():
            # The call ended while no daemon watched: MixMonitor closed the file right after,
            # so its close came before our watch, unless that end was a moment ago.
            mtime = await asyncio.to_thread(mtime_of, pending.path)
            if mtime is not None and self._clock() - mtime > QUIET_SECONDS:
                return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pending.closed.wait(), self._timeout)
            return True
        # A recording a previous run started with the marker command may have closed unseen.
        return pending.uses_marker and await asyncio.to_thread(pending.marker.exists)

    async def release(self, pending: PendingClose, *, remove_marker: bool) -> None:
        """Stop watching; remove the marker once the row is safe."""
        if pending.closed is not None and self._watch is not None:
            self._watch.forget(pending.path)
        if remove_marker and pending.uses_marker:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(pending.marker.unlink)

    async def _wait_for_marker(self, marker: Path) -> bool:
        # Only where inotify is missing (not Linux): no notification is portable to every
        # Asterisk host, and the marker usually appears within milliseconds of the hangup.
        deadline = time.monotonic() + self._timeout
        delay = 0.01
        while True:
            if await asyncio.to_thread(marker.exists):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


def mtime_of(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None
