"""The sealed object format (archive/crypto.py) and the transcoding (archive/codec.py), pure:
every way an object can be damaged is refused, every range reads back exactly."""

from __future__ import annotations

import io
import os
import struct
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.archive import codec, crypto
from callrec.archive.crypto import CHUNK, HEADER_SIZE, TAG, CorruptObject, Opener, Sealer
from tests.harness.audio import tone_wav

RID = uuid.UUID("5b1d3c1e-0000-4000-8000-000000000001")


def seal(data: bytes, key: bytes, rid: uuid.UUID = RID, chunk: int = CHUNK) -> bytes:
    out = io.BytesIO()
    sealer = Sealer(out, rid, key, chunk)
    for pos in range(0, len(data), 7777):  # writes of an odd size, as a muxer makes them
        sealer.write(data[pos : pos + 7777])
    sealer.close()
    return out.getvalue()


def read_all(obj: bytes, key: bytes, size: int, rid: uuid.UUID = RID) -> bytes:
    opener = Opener(rid, key, obj[:HEADER_SIZE], size)
    if size == 0:
        offset, length, first = opener.span(0, 0)
        return opener.open_chunks(obj[offset : offset + length], first)
    offset, length, first = opener.span(0, size - 1)
    return opener.read_range(obj[offset : offset + length], first, 0, size - 1)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
def test_round_trip_and_size(size: int) -> None:
    key = crypto.new_data_key()
    data = os.urandom(size)
    obj = seal(data, key)
    assert len(obj) == crypto.sealed_size(size)
    assert read_all(obj, key, size) == data
    assert data[:64] not in obj or size < 64  # the audio is not in the object in the clear


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 5 * 4096 + 3), a=st.integers(0, 10**9), b=st.integers(0, 10**9))
def test_any_range_reads_exactly_the_bytes_asked_for(size: int, a: int, b: int) -> None:
    key = b"k" * 32
    data = bytes(i * 7 % 251 for i in range(size))
    obj = seal(data, key, chunk=4096)
    start, end = sorted((a % size, b % size))
    opener = Opener(RID, key, obj[:HEADER_SIZE], size)
    offset, length, first = opener.span(start, end)
    assert length <= (end // 4096 - start // 4096 + 1) * (4096 + TAG)  # only the chunks covered
    assert opener.read_range(obj[offset : offset + length], first, start, end) == data[start : end + 1]


def _damaged(kind: str, obj: bytes) -> bytes:
    step = CHUNK + TAG
    if kind == "flipped byte":
        i = HEADER_SIZE + CHUNK + 100
        return obj[:i] + bytes([obj[i] ^ 1]) + obj[i + 1 :]
    if kind == "swapped chunks":
        c0 = obj[HEADER_SIZE : HEADER_SIZE + step]
        c1 = obj[HEADER_SIZE + step : HEADER_SIZE + 2 * step]
        return obj[:HEADER_SIZE] + c1 + c0 + obj[HEADER_SIZE + 2 * step :]
    if kind == "truncated at a chunk border":
        return obj[: HEADER_SIZE + 2 * step]
    if kind == "truncated mid-chunk":
        return obj[:-5]
    if kind == "chunk size in the header changed":
        return obj[:12] + struct.pack(">I", CHUNK // 2) + obj[16:]
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "flipped byte",
        "swapped chunks",
        "truncated at a chunk border",
        "truncated mid-chunk",
        "chunk size in the header changed",
    ],
)
def test_a_damaged_object_is_refused(kind: str) -> None:
    key = crypto.new_data_key()
    size = 3 * CHUNK + 10
    obj = _damaged(kind, seal(os.urandom(size), key))
    with pytest.raises(CorruptObject):
        read_all(obj, key, size)


def test_the_wrong_key_and_another_recordings_object_are_refused() -> None:
    key = crypto.new_data_key()
    obj = seal(b"x" * 1000, key)
    with pytest.raises(CorruptObject, match="authentication"):
        read_all(obj, crypto.new_data_key(), 1000)
    with pytest.raises(CorruptObject, match="another recording"):
        read_all(obj, key, 1000, rid=uuid.uuid4())
    # The same bytes sealed for another recording under the same key do not open as ours.
    other = uuid.uuid4()
    forged = obj[:16] + other.bytes + obj[HEADER_SIZE:]
    with pytest.raises(CorruptObject):
        read_all(forged, key, 1000, rid=other)


def test_kek_wraps_and_a_wrong_kek_does_not_unwrap(tmp_path: Path) -> None:
    kek = crypto.new_kek_file(tmp_path / "k")
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert crypto.load_kek(tmp_path / "k") == kek
    data_key = crypto.new_data_key()
    wrapped = kek.wrap(data_key)
    assert len(wrapped) == 40 and data_key not in wrapped
    assert kek.unwrap(wrapped) == data_key
    with pytest.raises(CorruptObject):
        crypto.Kek(os.urandom(32)).unwrap(wrapped)
    with pytest.raises(FileExistsError):
        crypto.new_kek_file(tmp_path / "k")


def test_a_key_file_of_the_wrong_length_or_missing_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"abc\n")
    with pytest.raises(crypto.KeyFileError, match=r"holds 4 bytes, expected 32 random bytes"):
        crypto.load_kek(tmp_path / "short")
    with pytest.raises(crypto.KeyFileError, match="cannot read"):
        crypto.load_kek(tmp_path / "absent")


# --- transcoding ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["opus", "flac", "wav"])
@pytest.mark.parametrize("sizes", [True, False], ids=["header complete", "header never filled in"])
def test_transcode_keeps_the_whole_call(tmp_path: Path, fmt: codec.Format, sizes: bool) -> None:
    src = tmp_path / "in.wav"
    src.write_bytes(tone_wav(3.0, sizes=sizes))
    out = io.BytesIO()
    with src.open("rb") as f:
        seconds = codec.transcode(f, out, fmt, bitrate=12000, complexity=3)
    assert seconds == pytest.approx(3.0)
    out.seek(0)
    assert codec.probe_seconds(out) == pytest.approx(3.0, abs=0.05)
    if fmt == "opus":
        assert out.getvalue()[:4] == b"OggS"
        assert len(out.getvalue()) < src.stat().st_size / 8


def test_flac_is_lossless(tmp_path: Path) -> None:
    import av

    src = tmp_path / "in.wav"
    original = tone_wav(1.0)
    src.write_bytes(original)
    out = io.BytesIO()
    with src.open("rb") as f:
        codec.transcode(f, out, "flac", bitrate=0, complexity=0)
    out.seek(0)
    with av.open(out) as c:
        pcm = b"".join(bytes(frame.planes[0])[: frame.samples * 2] for frame in c.decode(audio=0))
    assert pcm == original[44:]


def test_not_pcm_wav_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.wav"
    bad.write_bytes(
        b"RIFF\0\0\0\0WAVEfmt " + struct.pack("<IHHIIHH", 16, 6, 1, 8000, 8000, 1, 8) + b"data\0\0\0\0"
    )
    with bad.open("rb") as f, pytest.raises(codec.BadAudio, match="16-bit PCM"):
        codec.transcode(f, io.BytesIO(), "opus", bitrate=12000, complexity=3)
    bad.write_bytes(b"not a wav at all")
    with bad.open("rb") as f, pytest.raises(codec.BadAudio):
        codec.transcode(f, io.BytesIO(), "opus", bitrate=12000, complexity=3)
