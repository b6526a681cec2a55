"""structlog setup: one JSON object per line on stdout (journald keeps it).

A last processor masks anything shaped like a phone number, so a number passed to a logger
by mistake still never reaches the journal (REQUIREMENTS.md: no full number in any log).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from callrec.masking import mask_number

# Seven or more digits, possibly with a leading + and the usual separators: a phone number.
PHONE_SHAPED = re.compile(r"\+?\d(?:[\s().-]*\d){6,}")
# Values that are identifiers, not numbers anyone dialled (linkedids look like 1795373223.0).
_EXEMPT = frozenset({"call_id", "channel", "recording_id", "timestamp", "pid", "port", "bytes"})


def _mask_match(m: re.Match[str]) -> str:
    return mask_number(m.group(0)) or "***"


def redact(value: str) -> str:
    return PHONE_SHAPED.sub(_mask_match, value)


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
        if key not in _EXEMPT:
            event_dict[key] = _redact_value(value)
    return event_dict


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_phone_numbers,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
