"""The ``[web]`` table: how the web page shows times and which language it speaks when
neither the person nor the browser says (docs/web.md#time-zones-and-languages)."""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callrec.config_tables import ConfigError, Section

LANGUAGES = ("en", "fi", "sv")
"""The languages the page is translated into (web/locale/); English is the source."""


@functools.cache
def host_zone() -> str:
    """The host's IANA zone name: $TZ, else /etc/localtime's target, else /etc/timezone, else
    UTC. Read once, not on each page (a change of the host's zone takes a restart)."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(os.readlink("/etc/localtime").partition("zoneinfo/")[2])
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    for name in candidates:
        if name and zone_or_none(name) is not None:
            return name
    return "UTC"


def zone_or_none(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def check_zone(name: str, where: str) -> str:
    if zone_or_none(name) is None:
        raise ConfigError(f"{where}: {name!r} is not a time zone; use an IANA name such as Europe/Helsinki")
    return name


@dataclass(frozen=True, slots=True)
class WebSettings:
    time_zone: str | None = None
    """The zone of a person without one of their own; ``None``: the host's (``host_zone``)."""
    language: str = "en"
    """The language when neither the person nor the browser names one of LANGUAGES."""

    @property
    def zone(self) -> str:
        return self.time_zone or host_zone()


def parse_web(web: Section) -> WebSettings:
    time_zone = web.get("time_zone", str, "") or None
    if time_zone is not None:
        check_zone(time_zone, "web.time_zone")
    language = web.get("language", str, "en")
    if language not in LANGUAGES:
        raise ConfigError(f"web.language: {language!r}: expected one of {', '.join(LANGUAGES)}")
    web.refuse_unknown()
    return WebSettings(time_zone, language)
