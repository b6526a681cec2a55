"""The WAV header as MixMonitor writes it: how long a file's audio lasts (callrec/wav.py)."""

from __future__ import annotations

import os
import wave
from pathlib import Path

import pytest

from callrec import wav


def _write(path: Path, seconds: float, rate: int = 8000) -> int:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x01\x00" * int(rate * seconds))
    return path.stat().st_size


@pytest.mark.parametrize(("seconds", "rate"), [(9.0, 8000), (2.5, 16000), (0.0, 8000)])
def test_seconds_of_a_closed_file(tmp_path: Path, seconds: float, rate: int) -> None:
    path = tmp_path / "a.wav"
    assert wav.seconds_of(path, _write(path, seconds, rate)) == pytest.approx(seconds)


def test_an_unfilled_header_is_read_to_the_end(tmp_path: Path) -> None:
    """Asterisk killed mid-call leaves the data size unset: the file's size tells."""
    path = tmp_path / "a.wav"
    size = _write(path, 3.0)
    raw = bytearray(path.read_bytes())
    raw[40:44] = b"\x00\x00\x00\x00"
    path.write_bytes(bytes(raw))
    assert wav.seconds_of(path, size) == pytest.approx(3.0)


def test_what_is_not_a_wav_has_no_length(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(b"GSM\x00" * 10)
    assert wav.seconds_of(path, 40) is None
    assert wav.seconds_of(tmp_path / "absent.wav", 0) is None


def test_the_first_sample_is_the_last_write_less_the_audio(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    size = _write(path, 4.0)
    os.utime(path, (1_800_000_010.0, 1_800_000_010.0))
    assert wav.first_sample_at(path, size) == pytest.approx(1_800_000_006.0)
    assert wav.first_sample_at(tmp_path / "absent.wav", 0) is None
