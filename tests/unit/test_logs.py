"""Log redaction: a phone number passed to any logger by mistake never reaches the output."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from callrec import logs

RAW = "+358 40 123 4567"
DIGITS = "358401234567"


@pytest.fixture
def out() -> io.StringIO:
    stream = io.StringIO()
    logs.configure("debug", stream)
    yield stream
    structlog.reset_defaults()


@pytest.mark.parametrize("method", ["debug", "info", "warning", "error", "critical"])
def test_every_level_redacts(out: io.StringIO, method: str) -> None:
    log = structlog.get_logger("callrec.test")
    getattr(log, method)(f"call from {RAW}", caller=RAW, nested={"n": [DIGITS]}, number=int(DIGITS))
    text = out.getvalue()
    assert DIGITS not in text.replace(" ", "")
    assert "+358401234***" in text
    json.loads(text)  # still one JSON object per line


def test_bound_and_contextvars_paths_redact(out: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(peer=DIGITS)
    try:
        structlog.get_logger("x").bind(who=f"tel:{RAW}").info("bound")
    finally:
        structlog.contextvars.clear_contextvars()
    assert DIGITS not in out.getvalue().replace(" ", "")


def test_exception_text_is_redacted(out: io.StringIO) -> None:
    try:
        raise ValueError(f"bad number {RAW}")
    except ValueError:
        structlog.get_logger("x").exception("failed")
    assert DIGITS not in out.getvalue().replace(" ", "")


def test_identifiers_are_left_alone(out: io.StringIO) -> None:
    structlog.get_logger("x").info("stored", call_id="1795373223.0", recording_id="6f1c", bytes=72684)
    rec = json.loads(out.getvalue())
    assert rec["call_id"] == "1795373223.0" and rec["bytes"] == 72684
