"""HTTP Range parsing (RFC 9110 section 14), pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callrec.http.audio import ByteRange, Unsatisfiable, parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("bytes=0-0", 100, ByteRange(0, 0)),
        ("bytes=0-99", 100, ByteRange(0, 99)),
        ("bytes=10-", 100, ByteRange(10, 99)),
        ("bytes=-10", 100, ByteRange(90, 99)),
        ("bytes=-1000", 100, ByteRange(0, 99)),
        ("bytes=50-5000", 100, ByteRange(50, 99)),
        ("Bytes = 1-2", 100, ByteRange(1, 2)),
        ("items=0-5", 100, None),  # another unit: ignored
        ("bytes=0-1, 4-5", 100, None),  # several ranges: the whole file
    ],
)
def test_satisfiable(header: str | None, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=100-", 100),
        ("bytes=5-4", 100),
        ("bytes=-0", 100),
        ("bytes=-", 100),
        ("bytes=", 100),
        ("bytes", 100),
        ("bytes=a-b", 100),
        ("bytes=1-2-3", 100),
        ("bytes=٣-4", 100),  # a non-ASCII digit is not a digit in HTTP
        ("bytes=0-", 0),
        ("bytes=-5", 0),
    ],
)
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)


@given(st.integers(0, 10_000), st.integers(0, 20_000), st.integers(0, 20_000))
def test_a_range_is_always_inside_the_file(size: int, a: int, b: int) -> None:
    for header in (f"bytes={a}-{b}", f"bytes={a}-", f"bytes=-{b}"):
        try:
            rng = parse_range(header, size)
        except Unsatisfiable:
            continue
        assert rng is not None
        assert 0 <= rng.start <= rng.end < size
        assert rng.content_range(size) == f"bytes {rng.start}-{rng.end}/{size}"


@given(st.integers(1, 10_000), st.integers(0, 9_999))
def test_first_last_is_exact_when_inside(size: int, start: int) -> None:
    start = start % size
    assert parse_range(f"bytes={start}-{size - 1}", size) == ByteRange(start, size - 1)
