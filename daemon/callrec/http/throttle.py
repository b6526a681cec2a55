"""Refused requests beyond a per-client rate (docs/api.md#limits): each client's
first ``per_minute`` refused (401) requests of a minute get an audit row each; the rest are
answered 429 and counted, and the count becomes one audit row per client and minute. An
unauthenticated flood then costs one row a minute, not one per request.

Counting is in memory, per daemon: a restart forgets the windows, which only means a few
more rows. The clock is passed in so the windows are testable without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from callrec.access import audit
from callrec.db.pool import Db
from callrec.ops import metrics

log = structlog.get_logger("callrec.api")

INTERVAL = 60.0
ACTION = "refused_throttled"


@dataclass(slots=True)
class _Window:
    started: float
    first: datetime
    refused: int = 0
    suppressed: int = 0
    last: datetime | None = None


class Throttle:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute, self.clock = per_minute, clock
        self._windows: dict[str, _Window] = {}
        self._closed: list[tuple[str, _Window]] = []

    def refused(self, client: str) -> bool:
        """Note one refused request of ``client``: True if it still gets its own row, False
        if it is over the limit (answer 429; it is counted into the aggregate row)."""
        now = self.clock()
        window = self._windows.get(client)
        if window is None or now - window.started >= INTERVAL:
            if window is not None and window.suppressed:
                self._closed.append((client, window))
            window = self._windows[client] = _Window(now, datetime.now(UTC))
        window.refused += 1
        if window.refused <= self.per_minute:
            return True
        window.suppressed += 1
        window.last = datetime.now(UTC)
        return False

    def over(self, client: str) -> bool:
        """Whether ``client``'s next refusal would be a 429: a password is not even checked then."""
        window = self._windows.get(client)
        return (
            window is not None
            and self.clock() - window.started < INTERVAL
            and window.refused >= self.per_minute
        )

    def retry_after(self, client: str) -> int:
        window = self._windows.get(client)
        left = INTERVAL - (self.clock() - window.started) if window else INTERVAL
        return max(1, int(left) + 1)

    def take(self, *, everything: bool = False) -> list[audit.Entry]:
        """The aggregate rows of the windows that have ended (``everything``: all of them, at
        shutdown), each once."""
        now = self.clock()
        for client, window in list(self._windows.items()):
            if everything or now - window.started >= INTERVAL:
                del self._windows[client]
                if window.suppressed:
                    self._closed.append((client, window))
        closed, self._closed = self._closed, []
        return [
            audit.Entry(
                ACTION,
                client=client,
                outcome="unauthenticated",
                status=429,
                detail={
                    "count": w.suppressed,
                    "from": w.first.isoformat(),
                    "to": (w.last or w.first).isoformat(),
                    "per_minute": self.per_minute,
                },
            )
            for client, w in closed
        ]


async def flush(throttle: Throttle, db: Db, *, everything: bool = False) -> int:
    """Write the aggregate rows of the minutes that have ended; how many."""
    entries = throttle.take(everything=everything)
    for entry in entries:
        try:
            await audit.write(db, entry)
        except Exception as exc:
            metrics.AUDIT_WRITE_FAILURES.inc()
            log.error("aggregate audit row not written", error=type(exc).__name__, client=entry.client)
    return len(entries)


async def write_rows(throttle: Throttle, db: Db) -> AsyncIterator[None]:
    """For ``cleanup_ctx``: the aggregate rows each minute, and the last ones at shutdown."""

    async def every_minute() -> None:
        while True:
            await asyncio.sleep(INTERVAL)
            await flush(throttle, db)

    task = asyncio.create_task(every_minute())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await flush(throttle, db, everything=True)
