"""Access follows the call's agents list (issue 14): a call alice transferred to carol is
heard by both, and by every supervisor above either; nobody else finds it
(tests/integration/access_world.py has the people)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.integration.access_world import PEOPLE, T0, World, add_recording, world


@pytest.fixture
async def w(db_dsn: str, tmp_path: Path) -> AsyncIterator[World]:
    async with world(db_dsn, tmp_path) as built:
        built.recs["transferred"] = await add_recording(
            built.pool,
            built.settings.asterisk.recordings_dir,
            agent="alice",
            agents=("alice", "carol"),
            started_at=T0 + timedelta(days=1),
            seed=99,
        )
        yield built


# alice (under sam, under sue) transferred to carol (under sue); dave and sid are another team.
HEARS = {"alice", "carol", "sam", "sue", "dana"}


@pytest.mark.parametrize("who", sorted(set(PEOPLE) - {"adam"}))
async def test_every_listed_agent_and_their_supervisors_hear_the_transferred_call(w: World, who: str) -> None:
    rid = w.recs["transferred"]
    async with w.client.get(f"/api/recordings/{rid}/audio", headers=w.auth(who)) as r:
        assert r.status == (200 if who in HEARS else 404), who
    async with w.client.get("/api/recordings", headers=w.auth(who)) as r:
        listed = {rec["id"] for rec in (await r.json())["recordings"]}
    assert (str(rid) in listed) == (who in HEARS), who


async def test_the_api_lists_every_agent_of_the_call(w: World) -> None:
    async with w.client.get(f"/api/recordings/{w.recs['transferred']}", headers=w.auth("carol")) as r:
        rec = await r.json()
    assert rec["agent"] == "alice"
    assert [a["agent"] for a in rec["agents"]] == ["alice", "carol"]


async def test_search_by_an_agent_finds_the_calls_they_were_transferred(w: World) -> None:
    async with w.client.get("/api/recordings?agent=carol", headers=w.auth("sue")) as r:
        ids = {rec["id"] for rec in (await r.json())["recordings"]}
    assert ids == {str(w.recs["transferred"]), str(w.recs["carol"])}


async def test_the_page_lists_every_agent_of_the_call(w: World) -> None:
    cookie = {"callrec_session": await w.sign_in("carol")}
    async with w.client.get(f"/recordings/{w.recs['transferred']}", cookies=cookie) as r:
        page = await r.text()
    assert r.status == 200
    items = page.split('<ol class="agents">', 1)[1].split("</ol>", 1)[0]
    assert [li.split(":", 1)[0] for li in items.split("<li>")[1:]] == ["alice", "carol"]
    assert " \u2013 " in items  # joined \u2013 left, in the reader's zone
