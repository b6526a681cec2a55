"""Where recordings live under ``recordings_dir``: one place decides every name.

Names are chosen by callrec alone, from the recording id and the day, never from caller input:
Asterisk joins MixMonitor's File, Options and Command with commas, so a comma in a name would
shift its arguments (docs/asterisk.md#commas-in-ami-arguments).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

MARKER_SUFFIX = ".done"
"""MixMonitor's post-process command leaves ``<file>.done`` once it has closed the file
(where inotify is missing; recording/file_close.py)."""


def default_file_path(recording_id: uuid.UUID, now: float) -> str:
    """``YYYY/MM/DD/<uuid>.wav``: chosen by callrec alone, never from caller input (commas in
    a name would shift MixMonitor's arguments)."""
    day = datetime.fromtimestamp(now, UTC)
    return f"{day:%Y/%m/%d}/{recording_id}.wav"


def marker_of(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)
