"""The customer's number as the register may hold it (docs/privacy.md#masking, R3).

Pure functions. The full number exists only in the caller's memory while this runs.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_DIGITS = frozenset("0123456789")
MASK = "***"


def mask_number(raw: str | None) -> str | None:
    """Keep the digits and a leading ``+``, drop everything else, mask the last three digits.

    ``"+358 40 123 4567"`` -> ``"+358401234***"``; three digits or fewer -> ``"***"``;
    no digits at all (anonymous, withheld, unavailable, empty) -> ``None``.
    Only ASCII digits count: other scripts' digits are not dialable and are dropped.
    """
    if not raw:
        return None
    digits = [c for c in raw if c in _DIGITS]
    if not digits:
        return None
    if len(digits) <= 3:
        return MASK
    # "Leading" means before the first digit: "+358..." keeps it, "358+..." does not.
    plus = "+" if "+" in raw[: raw.index(digits[0])] else ""
    return plus + "".join(digits[:-3]) + MASK


def normalise_number(raw: str | None) -> str | None:
    """The full number in the form masking starts from: digits and a leading ``+``."""
    masked = mask_number(raw)
    if masked is None or raw is None:
        return None
    digits = "".join(c for c in raw if c in _DIGITS)
    return ("+" if masked.startswith("+") else "") + digits


def number_hmac(raw: str | None, key: bytes | None) -> str | None:
    """Keyed HMAC-SHA256 (hex) of the normalised number, or ``None`` without a key or digits.

    Stored beside the masked number so a data-subject request can tell apart numbers that
    differ only in their last three digits; without the key it reveals nothing.
    """
    normal = normalise_number(raw)
    if key is None or normal is None:
        return None
    return hmac.new(key, normal.encode(), hashlib.sha256).hexdigest()


# Seven or more digits, possibly with a leading + and any separators people type between them:
# white space (any Unicode space), ( ) . / _ and every dash (hyphen, the Unicode dashes U+2010
# to U+2015, minus U+2212, the small and full-width hyphen-minus). A phone number, for
# everything stored from a request and every log line (docs/privacy.md#redaction-of-logs).
_SEPARATORS = r"[\s().\-/_\u2010-\u2015\u2212\ufe58\ufe63\uff0d]"
PHONE_SHAPED = re.compile(rf"\+?\d(?:{_SEPARATORS}*\d){{6,}}")


def _mask_match(m: re.Match[str]) -> str:
    return mask_number(m.group(0)) or MASK


def redact(text: str) -> str:
    """``text`` with every phone-shaped run masked as ``mask_number`` masks a number:
    ``"call 040\u2013123\u20134567"`` (en dashes) -> ``"call 0401234***"``. The one redaction of free text."""
    return PHONE_SHAPED.sub(_mask_match, text)
