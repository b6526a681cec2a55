"""The DPO's data-subject request in headless Chromium, from request to receipt: the server
runs in UTC, the DPO lives in Europe/Helsinki and types the local time the caller gave; among
calls that share the caller's masked number the right one is found, heard inline, exported
without the employees' identity, and its receipt matches the downloaded zip
(docs/web.md#data-subject-requests)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from tests.harness.browser import Browser, Page, chromium
from tests.integration.access_world import T0, World, add_recording, world
from tests.integration.test_web_browser import sign_in
from tests.integration.test_web_page import accessible, shot

pytestmark = pytest.mark.skipif(chromium() is None, reason="needs the Debian package chromium")

CALLER = "+358 40 555 0123"
OTHER = "+358 40 555 0999"  # another person, the same masked number +358405550***

PLAY = """
new Promise((resolve, reject) => {
  const a = document.querySelector(%s);
  a.addEventListener('error', () => reject(new Error('media error ' + (a.error && a.error.code))));
  a.addEventListener('ended', () => resolve(a.currentTime), {once: true});
  a.play().catch(reject);
})
"""

READY = """new Promise(r => document.readyState === 'complete' ? r() : addEventListener('load', () => r()))"""


async def _loaded(page: Page, script: str) -> None:
    """Run ``script`` (a click, a history step) and wait for the page it loads."""
    loaded = page.browser.expect("Page.loadEventFired", page.session)
    await page.eval(script)
    await asyncio.wait_for(loaded, 15)


async def _calls(w: World) -> dict[str, str]:
    """Without the HMAC key (masked matching only): the caller's call at 10:12 Helsinki time
    (08:12 UTC) and another caller's at 12:31 Helsinki (10:31 UTC), where 10:20 typed as UTC
    would land."""
    recs = w.settings.asterisk.recordings_dir
    mine = await add_recording(
        w.pool, recs, agent="alice", started_at=T0.replace(hour=8, minute=12), number=CALLER, seed=31
    )
    other = await add_recording(
        w.pool, recs, agent="bob", started_at=T0.replace(hour=10, minute=31), number=OTHER, seed=32
    )
    await w.pool.execute("UPDATE users SET display_name = 'Aino Nieminen' WHERE name = 'alice'")
    await w.pool.execute("UPDATE users SET time_zone = 'Europe/Helsinki' WHERE name = 'dana'")
    return {"mine": str(mine), "other": str(other)}


async def test_dpo_case_from_request_to_receipt_in_helsinki_time(db_dsn: str, tmp_path: Path) -> None:
    async with world(db_dsn, tmp_path) as w, Browser.launch(tmp_path / "profile") as browser:
        calls = await _calls(w)
        base = str(w.client.make_url("/")).rstrip("/")
        downloads = tmp_path / "downloads"
        await browser.send(
            "Browser.setDownloadBehavior",
            {"behavior": "allowAndName", "downloadPath": str(downloads), "eventsEnabled": True},
        )
        page = await browser.new_page()
        await page.emulate(zone="Europe/Helsinki")
        await sign_in(page, base + "/", w, "dana")

        # The request: opened from the list of requests.
        await page.goto(base + "/dsar")
        await _loaded(page, "document.querySelector('a[href=\"/dsar/new\"]').click()")
        await accessible(page)
        await page.submit(
            "form[action='/dsar']",
            {"kind": "data_subject", "requester": "Maija Meikäläinen", "received_on": "2026-03-02"},
        )
        case_url = await page.eval("location.pathname")
        text = await page.text()
        assert "Maija Meikäläinen" in text and "2 Apr 2026" in text  # due one month after receipt

        # The caller said "about 10:20", their own (Helsinki) time.
        await page.submit(
            f"form[action='{case_url}/search']",
            {"number": CALLER, "at": "2026-03-02T10:20", "window_minutes": "30"},
        )
        results = await page.eval("location.pathname + location.search")
        assert results.startswith(case_url + "?search=")
        picks = "[...document.querySelectorAll('input[name=recording_id]')]"
        assert await page.eval(f"{picks}.map(i => [i.value, i.checked])") == [[calls["mine"], False]]
        row = await page.eval(f"{picks}[0].closest('tr').innerText")
        for shown in ("2 Mar 2026, 10:12:00 EET", "1:00", "Inbound", "0300", "+358405550***", "Aino Nieminen",
                      "Customer service", "masked number only"):  # fmt: skip
            assert shown in row, (shown, row)

        # A wider search lists the other caller too, still nothing ticked, told apart by its fields.
        await page.submit(
            f"form[action='{case_url}/search']",
            {"number": CALLER, "at": "2026-03-02T10:20", "window_minutes": "300"},
        )
        both = await page.eval(f"{picks}.map(i => [i.value, i.checked])")
        assert both == [[calls["mine"], False], [calls["other"], False]]
        assert "12:31:00 EET" in await page.text()
        await accessible(page)
        await shot(page, "dpo-case")
        for width in (360, 770, 1024):  # a phone, just wider than the cards' 48 em, a laptop
            await page.emulate(width=width, height=740)
            assert await page.sideways_overflow() <= 0, width  # < 0: a vertical scrollbar's width
        await page.emulate()

        # Back to the first search's page: its results again, no form resubmitted.
        await _loaded(page, f"document.querySelector('a[href=\"{results}#results\"]').click()")
        await _loaded(page, f"document.querySelector('a[href=\"/recordings/{calls['mine']}\"]').click()")
        # Back may fetch the page again or restore it from the back-forward cache (no load
        # event then): either way a navigation, and never a form sent again.
        navigated = browser.expect("Page.frameNavigated", page.session)
        await page.eval("history.back()")
        await asyncio.wait_for(navigated, 15)
        await page.eval(READY)
        assert await page.eval("location.pathname + location.search") == results
        assert await page.eval(f"{picks}.map(i => i.value)") == [calls["mine"]]

        # Listen inline, then tick the caller's call and export it, employees left out (the default).
        audio = json.dumps(f"audio[src='{case_url}/recordings/{calls['mine']}/audio']")
        ended = await asyncio.wait_for(page.eval(PLAY % audio), 15)
        assert ended == pytest.approx(0.5, abs=0.01)
        assert await page.eval("document.querySelector('[name=withhold_employees]').checked") is True
        assert await page.eval("document.querySelector('[name=recipient]').value") == "Maija Meikäläinen"
        done = browser.expect("Browser.downloadProgress", match=lambda p: p.get("state") == "completed")
        await page.eval(
            f"document.getElementById('pick-{calls['mine']}').click();"
            f" document.querySelector(\"form[action='{case_url}/export'] button[type=submit]\").click()"
        )
        progress = await asyncio.wait_for(done, 15)
        bundle = (downloads / progress["guid"]).read_bytes()
        meta = json.loads(zipfile.ZipFile(io.BytesIO(bundle)).read("metadata.json"))
        assert [r["id"] for r in meta["recordings"]] == [calls["mine"]]
        assert meta["employee_identity"] == "withheld"
        for employee in ("alice", "Aino", "dana"):
            assert employee not in json.dumps(meta), employee

        # The receipt: the zip's own sha256, the count and who received it.
        await page.goto(base + case_url)
        assert "Listened" in await page.eval(f"{picks}[0].closest('tr').innerText")
        await _loaded(page, "document.querySelector('#receipts a').click()")
        await accessible(page)
        await shot(page, "dpo-receipt")
        assert (
            await page.eval("document.getElementById('sha256').innerText")
            == hashlib.sha256(bundle).hexdigest()
        )
        text = await page.text()
        assert "Maija Meikäläinen" in text and "left out (GDPR Art. 15(4))" in text
        assert await page.eval("document.getElementById('count').innerText") == "1"

        await page.goto(base + "/dsar")
        assert "DSAR-1" in await page.text()
        await accessible(page)
        await shot(page, "dpo-requests")

        rows = await w.pool.fetch(
            "SELECT action, status, recording_id FROM audit_log"
            " WHERE detail ->> 'case_id' IS NOT NULL ORDER BY id"
        )
        steps = [r["action"] for r in rows]
        assert steps[:4] == ["dsar_case_open", "dsar_case", "dsar_search", "dsar_case"]
        assert "play" in steps and steps[-3:] == ["export", "dsar_case", "dsar_receipt"]
        plays = {(str(r["recording_id"]), r["status"]) for r in rows if r["action"] == "play"}
        assert plays and {rid for rid, _ in plays} == {calls["mine"]}
        # 10:20 in Helsinki (EET, UTC+2) is 08:20 UTC.
        first = await w.pool.fetchval("SELECT at FROM dsar_case_searches ORDER BY id LIMIT 1")
        assert first == T0.replace(hour=8, minute=20)
