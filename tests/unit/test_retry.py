"""The one retry policy (callrec.retry): delays, the stop event, give-up after N tries."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callrec.retry import Backoff, Stopped, backoff_delay, retry


@given(
    attempt=st.integers(0, 10_000),
    initial=st.floats(0.001, 5),
    maximum=st.floats(0.001, 60),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_delay_is_within_the_capped_ceiling(
    attempt: int, initial: float, maximum: float, draw: float
) -> None:
    delay = backoff_delay(attempt, initial, maximum, draw)
    assert 0 <= delay <= min(maximum, initial * 2.0 ** min(attempt, 64))


# The AMI and ARI clients' reconnect delays (tests/unit/test_ami.py, test_ari.py) come from here.


@given(
    attempt=st.integers(min_value=0, max_value=10**9),
    initial=st.floats(min_value=0.001, max_value=10),
    maximum=st.floats(min_value=0.001, max_value=600),
    jitter=st.floats(min_value=0, max_value=1),
)
def test_backoff_is_non_negative_capped_and_jittered(
    attempt: int, initial: float, maximum: float, jitter: float
) -> None:
    delay = backoff_delay(attempt, initial, maximum, jitter)
    assert 0 <= delay <= maximum
    assert delay == pytest.approx(jitter * min(maximum, initial * 2.0 ** min(attempt, 64)))


def test_backoff_grows_then_caps() -> None:
    top = [backoff_delay(a, 0.2, 10.0, 1.0) for a in range(10)]
    assert top[:6] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 6.4])
    assert top[6:] == [10.0] * 4
    assert backoff_delay(10**9, 0.2, 10.0, 1.0) == 10.0
    assert backoff_delay(5, 0.2, 10.0, 0.0) == 0.0
    assert backoff_delay(5, 0.2, 10.0, 0.5) == pytest.approx(3.2)


def test_backoff_delay_is_capped_jittered_and_grows() -> None:
    ceilings = [backoff_delay(n, 0.2, 10.0, 1.0) for n in range(10)]
    assert ceilings == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0, 10.0])
    assert backoff_delay(3, 0.2, 10.0, 0.5) == pytest.approx(0.8)
    assert backoff_delay(10_000, 0.2, 10.0, 1.0) == 10.0  # no OverflowError
    samples = {backoff_delay(8, 0.2, 10.0, random.random()) for _ in range(50)}
    assert all(0.0 <= d <= 10.0 for d in samples)
    assert len(samples) > 40  # full jitter, not a fixed delay


def test_a_fixed_random_fixes_every_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The AMI test fixes random.random to get exact delays; that must reach every Backoff."""
    monkeypatch.setattr(random, "random", lambda: 1.0)
    b = Backoff(0.2, 10.0)
    assert [b.next_delay() for _ in range(3)] == pytest.approx([0.2, 0.4, 0.8])


def test_ceiling_doubles_then_caps() -> None:
    b = Backoff(initial=0.5, maximum=3.0, rand=lambda: 0.999999)
    delays = [round(b.next_delay(), 3) for _ in range(5)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert round(b.next_delay(), 3) == 0.5


async def test_stop_event_ends_the_wait_at_once() -> None:
    stop = asyncio.Event()
    b = Backoff(initial=3600, maximum=3600, stop=stop, rand=lambda: 0.5)
    waiter = asyncio.create_task(b.wait())
    await asyncio.sleep(0)
    stop.set()
    with pytest.raises(Stopped):
        await asyncio.wait_for(waiter, 5)


async def test_retry_reports_each_failure_then_returns() -> None:
    outcomes: list[object] = [OSError("down"), OSError("still down"), "up"]
    seen: list[tuple[str, float]] = []

    async def attempt() -> str:
        result = outcomes.pop(0)
        if isinstance(result, Exception):
            raise result
        assert isinstance(result, str)
        return result

    b = Backoff(initial=0.001, maximum=0.001)
    result = await retry(
        attempt, retry_on=(OSError,), backoff=b, on_failure=lambda e, d: seen.append((str(e), d))
    )
    assert result == "up"
    assert [s for s, _ in seen] == ["down", "still down"]
    assert b.attempt == 0  # a success resets the backoff


async def test_retry_gives_up_after_tries_and_lets_other_errors_through() -> None:
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise OSError("down")

    with pytest.raises(OSError):
        await retry(
            failing, retry_on=(OSError,), backoff=Backoff(0.001, 0.001), on_failure=lambda e, d: None, tries=3
        )
    assert calls == 3

    async def broken() -> None:
        raise KeyError("a bug, not an outage")

    with pytest.raises(KeyError):
        await retry(broken, retry_on=(OSError,), backoff=Backoff(0.001, 0.001), on_failure=lambda e, d: None)
