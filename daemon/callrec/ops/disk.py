"""Free space where MixMonitor writes: once the disk is full, Asterisk writes nothing."""

from __future__ import annotations

import os
from pathlib import Path


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
