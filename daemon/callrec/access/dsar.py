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


class TooMany(Exception):
    """The person ran ``[privacy] dsar_searches_per_hour`` searches in the last hour (429)."""

    def __init__(self, per_hour: int, retry_after: int) -> None:
        super().__init__(f"at most {per_hour} data-subject searches an hour; try again in {retry_after} s")
        self.retry_after = retry_after


async def check_quota(db: Db, user_id: int, per_hour: int) -> None:
    """Each search says whether a guessed full number is exact, so searches are rationed per
    person (docs/privacy.md#finding-a-data-subjects-calls); the audit log is the count."""
    row = await db.fetchrow(
        """
        SELECT count(*) AS n, min(at) AS oldest, now() AS now FROM audit_log
        WHERE user_id = $1 AND action = 'dsar_search' AND outcome = 'ok'
          AND at > now() - interval '1 hour'
        """,
        user_id,
    )
    if row is not None and row["n"] >= per_hour:
        wait = (row["oldest"] + timedelta(hours=1) - row["now"]).total_seconds()
        raise TooMany(per_hour, max(1, int(wait) + 1))


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
