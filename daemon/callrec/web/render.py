"""Rendering a page for the person reading it: their language, their time zone, their formats.

A ``Reader`` is decided once per request (``reader_of``): the language is the person's own
(``users.language``), else the one they picked on the page (a cookie), else the browser's
Accept-Language, else ``[web] language``; the zone is the person's (``users.time_zone``),
else ``[web] time_zone``, else the host's (docs/web.md#time-zones-and-languages). Every
time is shown in that zone with the zone named, and every time typed is read in it
(``read_local``), so an agent in Helsinki sees 13:47 for a 13:47 call whatever the server's
zone is.

Templates are Jinja2 with autoescaping on: every value a page shows is escaped by the
template engine, none by hand. Strings are English in the source and translated through
gettext catalogues (web/locale/<lang>/LC_MESSAGES/callrec.po, read at start, no build step);
``make messages`` extracts new strings into them.
"""

from __future__ import annotations

import functools
import gettext
import io
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib.resources import files
from typing import Any
from zoneinfo import ZoneInfo

import babel
import babel.dates
import babel.numbers
import jinja2
from aiohttp import web
from babel.messages import mofile, pofile
from babel.support import Translations

from callrec.access.people import Principal
from callrec.web.settings import LANGUAGES, WebSettings, zone_or_none

LANGUAGE_COOKIE = "callrec_lang"
"""The language a signed-out visitor picked; a signed-in person's is stored with them."""
LANGUAGE_NAMES = {"en": "English", "fi": "suomi", "sv": "svenska"}
# English as the British write dates (day before month, 24-hour clock): the page is for
# European call centres; fi and sv use their own CLDR formats.
_LOCALES = {"en": "en_GB", "fi": "fi_FI", "sv": "sv_FI"}


@functools.cache
def translations(language: str) -> gettext.NullTranslations:
    """The catalogue of ``language``, compiled from its .po file in memory."""
    if language == "en":
        return gettext.NullTranslations()
    po = files(__package__).joinpath(f"locale/{language}/LC_MESSAGES/callrec.po")
    with po.open("rb") as f:
        catalog = pofile.read_po(f, locale=language)
    compiled = io.BytesIO()
    mofile.write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


@functools.cache
def _locale(language: str) -> babel.Locale:
    """Parsed once per language: every time and number on a page asks for it."""
    return babel.Locale.parse(_LOCALES[language])


@dataclass(frozen=True, slots=True)
class Reader:
    """Who a page is rendered for: the language and zone every string and time follow."""

    language: str
    zone_name: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.zone_name)

    @property
    def locale(self) -> babel.Locale:
        return _locale(self.language)

    def gettext(self, message: str) -> str:
        return translations(self.language).gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return translations(self.language).ngettext(singular, plural, n)

    def when(self, value: datetime | None) -> str:
        """A moment in the reader's zone, the zone named: ``2.12.2026 klo 13.47.05 EET``."""
        if value is None:
            return ""
        local = value.astimezone(self.zone)
        shown = babel.dates.format_datetime(local, "medium", tzinfo=self.zone, locale=self.locale)
        return f"{shown} {local.strftime('%Z')}"

    def day(self, value: datetime) -> str:
        return babel.dates.format_date(value.astimezone(self.zone), "medium", locale=self.locale)

    def local_input(self, value: datetime | None) -> str:
        """The value of a datetime-local field: the reader's wall clock, as they type it."""
        return value.astimezone(self.zone).strftime("%Y-%m-%dT%H:%M") if value else ""

    def read_local(self, text: str) -> str:
        """A time a person typed, as ISO 8601 with the offset of their zone (for http/core.py).

        A time with an offset of its own keeps it; a wall-clock time is read in the reader's
        zone (the ambiguous hour at the end of summer time is its first occurrence)."""
        text = text.strip()
        if not text:
            return ""
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return text  # http/core.py names the field and says what it expects
        if value.tzinfo is None:
            value = value.replace(tzinfo=self.zone)
        return value.isoformat()

    def now(self) -> datetime:
        return datetime.now(self.zone)

    def number(self, value: float, digits: int = 0) -> str:
        return babel.numbers.format_decimal(round(value, digits), locale=self.locale)


def duration(seconds: float | None) -> str:
    """h:mm:ss (m:ss under an hour): 1044 seconds is 17:24."""
    if seconds is None:
        return ""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


_UNITS = ("B", "kB", "MB", "GB", "TB")


def size(reader: Reader, count: int | None) -> str:
    """Bytes as a person reads them, in the reader's number format: 1,5 MB."""
    if count is None:
        return ""
    value, unit = float(count), 0
    while value >= 1000 and unit < len(_UNITS) - 1:
        value, unit = value / 1000, unit + 1
    return f"{reader.number(value, 0 if unit == 0 or value >= 100 else 1)} {_UNITS[unit]}"


def _accepted(header: str) -> list[str]:
    """Accept-Language's tags, most preferred first."""
    weighted = []
    for position, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if tag and q > 0:
            weighted.append((-q, position, tag.strip()))
    return [tag for _, _, tag in sorted(weighted)]


def browser_language(header: str | None) -> str | None:
    for tag in _accepted(header or ""):
        base = tag.split("-")[0].lower()
        if base in LANGUAGES:
            return base
    return None


def reader_of(request: web.Request, who: Principal | None, settings: WebSettings) -> Reader:
    picked = request.cookies.get(LANGUAGE_COOKIE)
    language = (
        (who.language if who and who.language in LANGUAGES else None)
        or (picked if picked in LANGUAGES else None)
        or browser_language(request.headers.get("Accept-Language"))
        or settings.language
    )
    zone = who.time_zone if who and who.time_zone and zone_or_none(who.time_zone) else settings.zone
    return Reader(language, zone)


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("callrec.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=["jinja2.ext.i18n"],
)
_TEMPLATES.filters["duration"] = duration
_TEMPLATES.filters["isotime"] = datetime.fromisoformat  # the agents list's times (facts.AgentStint)


def render(template: str, reader: Reader, **values: Any) -> str:
    # The event loop renders one page at a time and rendering never awaits, so installing
    # this reader's catalogue on the shared environment cannot leak into another page.
    _TEMPLATES.install_gettext_translations(translations(reader.language), newstyle=True)  # type: ignore[attr-defined]
    return _TEMPLATES.get_template(template).render(
        reader=reader,
        when=reader.when,
        day=reader.day,
        local_input=reader.local_input,
        size=functools.partial(size, reader),
        number=reader.number,
        languages=LANGUAGE_NAMES,
        **values,
    )


def days_ago(reader: Reader, days: int) -> datetime:
    """Midnight ``days`` days before today, in the reader's zone: the start of a quick range."""
    today = reader.now().replace(hour=0, minute=0, second=0, microsecond=0)
    return (today - timedelta(days=days)).replace(tzinfo=reader.zone)
