"""The web page in headless Chromium: an agent signs in, searches and plays a recording
(HTML5 audio seeking through HTTP Range) and cannot reach another agent's recording. The
DPO's data-subject request is in test_web_dsar_browser.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.harness.browser import Browser, Page, chromium
from tests.integration.access_world import T0, World, world

pytestmark = pytest.mark.skipif(chromium() is None, reason="needs the Debian package chromium")

PLAY = """
new Promise((resolve, reject) => {
  const a = document.querySelector('audio');
  const fail = () => reject(new Error('media error ' + (a.error && a.error.code)));
  a.addEventListener('error', fail);
  const go = () => {
    const duration = a.duration;
    a.addEventListener('seeked', () => {
      const seekedTo = a.currentTime;
      a.addEventListener('ended', () => resolve({
        duration, seekedTo, end: a.currentTime, seekable: a.seekable.length ? a.seekable.end(0) : 0,
      }), {once: true});
      a.play().catch(reject);
    }, {once: true});
    a.currentTime = duration / 2;
  };
  if (a.readyState >= 1) go(); else a.addEventListener('loadedmetadata', go, {once: true});
})
"""


def local(minutes: int = 0) -> str:
    """A datetime-local value as a person types it: server time, no offset."""
    from datetime import timedelta

    return (T0 + timedelta(minutes=minutes)).astimezone().strftime("%Y-%m-%dT%H:%M")


async def sign_in(page: Page, base: str, w: World, who: str) -> None:
    await page.goto(base)
    await page.submit("form:has(input[name=token])", {"token": w.tokens[who]})
    text = await page.text()
    assert "Sign out" in text and who in text


async def test_agent_searches_plays_and_cannot_reach_another_agents_recording(
    db_dsn: str, tmp_path: Path
) -> None:
    async with world(db_dsn, tmp_path) as w, Browser.launch(tmp_path / "profile") as browser:
        base = str(w.client.make_url("/"))
        page = await browser.new_page()
        await sign_in(page, base, w, "alice")

        await page.submit("form[action='/']", {"from": local(-60), "to": local(24 * 60)})
        links = await page.eval("[...document.querySelectorAll('tbody th a')].map(a => a.pathname)")
        assert links == [f"/recordings/{w.recs['alice']}"]

        loaded = browser.expect("Page.loadEventFired", page.session)
        await page.eval("document.querySelector('tbody th a').click()")
        await asyncio.wait_for(loaded, 15)
        played = await asyncio.wait_for(page.eval(PLAY), 15)
        assert played["duration"] == pytest.approx(0.5, abs=0.01)
        assert played["seekedTo"] == pytest.approx(0.25, abs=0.01)
        assert played["end"] == pytest.approx(0.5, abs=0.01) and played["seekable"] > 0

        bob = w.recs["bob"]
        await page.goto(f"{base}recordings/{bob}")
        assert "no such page or recording" in await page.text()
        status = await page.eval(f"fetch('/api/recordings/{bob}/audio').then(r => r.status)")
        assert status == 404
        await page.goto(base)
        await page.goto(f"{base}?agent=bob&from={local(-60)}")  # an agent has no agent field
        assert "No recordings match." in await page.text()

        plays = await w.pool.fetch(
            "SELECT recording_id, status, outcome FROM audit_log"
            " WHERE action = 'play' AND user_name = 'alice'"
        )
        mine = {(r["status"], r["outcome"]) for r in plays if r["recording_id"] == w.recs["alice"]}
        assert (206, "ok") in mine  # the player asked for byte ranges
        assert {(r["status"], r["outcome"]) for r in plays if r["recording_id"] == bob} == {
            (404, "not_found")
        }
