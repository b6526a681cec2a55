"""The page's reader: language and zone precedence, times shown and read in the reader's zone,
durations and sizes, and the [web] table and register titles of callrec.toml."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from babel.messages import pofile

from callrec.access.people import Principal
from callrec.config import ConfigError, load
from callrec.web import render
from callrec.web.settings import WebSettings
from tests.unit.test_config import GOOD, write

HKI = render.Reader("fi", "Europe/Helsinki")


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0:00"), (59.6, "1:00"), (1044, "17:24"), (3600, "1:00:00"), (36061, "10:01:01")],
)
def test_durations_are_h_mm_ss(seconds: float, shown: str) -> None:
    assert render.duration(seconds) == shown


@pytest.mark.parametrize(
    ("count", "en", "fi"),
    [(512, "512 B", "512 B"), (1_536_000, "1.5 MB", "1,5 MB"), (250_000, "250 kB", "250 kB")],
)
def test_sizes_in_the_readers_number_format(count: int, en: str, fi: str) -> None:
    assert render.size(render.Reader("en", "UTC"), count) == en
    assert render.size(HKI, count) == fi


def test_a_moment_is_shown_in_the_readers_zone_and_named() -> None:
    call = datetime(2026, 12, 2, 11, 47, 5, tzinfo=UTC)
    assert HKI.when(call) == "2.12.2026 13.47.05 EET"
    assert render.Reader("en", "UTC").when(call) == "2 Dec 2026, 11:47:05 UTC"
    summer = datetime(2026, 7, 1, 7, 20, tzinfo=UTC)
    assert HKI.when(summer).endswith("10.20.00 EEST")


def test_a_typed_time_is_read_in_the_readers_zone() -> None:
    assert HKI.read_local("2026-12-02T10:20") == "2026-12-02T10:20:00+02:00"
    assert HKI.read_local("2026-07-01T10:20") == "2026-07-01T10:20:00+03:00"
    # An offset typed is kept; what is not a time is passed on for http/core.py to name.
    assert HKI.read_local("2026-12-02T10:20+00:00") == "2026-12-02T10:20:00+00:00"
    assert HKI.read_local("yesterday") == "yesterday"
    assert HKI.read_local("  ") == ""
    # The hour that happens twice at the end of summer time: its first occurrence (EEST).
    assert HKI.read_local("2026-10-25T03:30") == "2026-10-25T03:30:00+03:00"
    assert HKI.local_input(datetime(2026, 12, 2, 8, 20, tzinfo=UTC)) == "2026-12-02T10:20"


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("fi-FI,fi;q=0.9,en;q=0.8", "fi"),
        ("de-DE,sv;q=0.7,fi;q=0.5", "sv"),
        ("en;q=0.1, fi;q=0.9", "fi"),
        ("de, fr", None),
        ("fi;q=0", None),
        ("fi;q=x", None),
        ("", None),
    ],
)
def test_the_browsers_language(header: str, language: str | None) -> None:
    assert render.browser_language(header) == language


def _request(headers: dict[str, str]) -> web.Request:
    return make_mocked_request("GET", "/", headers=headers)


def test_the_person_outranks_their_pick_the_browser_and_the_default() -> None:
    web = WebSettings(time_zone="Europe/Stockholm", language="sv")
    aino = Principal(1, "aino", "agent", "aino", "Aino", "Europe/Helsinki", "fi")
    plain = Principal(2, "bo", "agent", "bo")
    finnish = {"Accept-Language": "fi-FI"}
    picked = finnish | {"Cookie": "callrec_lang=en"}
    assert render.reader_of(_request(picked), aino, web) == render.Reader("fi", "Europe/Helsinki")
    assert render.reader_of(_request(picked), plain, web) == render.Reader("en", "Europe/Stockholm")
    assert render.reader_of(_request(finnish), None, web) == render.Reader("fi", "Europe/Stockholm")
    assert render.reader_of(_request({}), None, web).language == "sv"
    # A zone stored before it was withdrawn from the system falls back, never fails the page.
    gone = Principal(3, "x", "agent", "x", None, "Mars/Olympus", None)
    assert render.reader_of(_request({}), gone, web).zone_name == "Europe/Stockholm"


def test_every_catalogue_translates_every_string() -> None:
    """`make messages` adds each new string of the page to both catalogues; none ships blank."""
    for language in ("fi", "sv"):
        po = Path(render.__file__).parent / f"locale/{language}/LC_MESSAGES/callrec.po"
        with po.open("rb") as f:
            catalog = pofile.read_po(f)
        blank = [m.id for m in catalog if m.id and not m.string]
        assert blank == [], (language, blank)
        assert len(catalog) > 80
        assert render.translations(language).gettext("Recordings") != "Recordings"


def test_web_table_and_register_titles(tmp_path: Path) -> None:
    text = GOOD.replace(
        "[metrics]", '[web]\ntime_zone = "Europe/Helsinki"\nlanguage = "fi"\n[metrics]'
    ).replace(
        'retention = "1 month"',
        'retention = "1 month"\ntitle = {en = "Telesales", fi = "Puhelinmyynti"}',
    )
    s = load(write(tmp_path, text))
    assert (s.web.zone, s.web.language) == ("Europe/Helsinki", "fi")
    assert s.registers["telesales"].title("fi") == "Puhelinmyynti"
    assert s.registers["telesales"].title("sv") == "telesales"
    assert s.registers["customer-service"].title("fi") == "customer-service"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[web]\ntime_zone = "Europe/Helsinky"', "web.time_zone: 'Europe/Helsinky' is not a time zone"),
        ('[web]\nlanguage = "de"', "web.language: 'de': expected one of en, fi, sv"),
        ("[web]\nzone = 1", "web.zone: unknown key"),
    ],
)
def test_web_table_mistakes_are_one_line(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load(write(tmp_path, GOOD.replace("[metrics]", table + "\n[metrics]")))
