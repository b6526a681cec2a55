"""Finding a call among many through GET /api/recordings (the page's list runs the same core):
the total across pages, every sort key, and the filters by service number, direction,
duration, a fragment of the masked number, hold, and an agent's display name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.access_world import T0, World, add_recording, world


@pytest.fixture
async def w(db_dsn: str, tmp_path: Path) -> AsyncIterator[World]:
    async with world(db_dsn, tmp_path) as w:
        await w.pool.execute("UPDATE users SET display_name = 'Väinö Väinämöinen' WHERE name = 'bob'")
        yield w


async def found(w: World, who: str, **query: Any) -> dict[str, Any]:
    async with w.client.get("/api/recordings", params=query, headers=w.auth(who)) as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body


async def refused(w: World, who: str, **query: Any) -> str:
    async with w.client.get("/api/recordings", params=query, headers=w.auth(who)) as r:
        assert r.status == 400
        return str((await r.json())["message"])


async def test_the_total_counts_every_page(w: World) -> None:
    everything = await found(w, "dana")
    assert everything["total"] == len(everything["recordings"]) == 7
    page = await found(w, "dana", limit=3, offset=3)
    assert page["total"] == 7 and len(page["recordings"]) == 3
    past = await found(w, "dana", limit=3, offset=30)
    assert past["total"] == 7 and past["recordings"] == []
    # Reach first: a supervisor's total is his team's.
    assert (await found(w, "sam", limit=1))["total"] == 3


async def test_every_sort_key_orders_and_pages_stably(w: World) -> None:
    for i, seconds in enumerate((30, 900, 75)):
        await add_recording(
            w.pool, w.settings.asterisk.recordings_dir, agent="carol",
            started_at=T0 - timedelta(days=1, minutes=i), seconds=seconds, seed=50 + i,
        )  # fmt: skip
    longest = await found(w, "dana", sort="-duration", limit=2)
    assert [r["duration_seconds"] for r in longest["recordings"]] == [900, 75]
    shortest = await found(w, "dana", sort="duration", limit=1)
    assert shortest["recordings"][0]["duration_seconds"] == 30
    oldest = await found(w, "dana", sort="started")
    starts = [r["started_at"] for r in oldest["recordings"]]
    assert starts == sorted(starts)
    for key in ("register", "-register", "direction", "service", "agent", "-agent"):
        pages = [await found(w, "dana", sort=key, limit=4, offset=o) for o in (0, 4, 8)]
        ids = [r["id"] for p in pages for r in p["recordings"]]
        assert len(ids) == len(set(ids)) == 10, key  # no row twice, none lost between pages
    assert "sort: expected one of" in await refused(w, "dana", sort="size")


async def test_filters_narrow_by_what_a_person_remembers(w: World) -> None:
    rdir = w.settings.asterisk.recordings_dir
    long_out = await add_recording(
        w.pool, rdir, agent="bob", started_at=T0 + timedelta(days=1), seconds=1044,
        number="+358 50 765 4321", register="telesales", seed=60,
    )  # fmt: skip
    await w.pool.execute(
        "UPDATE recordings SET direction = 'outbound', service_number = '0800' WHERE id = $1", long_out
    )
    held = w.recs["carol"]
    await w.pool.execute(
        "UPDATE recordings SET legal_hold = true, hold_reason = 'case', hold_by = 'dana', hold_at = now()"
        " WHERE id = $1",
        held,
    )

    def ids(body: dict[str, Any]) -> set[str]:
        return {r["id"] for r in body["recordings"]}

    assert ids(await found(w, "dana", direction="outbound")) == {str(long_out)}
    assert ids(await found(w, "dana", service_number="0800")) == {str(long_out)}
    assert ids(await found(w, "dana", min_seconds=600)) == {str(long_out)}
    assert str(long_out) not in ids(await found(w, "dana", max_seconds=600))
    assert ids(await found(w, "dana", number="765")) == {str(long_out)}
    assert ids(await found(w, "dana", number="+35850")) == {str(long_out)}
    assert ids(await found(w, "dana", on_hold="true")) == {str(held)}
    assert str(held) not in ids(await found(w, "dana", on_hold="false"))
    # An agent by display name, in any script, case-folded; and a supervisor still only in reach.
    by_name = await found(w, "dana", agent="väinö väinämöinen")
    assert ids(by_name) == {str(w.recs["bob"]), str(long_out)}
    assert by_name["recordings"][0]["agent_display_name"] == "Väinö Väinämöinen"
    assert ids(await found(w, "sid", agent="Väinö Väinämöinen")) == set()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"direction": "sideways"}, "direction: expected inbound or outbound"),
        ({"number": "040-123"}, "number: a part of the masked number"),
        ({"min_seconds": "ten"}, "min_seconds: expected a number of seconds"),
        ({"max_seconds": "-1"}, "max_seconds: expected 0 to"),
        ({"on_hold": "maybe"}, "on_hold: expected true or false"),
        ({"service_number": "9" * 65}, "service_number: at most 64 characters"),
    ],
)
async def test_unusable_filters_are_one_line(w: World, query: dict[str, str], message: str) -> None:
    assert message in await refused(w, "dana", **query)


async def test_admin_cannot_search_by_customer_number(w: World) -> None:
    async with w.client.get("/api/recordings", params={"number": "123"}, headers=w.auth("adam")) as r:
        assert r.status == 403


async def test_a_typed_full_number_never_reaches_the_audit_log(w: World) -> None:
    await found(w, "dana", number="+358401234567")
    rows = await w.pool.fetch("SELECT detail::text FROM audit_log WHERE action = 'search'")
    assert rows and all("+358401234567" not in r["detail"] for r in rows)
