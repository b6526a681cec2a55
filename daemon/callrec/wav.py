"""The WAV header as MixMonitor writes it (16-bit PCM, RIFF/WAVE): the rate, channels and
where the samples are. For the archive's transcoder (archive/codec.py) and the recorder, which
needs the closed file's size, hash and the audio's real length (recording/recorder.py)."""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


class BadAudio(Exception):
    """The file is not 16-bit PCM WAV as MixMonitor writes it."""


@dataclass(frozen=True, slots=True)
class Pcm:
    rate: int
    channels: int
    data_offset: int
    data_size: int | None
    """From the header; ``None`` when the header never got its sizes (read to the end)."""


def read_wav_header(f: BinaryIO) -> Pcm:
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise BadAudio("not a RIFF/WAVE file")
    fmt: tuple[int, int, int] | None = None
    while True:
        chunk = f.read(8)
        if len(chunk) < 8:
            raise BadAudio("no data chunk")
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"fmt ":
            body = f.read(size + (size & 1))
            if len(body) < 16:
                raise BadAudio("short fmt chunk")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag not in (1, 0xFFFE) or bits != 16 or channels not in (1, 2):
                raise BadAudio(f"expected 16-bit PCM, got format {tag} with {bits} bits")
            fmt = (rate, channels, bits)
        elif cid == b"data":
            if fmt is None:
                raise BadAudio("data before fmt")
            return Pcm(fmt[0], fmt[1], f.tell(), size if 0 < size < 0xFFFFFFFF else None)
        else:
            f.seek(size + (size & 1), 1)


def seconds_of(path: Path, size: int | None = None) -> float | None:
    """How long the audio in the file at ``path`` lasts, from its size (``size``: as already
    known, else read now) and never beyond the header's data size: a header an Asterisk crash
    left without sizes is read to the end. ``None`` when it is not a WAV this module reads."""
    try:
        with path.open("rb") as f:
            pcm = read_wav_header(f)
            if size is None:
                size = os.fstat(f.fileno()).st_size
    except (OSError, BadAudio):
        return None
    data = max(size - pcm.data_offset, 0)
    if pcm.data_size is not None:
        data = min(data, pcm.data_size)
    return data / (pcm.rate * pcm.channels * 2) if pcm.rate else None


def first_sample_at(path: Path, size: int) -> float | None:
    """When the file's first sample was written (seconds since the epoch): its last write,
    MixMonitor's close at the hangup, less the length of its audio; ``None`` if either is
    unknown (docs/architecture.md#the-file-knows-its-length)."""
    seconds = seconds_of(path, size)
    try:
        return None if seconds is None else os.stat(path).st_mtime - seconds
    except OSError:
        return None


def file_digest(path: Path) -> tuple[int, str]:
    """Size and sha256 of a closed recording (runs in a worker thread)."""
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            size += len(chunk)
            sha.update(chunk)
    return size, sha.hexdigest()


def examine(path: Path, *, first_sample: bool) -> tuple[int, str, float | None]:
    """Size, sha256 and, with ``first_sample``, when the first sample was written
    (wav.first_sample_at): one worker-thread hop per recording instead of two, each hop being
    two wakeups of a thread and of the event loop."""
    size, sha = file_digest(path)
    return size, sha, first_sample_at(path, size) if first_sample else None
