"""Data-subject requests (R6): find a person's calls from their phone number and the time.

The number is masked exactly as at recording time (``callrec.privacy``), so the register
never needs the full number. Numbers that differ only in their last three digits share a
mask; when ``[privacy] number_hmac_key_file`` is configured, the keyed HMAC stored beside
the mask tells them apart. The full number lives only in this call's memory.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from callrec.access import policy as access
from callrec.db.pool import Db
from callrec.privacy import mask_number, normalise_number, number_hmac
from callrec.recording.facts import Recording

MIN_DIGITS = 5
MAX_WINDOW_MINUTES = 7 * 24 * 60

Match = Literal["exact", "masked"]


class BadRequest(ValueError):
    """The request cannot be answered as given; the message says what to change."""


@dataclass(frozen=True, slots=True)
class Candidate:
    recording: Recording
    match: Match
    """``exact``: the keyed HMAC matches the full number; ``masked``: only the mask matches
    (no key now, or none when the call was recorded)."""
    seconds_away: float
    """From the given time to the call; 0 when the time falls inside the call."""


@dataclass(frozen=True, slots=True)
class Result:
    masked: str
    exact_matching: bool
    candidates: list[Candidate]


async def search(
    db: Db, g: access.Grant, number: str, at: datetime, window_minutes: int, key: bytes | None
) -> Result:
    normal = normalise_number(number)
    if normal is None or len(normal.lstrip("+")) < MIN_DIGITS:
        raise BadRequest(f"number: give the full phone number ({MIN_DIGITS} digits at least)")
    if not 0 <= window_minutes <= MAX_WINDOW_MINUTES:
        raise BadRequest(f"window_minutes: expected 0 to {MAX_WINDOW_MINUTES}")
    masked = mask_number(normal)
    assert masked is not None
    wanted = number_hmac(normal, key)
    window = timedelta(minutes=window_minutes)
    found = []
    for rec in await access.by_masked_number(db, g, masked, at - window, at + window):
        if wanted is not None and rec.customer_number_hmac is not None:
            if not hmac.compare_digest(wanted, rec.customer_number_hmac):
                continue  # same mask, different number: someone else's call
            match: Match = "exact"
        else:
            match = "masked"
        away = max((rec.started_at - at).total_seconds(), (at - rec.ended_at).total_seconds(), 0.0)
        found.append(Candidate(rec, match, away))
    found.sort(key=lambda c: (c.match != "exact", c.seconds_away, c.recording.started_at))
    return Result(masked, wanted is not None, found)
