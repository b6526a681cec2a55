"""Open a file beneath a directory without following any symbolic link on the way
(docs/privacy.md#audio-files-are-opened-beneath-recordings_dir).

Resolving a path, checking it, then opening it by name leaves a window: a folder swapped for
a symlink between the check and the open serves a file from anywhere. Here each component is
opened relative to the descriptor of the one before, with O_NOFOLLOW, so what is opened is
always beneath the root as it is at that moment. The root itself may be a symlink (an
operator's choice, like /var/spool/asterisk/callrec on another disk); nothing under it may.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath
from typing import IO

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted in the tree must not hang the open; a regular file ignores it.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class NotBeneath(OSError):
    """The path leaves the root, goes through a symlink, or names no regular file."""


def _parts(relative: str) -> tuple[str, ...]:
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or any(p in (".", "..") for p in parts):
        raise NotBeneath(errno.EACCES, "not a relative path beneath the root", relative)
    return parts


def open_beneath(root: Path, relative: str) -> IO[bytes]:
    """``root / relative`` opened for reading, or ``FileNotFoundError`` (missing) or
    ``NotBeneath`` (a symlink, ``..``, an absolute path, not a regular file)."""
    return os.fdopen(open_fd_beneath(root, relative), "rb")


def open_fd_beneath(root: Path, relative: str) -> int:
    """``open_beneath`` as a bare descriptor (blocking mode), for ``os.pread`` readers."""
    parts = _parts(relative)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise NotBeneath(
                        exc.errno, "a folder on the way is a symlink or no folder", relative
                    ) from None
                raise
            os.close(fd)
            fd = inner
        try:
            file_fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotBeneath(exc.errno, "the file is a symlink", relative) from None
            raise
    finally:
        os.close(fd)
    try:
        if not stat.S_ISREG(os.fstat(file_fd).st_mode):
            raise NotBeneath(errno.EINVAL, "not a regular file", relative)
        os.set_blocking(file_fd, True)
        return file_fd
    except BaseException:
        os.close(file_fd)
        raise
