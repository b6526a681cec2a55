"""Audio for tests and benchmarks: MixMonitor-shaped WAV (8 kHz, 16-bit, mono), synthetic or
from Asterisk's own spoken prompts in the cached root."""

from __future__ import annotations

import array
import io
import math
import struct
from pathlib import Path

import av

from tests.harness.asterisk import DEFAULT_ROOT

PROMPTS = DEFAULT_ROOT / "usr/share/asterisk/sounds/en_US_f_Allison"


def wav_header(data_size: int, *, rate: int = 8000, sizes: bool = True) -> bytes:
    """``sizes=False``: the header an Asterisk crash leaves, its sizes never filled in."""
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_size if sizes else 0)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_size if sizes else 0)
    )


def tone_pcm(seconds: float, *, rate: int = 8000, hz: float = 440.0) -> bytes:
    n = int(seconds * rate)
    return struct.pack(f"<{n}h", *(int(9000 * math.sin(2 * math.pi * hz * i / rate)) for i in range(n)))


def tone_wav(seconds: float, *, rate: int = 8000, sizes: bool = True) -> bytes:
    pcm = tone_pcm(seconds, rate=rate)
    return wav_header(len(pcm), rate=rate, sizes=sizes) + pcm


def speech_pcm(seconds: float) -> bytes:
    """Real speech: Asterisk's prompts (GSM, 8 kHz) decoded and joined until ``seconds``."""
    want = int(seconds * 8000) * 2
    out = bytearray()
    prompts = sorted(PROMPTS.glob("*.gsm"))
    if not prompts:
        raise FileNotFoundError(f"no prompts under {PROMPTS}: build the Asterisk root first")
    while len(out) < want:
        for path in prompts:
            with av.open(str(path)) as c:
                for frame in c.decode(audio=0):
                    out += bytes(frame.planes[0])[: frame.samples * 2]
            if len(out) >= want:
                break
    return bytes(out[:want])


def write_wav(path: Path, pcm: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wav_header(len(pcm)) + pcm)
    return path


def decoded_pcm(data: bytes, rate: int = 8000) -> array.array[int]:
    """Archived audio (Ogg/Opus, FLAC, WAV) decoded to 16-bit mono samples at ``rate``."""
    out: array.array[int] = array.array("h")
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    with av.open(io.BytesIO(data)) as c:
        for frame in c.decode(audio=0):
            for converted in resampler.resample(frame):
                out.frombytes(bytes(converted.planes[0])[: converted.samples * 2])
        for converted in resampler.resample(None):
            out.frombytes(bytes(converted.planes[0])[: converted.samples * 2])
    return out
