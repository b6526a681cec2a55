"""Sending a recording's audio: HTTP Range for the audio endpoint (RFC 9110 section 14), so a
browser player can seek, and the streaming of the bytes once the audit row is written.

One byte range per response: ``first-last``, ``first-`` and the suffix ``-n``. Several ranges
in one header are ignored and the whole file is sent (section 14.2 allows ignoring Range;
browsers never ask for several). A malformed or unsatisfiable byte range answers 416 with
``Content-Range: bytes */size`` (section 15.5.17).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from aiohttp import web

from callrec.archive.crypto import CorruptObject
from callrec.archive.reading import Audio
from callrec.http.middleware import ENTRY, STARTED, WRITTEN
from callrec.ops import metrics

log = structlog.get_logger("callrec.api")

CHUNK = 256 * 1024
# 18 digits: any file size fits; a longer number is malformed (416), never parsed.
_ONE_RANGE = re.compile(r"^([0-9]{0,18})-([0-9]{0,18})$")
_TYPES = {".wav": "audio/wav", ".gsm": "audio/gsm", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}


class Unsatisfiable(Exception):
    """The Range header asks for bytes the file does not have, or is not a byte range."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int
    """Inclusive, as in Content-Range."""

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range to send, or ``None`` for the whole file; raises ``Unsatisfiable``."""
    if header is None:
        return None
    unit, sep, spec = header.partition("=")
    if unit.strip().lower() != "bytes":
        return None  # another unit: section 14.2 says ignore it
    specs = [s.strip() for s in spec.split(",")]
    if not sep or not specs[0]:
        raise Unsatisfiable(header)
    if len(specs) > 1:
        return None
    m = _ONE_RANGE.match(specs[0])
    if m is None or m.group(0) == "-":
        raise Unsatisfiable(header)
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last n bytes, all of them if the file is shorter
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable(header)
        return ByteRange(max(size - n, 0), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if end < start or start >= size:
        raise Unsatisfiable(header)
    return ByteRange(start, min(end, size - 1))


async def stream(
    request: web.Request, sound: Audio, start: int, length: int, status: int, headers: Mapping[str, str]
) -> web.StreamResponse:
    """Send ``length`` bytes of a recording's audio; the audit row must be committed already."""
    assert request[WRITTEN]
    request[STARTED] = True
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = length
    await resp.prepare(request)
    try:
        if request.method != "HEAD" and length:
            async for block in sound.read(start, start + length - 1):
                await resp.write(block)
        await resp.write_eof()
    except ConnectionResetError:
        # A player that seeks drops its earlier request: routine, and already audited.
        log.debug("client left during the transfer", action=request[ENTRY].action)
    except CorruptObject as exc:
        # The status line is sent: the one honest signal left is a cut connection (the body
        # stays short of Content-Length), and the count and log line for an operator.
        metrics.ARCHIVE_CORRUPT.labels(where="serve").inc()
        log.error("archived audio failed its check while served", error=str(exc)[:200])
        if request.transport is not None:
            request.transport.close()
    return resp
