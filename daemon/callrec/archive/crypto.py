"""The encrypted object format and the keys (docs/archive.md#the-object-format).

An object is a 32-byte header and then the audio in chunks of ``CHUNK`` plaintext bytes, each
sealed with AES-256-GCM under the recording's own data key::

    header = b"CALLREC\\0" | version (1) | algorithm (1) | 0 0 | chunk size (u32) | recording id (16)
    chunk i = AES-GCM(key, nonce = 0^4 | i (u64), data, aad = header | i (u64) | final (1))

The nonce never repeats under a key: each key seals one object, once (re-archiving makes a new
key). The associated data binds every chunk to its recording, its position and whether it is
the last one, so a chunk moved, swapped into another object, or an object cut at a chunk
border fails its tag. Fixed-size chunks let a Range read decrypt only the chunks it covers.

The data key is kept only in PostgreSQL (``recording_keys``), wrapped (RFC 3394) by the
key-encryption key of ``[archive] key_file``; ``key_id`` names that key so it can be rotated.
"""

from __future__ import annotations

import hashlib
import os
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

MAGIC = b"CALLREC\0"
VERSION = 1
AES_256_GCM = 1
HEADER_SIZE = 32
CHUNK = 64 * 1024
"""Plaintext bytes per chunk: about 43 s of 12 kbit/s Opus, 4 s of WAV; a seek decrypts one
or two of them (bench/archive.py)."""
TAG = 16
KEY_SIZE = 32
_HEADER = struct.Struct(">8sBBxxI16s")


class CorruptObject(Exception):
    """The object is not what was sealed: a wrong key, a changed, moved or missing chunk."""


class KeyFileError(Exception):
    """A key file that cannot be used; the message is one line for an operator."""


@dataclass(frozen=True, slots=True)
class Kek:
    """A key-encryption key and its name."""

    key: bytes

    @property
    def key_id(self) -> str:
        # A fingerprint, not the key: names the key in recording_keys without revealing it.
        return hashlib.sha256(b"callrec.kek\0" + self.key).hexdigest()[:16]

    def wrap(self, data_key: bytes) -> bytes:
        return aes_key_wrap(self.key, data_key)

    def unwrap(self, wrapped: bytes) -> bytes:
        try:
            return aes_key_unwrap(self.key, wrapped)
        except InvalidUnwrap:
            raise CorruptObject("the data key does not unwrap under this key-encryption key") from None


def load_kek(path: Path, setting: str = "archive.key_file") -> Kek:
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None
    if len(key) != KEY_SIZE:
        raise KeyFileError(
            f"{setting}: {path} holds {len(key)} bytes, expected {KEY_SIZE} random bytes "
            "(make one with `callrec keys init`)"
        )
    return Kek(key)


