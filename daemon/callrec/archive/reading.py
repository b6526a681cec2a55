"""Reading a recording's audio as a recipient gets it: the WAV before the archive step, the
decrypted archive object after it. The API, the web player, exports and ``callrec verify``
all read through here, so each checks the same tags and sizes (docs/archive.md#reading).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from callrec.archive.crypto import HEADER_SIZE, CorruptObject, KeyFileError, Opener, sealed_size
from callrec.archive.keys import KeyRing, data_key
from callrec.archive.settings import CONTENT_TYPES, ArchiveSettings
from callrec.archive.store import FilesystemStore, ObjectStore, object_name
from callrec.config import ConfigError, Settings
from callrec.db.pool import Db
from callrec.recording.facts import Recording
from callrec.safe_open import NotBeneath, open_fd_beneath

log = structlog.get_logger("callrec.archive")

WINDOW = 16 * 64 * 1024
"""Plaintext bytes per store read while streaming: 16 chunks, 1 MiB."""
_INLINE = 256 * 1024
"""Decrypting more than this goes to a thread (AES-GCM runs at about 2 GB/s here)."""


@dataclass(frozen=True)
class Archive:
    """What the daemon and the commands hold of the archive: its settings, store and keys."""

    settings: ArchiveSettings
    store: ObjectStore
    keys: KeyRing


@dataclass(frozen=True)
class Audio:
    size: int
    content_type: str
    read: Callable[[int, int], AsyncIterator[bytes]]
    """Bytes ``start..end`` (inclusive), in bounded blocks; raises ``CorruptObject`` on a block
    that fails its check."""
    close: Callable[[], None] = lambda: None
    """Releases what ``open_audio`` opened; call it when done (``with closing(audio)``)."""

    def __enter__(self) -> Audio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def open_audio(db: Db, rec: Recording, archive: Archive | None, recordings_dir: Path) -> Audio:
    """``FileNotFoundError`` when the audio is not there; ``keys.MissingKey`` when it cannot be
    decrypted; ``store.StoreError`` when the store is down."""
    if rec.archived_at is None:
        return await _wav(recordings_dir, rec.file_path)
    if archive is None:
        raise FileNotFoundError(f"recording {rec.id}: archived, but this server has no archive store")
    name = object_name(rec.id)
    kind = CONTENT_TYPES[rec.audio_format]
    if not rec.encrypted:

        async def plain(start: int, end: int) -> AsyncIterator[bytes]:
            for pos in range(start, end + 1, WINDOW):
                block = await archive.store.read(name, pos, min(WINDOW, end + 1 - pos))
                if not block:
                    raise CorruptObject("object shorter than its row says")
                yield block

        return Audio(rec.file_size, kind, plain)
    key = await data_key(db, archive.keys, rec.id)
    head = await archive.store.read(name, 0, HEADER_SIZE)
    opener = Opener(rec.id, key, head, rec.file_size)
    return Audio(rec.file_size, kind, lambda start, end: _sealed(archive.store, name, opener, start, end))


async def _sealed(
    store: ObjectStore, name: str, opener: Opener, start: int, end: int
) -> AsyncIterator[bytes]:
    pos = start
    while pos <= end:
        stop = min(end, pos + WINDOW - 1)
        offset, length, first = opener.span(pos, stop)
        sealed = await store.read(name, offset, length)
        if length > _INLINE:
            yield await asyncio.to_thread(opener.read_range, sealed, first, pos, stop)
        else:
            yield opener.read_range(sealed, first, pos, stop)
        pos = stop + 1


async def _wav(root: Path, relative: str) -> Audio:
    # Opened component by component without following links: a folder swapped for a symlink
    # between a check and the open cannot lead outside (docs/privacy.md, callrec/safe_open.py).
    try:
        fd = await asyncio.to_thread(open_fd_beneath, root, relative)
    except NotBeneath as exc:
        log.error("audio path refused", path=relative, why=exc.strerror)
        raise FileNotFoundError(f"{relative}: not a file beneath recordings_dir") from None
    return from_fd(fd, "audio/wav")


def from_fd(fd: int, content_type: str) -> Audio:
    """An open file as ``Audio``; its ``close`` closes the descriptor."""
    try:
        size = os.fstat(fd).st_size
    except OSError:
        os.close(fd)
        raise

    async def read(start: int, end: int) -> AsyncIterator[bytes]:
        for pos in range(start, end + 1, WINDOW):
            block = await asyncio.to_thread(os.pread, fd, min(WINDOW, end + 1 - pos), pos)
            if not block:
                return  # the file shrank under us; the client sees a short body
            yield block

    return Audio(size, content_type, read, lambda: os.close(fd))


async def verify(
    store: ObjectStore, recording_id: uuid.UUID, key: bytes | None, size: int, sha256: str
) -> None:
    """Read the whole object back and check its size, every tag and the sha256 of the audio;
    ``CorruptObject`` says what failed."""
    name = object_name(recording_id)
    stored = await store.size(name)
    expected = sealed_size(size) if key is not None else size
    if stored != expected:
        raise CorruptObject(f"object is {stored} bytes, expected {expected}")
    digest = hashlib.sha256()
    if key is None:
        for pos in range(0, size, WINDOW):
            digest.update(await store.read(name, pos, min(WINDOW, size - pos)))
    else:
        opener = Opener(recording_id, key, await store.read(name, 0, HEADER_SIZE), size)
        if size:
            async for block in _sealed(store, name, opener, 0, size - 1):
                digest.update(block)
        else:
            offset, length, first = opener.span(0, 0)
            opener.open_chunks(await store.read(name, offset, length), first)
    if digest.hexdigest() != sha256:
        raise CorruptObject("the audio does not match the row's sha256")


def open_archive(settings: Settings) -> Archive | None:
    """The archive as configured, its keys loaded; ``None`` when ``[archive] enabled = false``.
    A key file that cannot be used is a ``ConfigError`` (one line, exit code 2)."""
    if not settings.archive.enabled:
        return None
    try:
        ring = KeyRing.load(settings.archive)
    except KeyFileError as exc:
        raise ConfigError(str(exc)) from None
    return Archive(settings.archive, open_store(settings), ring)


def open_store(settings: Settings) -> ObjectStore:
    storage = settings.storage
    if storage.backend == "s3":
        from callrec.archive.s3 import S3Store  # aiobotocore only where it is used

        # Objects are built beside the journal, then uploaded.
        staging = settings.state_dir / "archive-staging"
        return S3Store(storage, staging, access_key=storage.access_key, secret_key=storage.secret_key)
    return FilesystemStore(storage.path)
