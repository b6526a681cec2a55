"""Knowing that Asterisk has closed a recording, at no cost to Asterisk (Linux inotify).

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
import ctypes
import ctypes.util
import errno
import os
import struct
import sys
from pathlib import Path
from typing import Final

import structlog

log = structlog.get_logger("callrec.closewatch")

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
