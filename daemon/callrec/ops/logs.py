"""structlog setup: one JSON object per line on stdout (journald keeps it).

A last processor masks anything shaped like a phone number, so a number passed to a logger
by mistake still never reaches the journal (docs/privacy.md#redaction-of-logs).
Records of the standard ``logging`` module (asyncio's "Task exception was never retrieved",
aiohttp's "Error handling request", ...) take the same way: otherwise Python's last-resort
handler would print them as plain, unmasked text.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from callrec.privacy import redact

# Values that are identifiers, not numbers anyone dialled (linkedids look like 1795373223.0).
_EXEMPT = frozenset({"call_id", "recording_id", "timestamp", "pid", "port", "bytes"})
# A channel is exempt only as a uniqueid: a channel *name* holds what was dialled
# (Local/0401234567@callrec-outside-00000001;1).
_UNIQUEID = re.compile(r"^[0-9]{1,20}\.[0-9]{1,10}$")


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) >= 1_000_000:
        return redact(str(value))
    return value


def redact_phone_numbers(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if key in _EXEMPT or (key == "channel" and isinstance(value, str) and _UNIQUEID.match(value)):
            continue
        event_dict[key] = _redact_value(value)
    return event_dict


class _StdlibHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks our handler on the root logger, so configuring twice replaces it, not doubles it."""


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_phone_numbers,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = _StdlibHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_phone_numbers,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries' info and debug chatter is not ours to ship; their warnings and errors are.
    root.setLevel(max(numeric, logging.WARNING))
