"""This callrec's node name: ``[daemon] node``, else the name pinned in state_dir at the first
start, else the host name (docs/retention.md#several-nodes).

The name is written into every row; with several nodes, the files of a row can only be
deleted by the node of that name. A host renamed after its first start keeps its node name, so
its rows keep being served and destroyed.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

PIN = "node"
"""The file under state_dir that holds the pinned name."""


def pinned(state_dir: Path) -> str | None:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        name = (state_dir / PIN).read_text(encoding="utf-8").strip()
        return name[:64] or None
    return None


def default_node(state_dir: Path) -> str:
    return pinned(state_dir) or socket.gethostname()[:64]


def pin(state_dir: Path, node: str) -> None:
    """Write the name at the first start; never overwrite it."""
    path = state_dir / PIN
    if path.exists():
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(node + "\n")


def machine_id() -> str:
    """This host's systemd machine id (stable across host renames), else its host name."""
    try:
        return Path("/etc/machine-id").read_text().strip()[:64] or socket.gethostname()
    except OSError:
        return socket.gethostname()
