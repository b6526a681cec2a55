"""systemd's sd_notify protocol in a few lines: a datagram to $NOTIFY_SOCKET.

(systemd-python needs libsystemd-dev to build; sdnotify on PyPI dates from 2017.)
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send ``state`` (e.g. "READY=1"); False when not run by systemd or on any error."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def watchdog_interval(default: float) -> float:
    """Half of systemd's WatchdogSec (as the sd_watchdog_enabled man page advises)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    if usec.isdigit() and int(usec) > 0:
        return min(int(usec) / 2_000_000, default)
    return default