def new_kek_file(path: Path) -> Kek:
    """Write 32 random bytes to a new file only its owner can read; never overwrites."""
    key = os.urandom(KEY_SIZE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    return Kek(key)


def header(recording_id: uuid.UUID, chunk: int = CHUNK) -> bytes:
    return _HEADER.pack(MAGIC, VERSION, AES_256_GCM, chunk, recording_id.bytes)


def parse_header(data: bytes, recording_id: uuid.UUID) -> int:
    """The chunk size of a header that belongs to ``recording_id``; else ``CorruptObject``."""
    if len(data) < HEADER_SIZE:
        raise CorruptObject("object shorter than its header")
    magic, version, alg, chunk, rid = _HEADER.unpack(data[:HEADER_SIZE])
    if magic != MAGIC or version != VERSION or alg != AES_256_GCM:
        raise CorruptObject("not a callrec archive object (version 1, AES-256-GCM)")
    if rid != recording_id.bytes:
        raise CorruptObject("the object belongs to another recording")
    if not 1024 <= chunk <= 1 << 24:
        raise CorruptObject("implausible chunk size")
    return int(chunk)


def _nonce(index: int) -> bytes:
    return b"\0\0\0\0" + index.to_bytes(8, "big")


def _aad(head: bytes, index: int, final: bool) -> bytes:
    return head + index.to_bytes(8, "big") + (b"\1" if final else b"\0")


def sealed_size(plain_size: int, chunk: int = CHUNK) -> int:
    """The object's size for ``plain_size`` bytes of audio (an empty one still has one chunk)."""
    chunks = max(1, -(-plain_size // chunk))
    return HEADER_SIZE + plain_size + chunks * TAG


class Sealer:
    """Encrypts a stream as it is written; ``close()`` seals the last chunk. Holds at most one
    chunk in memory whatever the call's length."""

    def __init__(self, out: BinaryIO, recording_id: uuid.UUID, data_key: bytes, chunk: int = CHUNK) -> None:
        self._out = out
        self._aes = AESGCM(data_key)
        self._head = header(recording_id, chunk)
        self._chunk = chunk
        self._buf = bytearray()
        self._index = 0
        self.plain_size = 0
        self.sha256 = hashlib.sha256()
        """Of the plaintext: the row's sha256 describes the audio as a recipient gets it."""
        out.write(self._head)

    def write(self, data: bytes) -> int:
        self._buf += data
        self.plain_size += len(data)
        self.sha256.update(data)
        # Keep the last full chunk back: only close() knows which chunk is final.
        while len(self._buf) > self._chunk:
            self._seal(bytes(self._buf[: self._chunk]), final=False)
            del self._buf[: self._chunk]
        return len(data)

    def _seal(self, data: bytes, *, final: bool) -> None:
        aad = _aad(self._head, self._index, final)
        self._out.write(self._aes.encrypt(_nonce(self._index), data, aad))
        self._index += 1

    def close(self) -> None:
        self._seal(bytes(self._buf), final=True)
        self._buf.clear()


class Opener:
    """Decrypts chunks of one object: whole (``verify``) or a byte range (serving)."""

    def __init__(self, recording_id: uuid.UUID, data_key: bytes, head: bytes, plain_size: int) -> None:
        self._aes = AESGCM(data_key)
        self._chunk = parse_header(head, recording_id)
        self._head = head[:HEADER_SIZE]
        self.plain_size = plain_size
        self.chunks = max(1, -(-plain_size // self._chunk))

    def span(self, start: int, end: int) -> tuple[int, int, int]:
        """For plaintext bytes ``start..end`` (inclusive): the object's byte offset and length
        to read, and the first chunk's index."""
        first, last = start // self._chunk, end // self._chunk
        offset = HEADER_SIZE + first * (self._chunk + TAG)
        stop = min(HEADER_SIZE + (last + 1) * (self._chunk + TAG), sealed_size(self.plain_size, self._chunk))
        return offset, stop - offset, first

    def open_chunks(self, sealed: bytes, first: int, count: int = 1) -> bytes:
        """Decrypt the ``count`` consecutive chunks from index ``first``; ``CorruptObject`` on
        any failed tag, a missing chunk or a short read."""
        out = bytearray()
        step = self._chunk + TAG
        if -(-len(sealed) // step) != count:
            raise CorruptObject(f"chunks {first}-{first + count - 1}: object truncated")
        for n, pos in enumerate(range(0, len(sealed), step)):
            index = first + n
            piece = sealed[pos : pos + step]
            final = index == self.chunks - 1
            expected = (self.plain_size - index * self._chunk if final else self._chunk) + TAG
            if index >= self.chunks or len(piece) != expected:
                raise CorruptObject(f"chunk {index}: wrong length (object truncated or extended)")
            try:
                out += self._aes.decrypt(_nonce(index), piece, _aad(self._head, index, final))
            except InvalidTag:
                raise CorruptObject(f"chunk {index}: authentication failed") from None
        return bytes(out)

    def read_range(self, sealed: bytes, first: int, start: int, end: int) -> bytes:
        plain = self.open_chunks(sealed, first, end // self._chunk - first + 1)
        base = first * self._chunk
        return plain[start - base : end - base + 1]


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)
