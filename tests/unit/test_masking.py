"""Masking (docs/privacy.md#masking, R3): worked examples, then properties for any input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callrec.privacy import MASK, mask_number, number_hmac


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("+358 40 123 4567", "+358401234***"),
        ("040-123 4567", "0401234***"),
        ("(09) 123 456", "09123***"),
        ("1234", "1***"),
        ("123", "***"),
        ("1", "***"),
        ("", None),
        (None, None),
        ("anonymous", None),
        ("Unavailable", None),
        ("358+401234567", "358401234***"),
        ('"+358,40";../../etc', "+35***"),
        ("٣٣٣٣٣", None),  # Arabic-Indic digits are not dialable digits
    ],
)
def test_examples(raw: str | None, masked: str | None) -> None:
    assert mask_number(raw) == masked


@given(st.text())
def test_never_reveals_the_last_three_digits(raw: str) -> None:
    masked = mask_number(raw)
    digits = "".join(c for c in raw if c in "0123456789")
    if not digits:
        assert masked is None
        return
    assert masked is not None
    assert masked.endswith(MASK)
    shown = masked[: -len(MASK)].lstrip("+")
    assert shown == digits[:-3]
    assert set(masked) <= set("+0123456789*")


@given(st.from_regex(r"\+?[0-9 ()-]{0,30}", fullmatch=True))
def test_idempotent_on_shape_and_length(raw: str) -> None:
    masked = mask_number(raw)
    if masked is None:
        return
    digits = sum(c.isdigit() for c in raw)
    assert len(masked.lstrip("+")) == max(digits, 3)
    # Masking twice never uncovers anything and never changes an already masked value's digits.
    again = mask_number(masked)
    assert again is None or again.endswith(MASK)


@given(st.text(alphabet="0123456789", min_size=4, max_size=20))
def test_numbers_differing_only_in_last_three_digits_mask_alike(digits: str) -> None:
    other = digits[:-3] + "".join(str((int(c) + 1) % 10) for c in digits[-3:])
    assert mask_number(digits) == mask_number(other)


def test_hmac_tells_apart_numbers_the_mask_cannot() -> None:
    key = b"k" * 32
    a, b = number_hmac("+358 40 123 4567", key), number_hmac("+358401234568", key)
    assert a is not None and b is not None and a != b
    assert a == number_hmac("+358-40-123-4567", key), "formatting does not change the HMAC"
    assert number_hmac("+358401234567", None) is None
    assert number_hmac("anonymous", key) is None
    assert number_hmac("+358401234567", b"other-key-xxxxxxxx") != a
