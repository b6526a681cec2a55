"""The one redaction of free text (privacy.redact), used for everything stored from a request
and every log line: property tests over the separators people type (issue #15 item 6)."""

from __future__ import annotations

import io
import json

import structlog
from hypothesis import given
from hypothesis import strategies as st

from callrec.ops import logs
from callrec.privacy import PHONE_SHAPED, redact

# What the attack used, and what else people type between digits.
SEPARATORS = [" ", "-", "\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2015", "\u2212", "\uff0d",
              "/", "_", ".", "(", ")", "\u00a0", "\u202f", "\t"]  # fmt: skip

digits = st.text(alphabet="0123456789", min_size=7, max_size=15)
gap = st.lists(st.sampled_from(SEPARATORS), max_size=2).map("".join)
# Text around the number: anything without a digit (a digit would make the number longer).
around = st.text(st.characters(blacklist_categories=("Nd",), blacklist_characters="+"), max_size=30)


@st.composite
def typed_number(draw: st.DrawFn) -> tuple[str, str]:
    """A number as a person might type it: (the digits, the typed form)."""
    number = draw(digits)
    typed = number[0] + "".join(draw(gap) + d for d in number[1:])
    return number, draw(st.sampled_from(["", "+"])) + typed


@given(typed_number(), around, around)
def test_the_last_three_digits_never_survive(number: tuple[str, str], before: str, after: str) -> None:
    plain, typed = number
    out = redact(before + typed + after)
    assert "".join(c for c in out if c in "0123456789") == plain[:-3]
    assert "***" in out


@given(st.text(max_size=60))
def test_every_phone_shaped_run_left_is_a_masked_one(text: str) -> None:
    """Whatever the input, a run of seven digits survives only as the kept part of a mask."""
    out = redact(text)
    for m in PHONE_SHAPED.finditer(out):
        assert out[m.end() : m.end() + 3] == "***", (text, out)


def test_the_attacks_forms() -> None:
    for typed in (
        "040\u2013123\u20134567",
        "040/123/4567",
        "+358_40_123_4567",
        "040.123.4567",
        "040 \u2014 123 \u2014 4567",
    ):
        assert "4567" not in redact(f"asked by {typed} today"), typed


@given(typed_number())
def test_log_lines_use_the_same_redaction(number: tuple[str, str]) -> None:
    plain, typed = number
    out = io.StringIO()
    logs.configure("info", out)
    try:
        structlog.get_logger("t").info("hold", reason=f"asked by {typed}")
    finally:
        structlog.reset_defaults()
    line = json.loads(out.getvalue())
    assert line["reason"] == redact(f"asked by {typed}")
    assert plain not in "".join(c for c in out.getvalue() if c in "0123456789")
