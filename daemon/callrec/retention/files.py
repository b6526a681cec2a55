"""The recordings directory as retention sees it: deleting files, finding orphans, pruning
empty day directories. Plain blocking functions: the sweep runs each in a worker thread,
one hop per batch of files, never one per file.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from callrec.recording.layout import AUDIO_SUFFIX, MARKER_SUFFIX, parse_name
from callrec.retention.queries import Disposal

DESTROYED, MISSING = "destroyed", "missing"
_DAY_DIR = re.compile(r"^([0-9]{4})/([0-9]{2})/([0-9]{2})$")
_AUDIO = AUDIO_SUFFIX

Candidate = tuple[uuid.UUID, str, int]
"""An orphan candidate: the uuid in its name, its path under recordings_dir, its size."""


def orphan_age(retention_days: Iterable[int], orphan_grace: float) -> float:
    """Seconds since its last write after which an audio file no row knows is an orphan: the
    longest retention plus ``[retention] orphan_grace``. The start-up scan of files without a
    row (recording/strays.py) stays a day short of it, so the two never take the same file."""
    return max(retention_days, default=0) * 86400.0 + orphan_grace


def keep_dirs_from(now: float | None = None) -> date:
    """Day directories from this date on are never removed: the recorder may be creating
    today's (UTC, like the file names) for a call that starts this instant."""
    return (datetime.fromtimestamp(time.time() if now is None else now, UTC) - timedelta(days=1)).date()


def _dir_date(rel: str) -> date | None:
    m = _DAY_DIR.match(rel)
    if not m:
        return None
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


def _remove_empty_dirs(root: str, day_dirs: Iterable[str], keep_from: date) -> None:
    for rel in sorted(day_dirs):
        day = _dir_date(rel)
        if day is None or day >= keep_from:
            continue
        try:
            os.rmdir(f"{root}/{rel}")
            if (day.year, day.month) < (keep_from.year, keep_from.month):
                os.rmdir(f"{root}/{rel[:7]}")
                if day.year < keep_from.year:
                    os.rmdir(f"{root}/{rel[:4]}")
        except OSError:
            continue  # not empty (the usual case), or already gone


def delete_files(root: Path, batch: Sequence[Disposal], keep_from: date) -> list[str]:
    """Per file: destroyed, missing, or the OS error (the queue row stays; next pass retries)."""
    base = str(root)
    outcomes: list[str] = []
    dirs: set[str] = set()
    for d in batch:
        path = f"{base}/{d.file_path}"
        try:
            os.unlink(path)
            outcomes.append(DESTROYED)
        except FileNotFoundError:
            outcomes.append(MISSING)
        except OSError as exc:
            outcomes.append(exc.strerror or type(exc).__name__)
            continue
        # The recorder deletes the marker once the row is written; a crash in between leaves it.
        with contextlib.suppress(OSError):
            os.unlink(path + MARKER_SUFFIX)
        dirs.add(d.file_path.rpartition("/")[0])
    _remove_empty_dirs(base, dirs, keep_from)
    return outcomes


def old_day_dirs(root: Path, last: date) -> list[str]:
    """``YYYY/MM/DD`` directories dated ``last`` or earlier. File names carry the UTC day the
    recording started, so a file older than ``last`` can only be in one of these."""
    return day_dirs(root, date.min, last)


def day_dirs(root: Path, first: date, last: date) -> list[str]:
    """``YYYY/MM/DD`` directories dated from ``first`` to ``last``, in order."""
    found = []
    for year in _subdirs(root, 4):
        if not first.year <= int(year) <= last.year:
            continue
        for month in _subdirs(root / year, 2):
            for day in _subdirs(root / year / month, 2):
                rel = f"{year}/{month}/{day}"
                d = _dir_date(rel)
                if d is not None and first <= d <= last:
                    found.append(rel)
    return found


def _subdirs(path: Path, width: int) -> list[str]:
    try:
        with os.scandir(path) as it:
            return sorted(
                e.name
                for e in it
                if len(e.name) == width and e.name.isdigit() and e.is_dir(follow_symlinks=False)
            )
    except (FileNotFoundError, NotADirectoryError):
        return []


def scan_day(root: Path, rel: str, cutoff: float) -> tuple[list[Candidate], list[str]]:
    """Audio files and markers in one day directory last written before ``cutoff``. Only names
    the recorder makes (recording/layout.py) are candidates; anything else is left alone."""
    audio: list[Candidate] = []
    markers: list[str] = []
    try:
        it = os.scandir(root / rel)
    except FileNotFoundError:
        return audio, markers
    with it:
        for entry in it:
            name = entry.name
            is_marker = name.endswith(_AUDIO + MARKER_SUFFIX)
            if not (is_marker or name.endswith(_AUDIO)):
                continue
            named = parse_name(name[: -len(MARKER_SUFFIX)] if is_marker else name)
            if named is None:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_mtime >= cutoff:
                continue
            rid = named[0]
            if is_marker:
                markers.append(f"{rel}/{name}")
            else:
                audio.append((rid, f"{rel}/{name}", st.st_size))
    return audio, markers


def delete_markers(root: Path, rels: Sequence[str], keep_from: date) -> int:
    """How many of the markers are gone now (deleting an orphan's audio takes its marker too)."""
    gone = 0
    for rel in rels:
        try:
            os.unlink(root / rel)
        except FileNotFoundError:
            pass
        except OSError:
            continue
        gone += 1
    _remove_empty_dirs(str(root), {r.rpartition("/")[0] for r in rels}, keep_from)
    return gone
