"""Where archived recordings are kept: one small interface, a file system behind it today
(``[storage] backend = "filesystem"``), S3-compatible stores next (docs/archive.md#stores).

Object names come from the recording id only (never a number, a name or a date), fanned out
by the id's first two hex digits so no directory holds millions of entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class StoreError(Exception):
    """The store cannot be read or written now (the message is one line for an operator)."""


def object_name(recording_id: uuid.UUID) -> str:
    return f"{recording_id.hex[:2]}/{recording_id}"


class ObjectStore(Protocol):
    """What the archive needs from a store. Every method raises ``StoreError`` for an outage
    and ``FileNotFoundError`` for an object that is not there."""

    name: str
    """For logs, checks and the disposal log, e.g. ``filesystem:/var/lib/callrec/archive``."""
    staging: Path
    """A local folder for objects being built (on the store's own file system if it has one)."""
    shared: bool
    """Every node reaches the same objects (S3): any node may serve and delete any of them."""

    async def put_file(self, name: str, path: Path, *, retain_until: datetime | None = None) -> None:
        """Store the staged file ``path`` as ``name``, durably, replacing any earlier object;
        ``retain_until``: where the store can lock objects, keep it at least that long."""
        ...

    async def read(self, name: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset``."""
        ...

    async def size(self, name: str) -> int: ...

    async def delete_many(self, names: Sequence[str]) -> list[bool]:
        """Per name: True when it is gone now (deleted, or was already missing)."""
        ...

    async def probe(self) -> None:
        """Write, read back and delete a probe object (``callrec check``)."""
        ...

    async def ping(self) -> None:
        """A cheap request that fails when the store is unreachable (the health gauge)."""
        ...

    async def close(self) -> None: ...


class FilesystemStore:
    """Objects as files under ``root``; every call runs in a worker thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = f"filesystem:{root}"
        self.staging = root / ".staging"
        # A folder of this host; an NFS mount shared by every node would be shared, but callrec
        # cannot tell, so it never deletes another node's objects from it.
        self.shared = False

    def _path(self, name: str) -> Path:
        # Names are ours (object_name), but a store never trusts a caller with a path.
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"bad object name {name!r}")
        return self.root / name

    async def put_file(self, name: str, path: Path, *, retain_until: datetime | None = None) -> None:
        await self._run(self._put, name, path)

    def _put(self, name: str, path: Path) -> None:
        target = self._path(name)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        with path.open("rb") as f:
            os.fsync(f.fileno())
        # Staging is on the same file system when possible (a rename); else a copy.
        try:
            os.replace(path, target)
        except OSError:
            tmp = target.with_name(target.name + ".part")
            with path.open("rb") as src, tmp.open("wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, target)
            path.unlink()
        _fsync_dir(target.parent)

    async def read(self, name: str, offset: int, length: int) -> bytes:
        return await self._run(self._read, name, offset, length)

    def _read(self, name: str, offset: int, length: int) -> bytes:
        fd = os.open(self._path(name), os.O_RDONLY | os.O_NOFOLLOW)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    async def size(self, name: str) -> int:
        return await self._run(lambda: os.stat(self._path(name), follow_symlinks=False).st_size)

    async def delete_many(self, names: Sequence[str]) -> list[bool]:
        return await self._run(self._delete_many, names)

    def _delete_many(self, names: Sequence[str]) -> list[bool]:
        gone = []
        dirs = set()
        for name in names:
            path = self._path(name)
            try:
                path.unlink()
                dirs.add(path.parent)
            except FileNotFoundError:
                pass
            except OSError:
                gone.append(False)
                continue
            gone.append(True)
        for d in dirs:
            _fsync_dir(d)
        return gone

    async def probe(self) -> None:
        await self._run(self._probe)

    async def ping(self) -> None:
        await self._run(os.stat, self.root)

    async def close(self) -> None:
        pass

    def _probe(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o750)
        probe = self.root / f".probe-{uuid.uuid4()}"
        try:
            probe.write_bytes(b"callrec probe")
            if probe.read_bytes() != b"callrec probe":
                raise StoreError(f"{self.name}: the probe object read back wrong")
        finally:
            with contextlib.suppress(FileNotFoundError):
                probe.unlink()

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except (FileNotFoundError, ValueError):
            raise
        except OSError as exc:
            raise StoreError(f"{self.name}: {exc.strerror or type(exc).__name__}") from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
