"""Turning MixMonitor's WAV into the archived audio, as a stream (docs/archive.md#formats).

MixMonitor writes 8 kHz 16-bit mono WAV (960 KB a minute). The default archive format is
Ogg/Opus through PyAV's libopus: on Asterisk's own prompts 12 kbit/s at complexity 3 measured
10.6x smaller with PESQ-NB 4.3, at several hundred times real time on one core
(bench/archive.py). FLAC keeps every sample (about 2x smaller); "wav" keeps the file as it is.

The WAV header is read here, not by FFmpeg: a file cut by an Asterisk crash has a header whose
sizes were never filled in, and its samples run to the end of the file all the same.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import BinaryIO, Protocol

import av

from callrec.archive.settings import Format
from callrec.wav import BadAudio as BadAudio  # what a caller of this module catches
from callrec.wav import Pcm, read_wav_header

_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_READ = 8000 * 2  # samples of one second at 8 kHz: a bounded buffer whatever the call's length


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


def pcm_blocks(f: BinaryIO, pcm: Pcm) -> Iterator[bytes]:
    """The samples, one bounded block at a time, whole frames only."""
    f.seek(pcm.data_offset)
    left = pcm.data_size
    frame = 2 * pcm.channels
    carry = b""
    while left is None or left > 0:
        block = f.read(_READ if left is None else min(_READ, left))
        if not block:
            break
        if left is not None:
            left -= len(block)
        block = carry + block
        cut = len(block) - len(block) % frame
        carry = block[cut:]
        if cut:
            yield block[:cut]


def transcode(src: BinaryIO, out: Sink, fmt: Format, *, bitrate: int, complexity: int) -> float:
    """Write the archived form of the WAV ``src`` to ``out``; returns the audio's seconds."""
    pcm = read_wav_header(src)
    if fmt == "wav":
        return _copy(src, out, pcm)
    container = av.open(out, mode="w", format="ogg" if fmt == "opus" else "flac")
    try:
        layout = "mono" if pcm.channels == 1 else "stereo"
        if fmt == "opus":
            if pcm.rate not in _OPUS_RATES:
                raise BadAudio(f"{pcm.rate} Hz: Opus takes 8, 12, 16, 24 or 48 kHz")
            stream = container.add_stream("libopus", rate=pcm.rate, layout=layout)
            stream.bit_rate = bitrate
            stream.options = {"compression_level": str(complexity), "application": "voip"}
        else:
            stream = container.add_stream("flac", rate=pcm.rate, layout=layout)
        samples = 0
        for block in pcm_blocks(src, pcm):
            n = len(block) // (2 * pcm.channels)
            frame = av.AudioFrame(format="s16", layout=layout, samples=n)
            frame.planes[0].update(block)
            frame.sample_rate = pcm.rate
            frame.pts = samples
            samples += n
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    finally:
        container.close()
    return samples / pcm.rate


def _copy(src: BinaryIO, out: Sink, pcm: Pcm) -> float:
    """WAV kept as WAV: the header rewritten with the true sizes, the samples copied."""
    end = os.fstat(src.fileno()).st_size
    frame = 2 * pcm.channels
    size = end - pcm.data_offset if pcm.data_size is None else min(pcm.data_size, end - pcm.data_offset)
    size -= size % frame
    out.write(_wav_header(pcm.rate, pcm.channels, size))
    for block in pcm_blocks(src, Pcm(pcm.rate, pcm.channels, pcm.data_offset, size)):
        out.write(block)
    return size / (frame * pcm.rate)


def _wav_header(rate: int, channels: int, size: int) -> bytes:
    return (
        b"RIFF"
        + struct.pack("<I", 36 + size)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
        + b"data"
        + struct.pack("<I", size)
    )


def probe_seconds(data: BinaryIO) -> float:
    """The duration of archived audio by decoding it (tests and ``callrec verify --decode``)."""
    with av.open(data, mode="r") as c:
        stream = c.streams.audio[0]
        samples = 0
        for frame in c.decode(stream):
            samples += frame.samples
        return samples / (stream.rate or 1)
