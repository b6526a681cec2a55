"""The defects found by attacking the API (issue #15), each kept fixed by a test on real
PostgreSQL with the two database roles (docs/privacy.md, docs/api.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.access_world import World, as_owner, world

REFUSE_ALL_AUDIT_ROWS = "ALTER TABLE audit_log ADD CONSTRAINT refuse_all CHECK (false) NOT VALID"


@pytest.fixture
async def w(db_dsn: str, tmp_path: Path) -> AsyncIterator[World]:
    async with world(db_dsn, tmp_path) as built:
        yield built


async def held(w: World, key: str) -> bool:
    return bool(await w.pool.fetchval("SELECT legal_hold FROM recordings WHERE id = $1", w.recs[key]))


# --- item 2: a state change and its audit row commit together, or neither ------------------------


async def test_control_characters_are_refused_before_anything_changes(w: World) -> None:
    base = f"/api/recordings/{w.recs['alice']}"
    async with w.client.post(f"{base}/hold", json={"reason": "police case 12"}, headers=w.auth("dana")) as r:
        assert r.status == 200
    for bad in ("x\x00y", "line\nbreak", "esc\x1b[31m", "c1\x85"):
        async with w.client.post(f"{base}/release", json={"reason": bad}, headers=w.auth("dana")) as r:
            assert r.status == 400, bad
            assert "control characters" in (await r.json())["message"]
        assert await held(w, "alice")
    async with w.client.post(f"{base}/hold", json={"reason": "ok", "x\x00": 1}, headers=w.auth("dana")) as r:
        assert r.status == 400
    async with w.client.get("/api/recordings?register=%00", headers=w.auth("dana")) as r:
        assert r.status == 400
    rows = await w.audit_rows()
    assert [(x["action"], x["status"]) for x in rows][-2:] == [("hold", 400), ("search", 400)]
    releases = await w.pool.fetchval("SELECT count(*) FROM legal_hold_log WHERE action = 'release'")
    assert releases == 0


@pytest.mark.parametrize("action", ["hold", "release", "erase"])
async def test_a_change_whose_audit_row_fails_is_undone(w: World, action: str) -> None:
    rid = w.recs["alice"]
    if action == "release":
        url = f"/api/recordings/{rid}/hold"
        async with w.client.post(url, json={"reason": "x"}, headers=w.auth("dana")) as r:
            assert r.status == 200
    await as_owner(w.settings.database_dsn, REFUSE_ALL_AUDIT_ROWS)
    before = await w.pool.fetchrow("SELECT * FROM recordings WHERE id = $1", rid)
    async with w.client.post(
        f"/api/recordings/{rid}/{action}", json={"reason": "Art. 18"}, headers=w.auth("dana")
    ) as r:
        assert r.status == 503 and (await r.json())["error"] == "audit_unavailable"
    assert await w.pool.fetchrow("SELECT * FROM recordings WHERE id = $1", rid) == before
    assert await w.pool.fetchval("SELECT count(*) FROM disposal_pending") == 0
    assert (w.settings.asterisk.recordings_dir / before["file_path"]).exists()
