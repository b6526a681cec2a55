"""The one retry policy: capped exponential backoff with full jitter, ended by a stop event.

Every reconnect and retry loop in callrec (AMI, ARI, PostgreSQL, the outbox, reconciliation)
waits through ``Backoff``. "Full jitter" draws each delay uniformly from
``[0, min(maximum, initial * 2**attempt))``, so daemons that lost one Asterisk or one database
together do not come back in lock-step (docs/architecture.md, "Reconnects").
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


class Stopped(Exception):
    """The stop event was set while waiting to retry: give up quietly, the daemon is stopping."""


def _draw() -> float:
    # Looked up at each call, not bound once: a test that fixes random.random fixes every delay.
    return random.random()


def backoff_delay(attempt: int, initial: float, maximum: float, draw: float) -> float:
    """Delay before retry ``attempt`` (0-based); ``draw`` is uniform in [0, 1)."""
    # min() on the exponent first keeps 2**attempt finite after days of retries.
    ceiling = min(maximum, initial * 2.0 ** min(attempt, 64))
    return max(0.0, ceiling * draw)


@dataclass(slots=True)
class Backoff:
    """The delays of one retry loop; ``reset()`` after a success starts again from ``initial``."""

    initial: float = 0.2
    """Ceiling of the first delay, in seconds."""
    maximum: float = 10.0
    """Largest delay, in seconds."""
    stop: asyncio.Event | None = None
    """When set, ``wait()`` returns at once and raises ``Stopped``."""
    rand: Callable[[], float] = _draw
    attempt: int = field(default=0, init=False)
    """Failures since the last success."""

    def next_delay(self) -> float:
        delay = backoff_delay(self.attempt, self.initial, self.maximum, self.rand())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0

    async def wait(self, delay: float | None = None) -> None:
        """Sleep ``delay`` (default: the next delay), cut short by the stop event."""
        delay = self.next_delay() if delay is None else delay
        if self.stop is None:
            await asyncio.sleep(delay)
            return
        if not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)
        if self.stop.is_set():
            raise Stopped


async def retry(
    attempt: Callable[[], Awaitable[T]],
    *,
    retry_on: tuple[type[BaseException], ...],
    backoff: Backoff,
    on_failure: Callable[[BaseException, float], None],
    tries: int | None = None,
) -> T:
    """Await ``attempt()`` until it succeeds. Each failure of a ``retry_on`` type is reported to
    ``on_failure(error, retry_in)`` (log it, count it), then waited out. After ``tries`` failures
    the last one propagates; ``None`` retries until the stop event (``Stopped``)."""
    while True:
        try:
            result = await attempt()
        except retry_on as exc:
            if tries is not None and backoff.attempt + 1 >= tries:
                raise
            delay = backoff.next_delay()
            on_failure(exc, delay)
            await backoff.wait(delay)
        else:
            backoff.reset()
            return result
