"""Log redaction: a phone number passed to any logger by mistake never reaches the output."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from callrec.ops import logs

RAW = "+358 40 123 4567"
DIGITS = "358401234567"


@pytest.fixture
def out() -> io.StringIO:
    stream = io.StringIO()
    logs.configure("debug", stream)
    yield stream
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logs._StdlibHandler)]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)


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


def test_stdlib_logging_is_json_and_redacted(out: io.StringIO) -> None:
    # asyncio reports a task that died with an exception nobody awaited, repr and all.
    try:
        raise ValueError(f"no such caller {RAW}")
    except ValueError:
        logging.getLogger("asyncio").error("Task exception was never retrieved: %s", RAW, exc_info=True)
    logging.getLogger("aiohttp.server").info("library chatter below WARNING is dropped")
    text = out.getvalue()
    assert DIGITS not in text.replace(" ", "")
    (rec,) = [json.loads(line) for line in text.splitlines()]
    assert rec["logger"] == "asyncio" and rec["level"] == "error"
    assert rec["event"] == "Task exception was never retrieved: +358401234***"
    assert "ValueError" in rec["exception"]


def test_configuring_twice_keeps_one_stdlib_handler(out: io.StringIO) -> None:
    logs.configure("info", out)
    logging.getLogger("asyncio").warning("once")
    assert out.getvalue().count('"once"') == 1


def test_a_channel_name_is_redacted_but_a_uniqueid_is_not(out: io.StringIO) -> None:
    log = structlog.get_logger("x")
    log.info("by name", channel="Local/0401234567@callrec-outside-00000001;1")
    log.info("by id", channel="1795373223.12")
    by_name, by_id = (json.loads(line) for line in out.getvalue().splitlines())
    assert "0401234567" not in by_name["channel"] and "0401234***" in by_name["channel"]
    assert by_id["channel"] == "1795373223.12"
