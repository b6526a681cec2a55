"""The web page as its people use it, in headless Chromium: an agent in Helsinki whose server
runs in UTC, a supervisor who finds a team member by their display name, a list of 2,500
calls paged with its total, a 360 px phone, Finnish and Swedish pages, and axe-core's WCAG 2.2
AA check on every page (no serious or critical violation).

With CALLREC_SCREENSHOTS set (``make screenshots``) each role's main screens are saved there as
PNG: the pictures in docs/web.md are these.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.harness.browser import Browser, Page, chromium
from tests.integration.access_world import World, add_recording, world

pytestmark = pytest.mark.skipif(chromium() is None, reason="needs the Debian package chromium")

HELSINKI = ZoneInfo("Europe/Helsinki")
NOW = datetime.now(UTC).replace(microsecond=0)
DASH = "\u2013"  # the en dash of the page's ranges, "1-25 of 2,500"
DISPLAY = {
    "alice": "Aino Nieminen",
    "bob": "Väinö Väinämöinen",
    "carol": "Kaisa Mäkinen",
    "sam": "Sami Salo",
    "dana": "Dana Tietosuoja",
}


def _shots() -> Path | None:
    where = os.environ.get("CALLREC_SCREENSHOTS")
    return Path(where) if where else None


async def shot(page: Page, name: str) -> None:
    where = _shots()
    if where is not None:
        await page.screenshot(where / f"{name}.png")


async def accessible(page: Page) -> None:
    violations = await page.axe()
    assert violations == [], violations


@asynccontextmanager
async def people_at_work(db_dsn: str, tmp_path: Path) -> AsyncIterator[tuple[World, Browser, str]]:
    """The access world with display names, alice in Helsinki, and calls of the last days."""
    async with world(db_dsn, tmp_path) as w, Browser.launch(tmp_path / "profile") as browser:
        for name, shown in DISPLAY.items():
            await w.pool.execute("UPDATE users SET display_name = $2 WHERE name = $1", name, shown)
        await w.pool.execute("UPDATE users SET time_zone = 'Europe/Helsinki' WHERE name IN ('alice', 'sam')")
        yield w, browser, str(w.client.make_url("/"))


async def recent(w: World, agent: str, *, days_ago: float, seconds: float = 1044, seed: int = 0) -> uuid.UUID:
    return await add_recording(
        w.pool,
        w.settings.asterisk.recordings_dir,
        agent=agent,
        started_at=NOW - timedelta(days=days_ago),
        seconds=seconds,
        seed=seed,
    )


async def sign_in(page: Page, base: str, w: World, who: str) -> None:
    await page.goto(base)
    await page.submit("form:has(input[name=token])", {"token": w.tokens[who]})
    assert await page.eval("document.querySelector('form.signout span').innerText") == DISPLAY[who]


async def test_agents_day_in_their_own_time_zone(db_dsn: str, tmp_path: Path) -> None:
    async with people_at_work(db_dsn, tmp_path) as (w, browser, base):
        mine = await recent(w, "alice", days_ago=2, seed=11)
        await recent(w, "alice", days_ago=9, seed=12)  # older than a week: not on arrival
        await recent(w, "bob", days_ago=1, seed=13)  # another agent's: never
        page = await browser.new_page()
        await page.emulate(zone="Europe/Helsinki", language="en-GB")
        await sign_in(page, base, w, "alice")

        # On arrival: the last seven days, in her zone, the zone named, durations as h:mm:ss.
        text = await page.text()
        started = (NOW - timedelta(days=2)).astimezone(HELSINKI)
        assert f"{started:%H:%M:%S} EET" in text and "17:24" in text
        assert f"Recordings 1{DASH}1 of 1" in text and "Times are read and shown in Europe/Helsinki." in text
        rows = await page.eval("[...document.querySelectorAll('tbody tr th a')].map(a => a.pathname)")
        assert rows == [f"/recordings/{mine}"]
        await accessible(page)
        await shot(page, "agent-list")

        # Play from the list, then seek on the recording's own page.
        played = await page.eval(
            "new Promise((ok, fail) => { const a = document.querySelector('tbody audio');"
            " a.addEventListener('ended', () => ok(a.currentTime), {once: true});"
            " a.addEventListener('error', () => fail(new Error('media error')));"
            " a.play().catch(fail); })"
        )
        assert played == pytest.approx(0.5, abs=0.01)
        await page.click("tbody tr th a")
        assert "17:24" in await page.text() and "Aino Nieminen" in await page.text()
        seeked = await page.eval(
            "new Promise((ok, fail) => { const a = document.querySelector('main audio');"
            " const go = () => { a.addEventListener('seeked', () => ok(a.currentTime), {once: true});"
            " a.currentTime = 0.3; };"
            " if (a.readyState >= 1) go(); else a.addEventListener('loadedmetadata', go, {once: true}); })"
        )
        assert seeked == pytest.approx(0.3, abs=0.01)
        await accessible(page)
        await shot(page, "agent-recording")

        # Back keeps the list; a time typed is read in her zone: 2 days ago at her wall clock.
        await page.click("main > p a")
        assert f"Recordings 1{DASH}1 of 1" in await page.text()
        typed = (started - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
        until = (started + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
        await page.submit("form.search", {"from": typed, "to": until})
        assert f"Recordings 1{DASH}1 of 1" in await page.text()
        wrong = (started + timedelta(hours=-2, minutes=-1)).strftime("%Y-%m-%dT%H:%M")  # the UTC reading
        await page.submit("form.search", {"from": wrong, "to": wrong[:-2] + "59"})
        assert "No recordings match." in await page.text()


async def test_supervisor_finds_a_team_members_call_by_display_name(db_dsn: str, tmp_path: Path) -> None:
    async with people_at_work(db_dsn, tmp_path) as (w, browser, base):
        bobs = await recent(w, "bob", days_ago=1, seconds=300, seed=21)
        await recent(w, "alice", days_ago=1, seconds=60, seed=22)
        await recent(w, "dave", days_ago=1, seed=23)  # another team's
        page = await browser.new_page()
        await sign_in(page, base, w, "sam")
        # The agent list is his team by name, in any script; dave (sid's team) is not in it.
        names = await page.eval(
            "[...document.querySelectorAll('select[name=agent] option')].map(o => o.text)"
        )
        assert names == ["All agents", "Aino Nieminen", "Sami Salo", "Väinö Väinämöinen"]
        await page.eval(
            "(() => { const s = document.querySelector('select[name=agent]');"
            " s.value = [...s.options].find(o => o.text === 'Väinö Väinämöinen').value; })()"
        )
        await page.click("form.search button[type=submit]")
        rows = await page.eval("[...document.querySelectorAll('tbody tr th a')].map(a => a.pathname)")
        assert rows == [f"/recordings/{bobs}"]
        assert "Väinö Väinämöinen" in await page.text() and "5:00" in await page.text()
        await accessible(page)
        await shot(page, "supervisor-list")


async def test_2500_calls_paged_with_a_total_and_sorted(db_dsn: str, tmp_path: Path) -> None:
    async with people_at_work(db_dsn, tmp_path) as (w, browser, base):
        # 2,500 rows in one statement: copies of one recording at one-minute steps, durations varied.
        await w.pool.execute(
            """
            INSERT INTO recordings (id, call_id, register_name, direction, started_at, ended_at,
                duration_seconds, service_number, customer_number_masked, agent_name, file_path,
                file_size, sha256, node, recovered, interrupted, agents, paused, retain_until)
            SELECT gen_random_uuid(), 'bulk.' || i, register_name, direction,
                   now() - i * interval '1 minute',
                   now() - i * interval '1 minute' + (i % 97) * interval '1 second',
                   i % 97, service_number, customer_number_masked, agent_name, file_path || '.' || i,
                   file_size, sha256, node, false, false, agents, paused, retain_until
            FROM recordings, generate_series(1, 2500) i WHERE id = $1
            """,
            w.recs["alice"],
        )
        page = await browser.new_page()
        await sign_in(page, base, w, "dana")
        text = await page.text()
        assert f"Recordings 1{DASH}25 of 2,500" in text and "Page 1 of 100" in text
        await page.click("a[rel=next]")
        assert f"Recordings 26{DASH}50 of 2,500" in await page.text()
        # Sorting by duration, longest first: the 25 calls of 96 s (1:36) fill page 1, and page 2
        # goes on with 95 s: paging keeps the sort.
        await page.click("th[aria-sort] a[href*='sort=duration']")
        await page.click("th[aria-sort] a[href*='sort=-duration']")
        first = await page.eval("document.querySelector('tbody tr td').innerText")
        assert first == "1:36"
        assert await page.eval("document.querySelector('th[aria-sort=descending]').innerText") == "Duration"
        await page.click("a[rel=next]")
        assert f"Recordings 26{DASH}50 of 2,500" in await page.text()
        assert await page.eval("document.querySelector('tbody tr td').innerText") == "1:35"
        await accessible(page)
        await shot(page, "dpo-list")


async def test_a_phone_window_never_scrolls_sideways(db_dsn: str, tmp_path: Path) -> None:
    async with people_at_work(db_dsn, tmp_path) as (w, browser, base):
        rid = await recent(w, "alice", days_ago=1, seed=31)
        page = await browser.new_page()
        await page.emulate(width=360, height=740)
        await page.goto(base)
        assert await page.sideways_overflow() == 0
        await sign_in(page, base, w, "dana")
        for path in ("", f"recordings/{rid}", "dsar", "?range=30d&direction=inbound"):
            await page.goto(base + path)
            assert await page.sideways_overflow() == 0, path
            await accessible(page)
        await page.goto(base)
        await shot(page, "phone-list")


@pytest.mark.parametrize(
    ("language", "title", "date_pattern"),
    [
        ("fi", "Tallenteet", r"\d{1,2}\.\d{1,2}\.\d{4} \d{1,2}\.\d{2}\.\d{2} EET"),
        ("sv", "Inspelningar", r"\d{1,2} [a-zåäö]+\.? \d{4} \d{1,2}\.\d{2}\.\d{2} EET"),
    ],
)
async def test_finnish_and_swedish_pages(
    db_dsn: str, tmp_path: Path, language: str, title: str, date_pattern: str
) -> None:
    async with people_at_work(db_dsn, tmp_path) as (w, browser, base):
        await recent(w, "alice", days_ago=1, seed=41)
        page = await browser.new_page()
        await page.emulate(language=language)  # the browser's language chooses, before sign-in too
        await page.goto(base)
        assert await page.eval("document.documentElement.lang") == language
        await sign_in(page, base, w, "alice")
        assert await page.eval("document.querySelector('h1').innerText") == title
        assert re.search(date_pattern, await page.text()), await page.text()
        await accessible(page)
        await shot(page, f"agent-list-{language}")
        # The person's own pick wins over the browser's, and stays with them.
        await page.click("footer button[value=en]")
        assert await page.eval("document.documentElement.lang") == "en"
        assert await w.pool.fetchval("SELECT language FROM users WHERE name = 'alice'") == "en"


async def test_errors_keep_the_form_in_plain_words(db_dsn: str, tmp_path: Path) -> None:
    async with people_at_work(db_dsn, tmp_path) as (w, browser, base):
        page = await browser.new_page()
        await sign_in(page, base, w, "sam")
        await page.goto(base + "?min_minutes=ten&service_number=0300")
        text = await page.text()
        assert "The shortest duration must be a number of minutes." in text
        assert await page.eval("document.querySelector('input[name=service_number]').value") == "0300"
        assert await page.eval("document.querySelector('input[name=min_minutes]').value") == "ten"
        assert "Traceback" not in text and "min_seconds" not in text
        await accessible(page)


async def test_the_accessibility_check_finds_what_it_should(tmp_path: Path) -> None:
    """The check itself can fail: a page without a language, an image without text and an
    unlabelled field are each reported."""
    async with Browser.launch(tmp_path / "profile") as browser:
        page = await browser.new_page()
        await page.goto("data:text/html,<title>x</title><img src='x.png'><input name=q>")
        found = {v["id"] for v in await page.axe()}
        assert {"html-has-lang", "image-alt", "label"} <= found, found
