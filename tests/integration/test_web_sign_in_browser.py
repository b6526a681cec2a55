"""The agent's day begins in headless Chromium: signing in with a username and password
(a wrong password first: one message, the name still typed), seeing their own calls of the
last days at once, and a session cookie the browser forgets when it closes. axe-core checks
the sign-in page; ``make screenshots`` saves it for docs/web.md#signing-in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callrec.access import passwords, people
from callrec.access.people import Profile
from tests.harness.browser import Browser, chromium
from tests.integration.access_world import add_recording, world
from tests.integration.test_web_page import accessible, shot

pytestmark = pytest.mark.skipif(chromium() is None, reason="needs the Debian package chromium")

FORM = "form:has(input[name=password])"


async def test_agent_signs_in_with_a_password_and_sees_their_calls(db_dsn: str, tmp_path: Path) -> None:
    async with world(db_dsn, tmp_path) as w, Browser.launch(tmp_path / "profile") as browser:
        await people.set_profile(w.pool, "alice", Profile(display_name="Aino Mäkinen"))
        await passwords.set_password(w.pool, "alice", "aino's long password")
        yesterday = datetime.now(UTC) - timedelta(days=1)
        mine = await add_recording(
            w.pool, w.settings.asterisk.recordings_dir, agent="alice", started_at=yesterday, seed=40
        )
        await add_recording(w.pool, w.settings.asterisk.recordings_dir, agent="bob", started_at=yesterday)
        base = str(w.client.make_url("/"))
        page = await browser.new_page()
        await page.goto(base)
        assert await page.eval("document.querySelector('details').open") is False  # tokens: secondary
        await accessible(page)

        await page.submit(FORM, {"username": "alice", "password": "aino's wrong password"})
        assert "That username and password do not match." in await page.text()
        assert await page.eval("document.querySelector('input[name=username]').value") == "alice"
        assert await page.eval("document.querySelector('input[name=password]').value") == ""
        await accessible(page)
        await shot(page, "sign-in")

        await page.eval("document.querySelector('input[name=password]').value = \"aino's long password\"")
        await page.submit(FORM, {})
        text = await page.text()
        assert "Sign out" in text and "Aino Mäkinen" in text
        links = await page.eval("[...document.querySelectorAll('tbody th a')].map(a => a.pathname)")
        assert links == [f"/recordings/{mine}"]  # her own call of yesterday, without a search

        cookies = (await page.send("Network.getCookies"))["cookies"]
        (session,) = [c for c in cookies if c["name"] == "callrec_session"]
        assert session["session"] and session["httpOnly"] and session["sameSite"] == "Strict"
        await page.submit("form[action='/signout']", {})
        assert await page.eval("!!document.querySelector('input[name=password]')")
        actions = [
            (r["action"], r["user_name"], r["status"])
            for r in await w.pool.fetch("SELECT action, user_name, status FROM audit_log ORDER BY id")
        ]
        assert actions[:3] == [("page", None, 200), ("sign_in", None, 401), ("sign_in", "alice", 303)]
        assert ("sign_out", "alice", 303) in actions
