"""Where recordings live under ``recordings_dir``: one place decides every name.

Names are chosen by callrec alone, from the recording id and the day, never from caller input:
Asterisk joins MixMonitor's File, Options and Command with commas, so a comma in a name would
shift its arguments (docs/asterisk.md#commas-in-ami-arguments).
"""

from __future__ import annotations

import re
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


_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_NAMED = re.compile(rf"^(\d{{4}}/\d{{2}}/\d{{2}})/({_UUID})\.wav$")


def named_by_callrec(file: str, recordings_dir: Path) -> tuple[uuid.UUID, str] | None:
    """(recording id, path under ``recordings_dir``) if ``file`` (MIXMONITOR_FILENAME) is a
    name callrec gave: ``recordings_dir/YYYY/MM/DD/<uuid>.wav``; else ``None``."""
    try:
        rel = Path(file).relative_to(recordings_dir).as_posix()
    except ValueError:
        return None
    m = _NAMED.match(rel)
    return (uuid.UUID(m.group(2)), rel) if m else None
