"""Where recordings live under ``recordings_dir``: one place decides every name.

Names are chosen by callrec alone, from the recording id, the day, the register and the node,
never from caller input: Asterisk joins MixMonitor's File, Options and Command with commas, so
a comma in a name would shift its arguments (docs/asterisk.md#commas-in-ami-arguments).

``YYYY/MM/DD/<uuid>.<register>.<node>.wav``: a file left without a journal entry or row names
its own register and node, so the start-up scan can give it a ``recovered`` row
(recording/strays.py, docs/architecture.md#files-without-a-journal-entry-or-row). The
customer's number never is in a name. Files named before this, ``YYYY/MM/DD/<uuid>.wav``, stay
valid everywhere.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

MARKER_SUFFIX = ".done"
"""MixMonitor's post-process command leaves ``<file>.done`` once it has closed the file
(where inotify is missing; recording/file_close.py)."""

AUDIO_SUFFIX = ".wav"

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_REGISTER = r"[a-z0-9][a-z0-9_-]{0,62}"  # config.py's register names: no dot, no comma
_NODE = r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*"  # a host name's characters, never ".."
_FILE = re.compile(rf"^({_UUID})(?:\.({_REGISTER})(?:\.({_NODE}))?)?\.wav$")
_DAY = re.compile(r"^\d{4}/\d{2}/\d{2}$")


@dataclass(frozen=True, slots=True)
class Named:
    """What a name callrec gave says of its recording."""

    recording_id: uuid.UUID
    path: str
    """Under ``recordings_dir``: ``YYYY/MM/DD/<name>``."""
    register: str | None
    """``None``: a name from before registers were named (``<uuid>.wav``)."""
    node: str | None
    """The node tag (``node_tag``) of the callrec that named it; ``None``: none named."""


def node_tag(node: str) -> str:
    """The node as it appears in a file name: itself if it is a host name's characters (at
    most 64), else ``n-`` and a hash of it, so any ``[daemon] node`` gives a safe name."""
    if len(node) <= 64 and re.fullmatch(_NODE, node):
        return node
    return "n-" + hashlib.sha256(node.encode()).hexdigest()[:16]


def file_path(recording_id: uuid.UUID, now: float, register: str, node: str = "") -> str:
    """``YYYY/MM/DD/<uuid>.<register>.<node>.wav`` (UTC day); without a node,
    ``<uuid>.<register>.wav``."""
    day = datetime.fromtimestamp(now, UTC)
    tail = f".{node_tag(node)}" if node else ""
    return f"{day:%Y/%m/%d}/{recording_id}.{register}{tail}{AUDIO_SUFFIX}"


def parse_name(name: str) -> tuple[uuid.UUID, str | None, str | None] | None:
    """(id, register, node tag) of a file name callrec gives (no folder); else ``None``."""
    m = _FILE.match(name)
    return (uuid.UUID(m.group(1)), m.group(2), m.group(3)) if m else None


def parse(rel: str) -> Named | None:
    """A path under ``recordings_dir`` (``YYYY/MM/DD/<name>``) as callrec named it, else ``None``."""
    day, _, name = rel.rpartition("/")
    found = parse_name(name) if _DAY.match(day) else None
    return Named(found[0], rel, found[1], found[2]) if found else None


def marker_of(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)


def named_by_callrec(file: str, recordings_dir: Path) -> tuple[uuid.UUID, str] | None:
    """(recording id, path under ``recordings_dir``) if ``file`` (MIXMONITOR_FILENAME) is a
    name callrec gave: ``recordings_dir/YYYY/MM/DD/<uuid>[.<register>[.<node>]].wav``."""
    try:
        rel = Path(file).relative_to(recordings_dir).as_posix()
    except ValueError:
        return None
    named = parse(rel)
    return (named.recording_id, rel) if named else None
