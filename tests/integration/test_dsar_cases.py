"""Data-subject requests as cases on the web page, over real PostgreSQL: the lifecycle from
request to receipt, the Art. 12(3) deadline, the search quota, that no full number lands in any
table, exports without employee identity (page and API), and hold / release / erase from a
recording's page."""

from __future__ import annotations

import asyncio
import io
import json
import re
import zipfile
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from callrec.access import cases
from tests.harness.postgres import pg_bindir
from tests.integration.access_world import KEY, T0, World, add_recording, world

NUMBER = "+358 40 555 0123"
DECOY = "+358 40 555 0999"  # the same mask, another caller


@pytest.fixture
async def w(db_dsn: str, tmp_path: Path) -> AsyncIterator[World]:
    async with world(db_dsn, tmp_path, key=KEY) as built:
        yield built


class Dpo:
    """The DPO's browser, as aiohttp sends it: the session cookie and the page's own origin."""

    def __init__(self, w: World, cookie: str) -> None:
        self.w = w
        self.cookies = {"callrec_session": cookie}
        self.origin = {"Origin": str(w.client.make_url("")).rstrip("/")}

    async def get(self, path: str) -> tuple[int, str]:
        async with self.w.client.get(path, cookies=self.cookies) as r:
            return r.status, await r.text()

    async def post(self, path: str, data: Any) -> tuple[int, str, str]:
        """Status, Location (a redirect) and the body."""
        async with self.w.client.post(
            path, data=data, cookies=self.cookies, headers=self.origin, allow_redirects=False
        ) as r:
            return r.status, r.headers.get("Location", ""), (await r.read()).decode(errors="replace")

    async def open_case(
        self, requester: str = "Maija Meikäläinen", received: str = "2026-03-02", **more: str
    ) -> int:
        status, location, body = await self.post(
            "/dsar", {"kind": "data_subject", "requester": requester, "received_on": received} | more
        )
        assert status == 303, body
        return int(location.rsplit("/", 1)[1])

    async def search(self, case: int, number: str, at: str, window: int = 30) -> tuple[int, str, str]:
        return await self.post(
            f"/dsar/{case}/search", {"number": number, "at": at, "window_minutes": str(window)}
        )


async def dpo(w: World, who: str = "dana") -> Dpo:
    return Dpo(w, await w.sign_in(who))


async def _calls(w: World) -> dict[str, Any]:
    """The caller's call at 10:20 UTC and a decoy with the same masked number at 10:45."""
    recs = w.settings.asterisk.recordings_dir
    at = T0.replace(hour=10, minute=20)
    mine = await add_recording(w.pool, recs, agent="alice", started_at=at, number=NUMBER, key=KEY, seed=20)
    decoy = await add_recording(
        w.pool, recs, agent="bob", started_at=at + timedelta(minutes=25), number=DECOY, key=KEY, seed=21
    )
    return {"mine": mine, "decoy": decoy, "at": at}


def _ids(html: str) -> list[str]:
    return re.findall(r'name="recording_id" value="([0-9a-f-]+)"', html)


async def test_case_from_request_to_receipt(w: World) -> None:
    calls = await _calls(w)
    d = await dpo(w)
    case = await d.open_case(requester="The caller, tel. +358 40 555 0123")
    status, html = await d.get("/dsar")
    assert status == 200 and f"DSAR-{case}" in html and "+358405550***" in html and "0123" not in html

    # The time as the server's zone reads it (UTC here); a mask-only decoy is kept out by the HMAC.
    status, location, _ = await d.search(case, NUMBER, "2026-03-02T10:25Z", window=60)
    assert status == 303 and re.fullmatch(rf"/dsar/{case}\?search=\d+#results", location)
    status, html = await d.get(location.split("#")[0])
    assert status == 200
    assert _ids(html) == [str(calls["mine"])]
    assert " checked" not in html.split('name="recording_id"')[1].split(">")[0]  # never pre-ticked
    for shown in ("alice", "0300", "Inbound", "+358405550***", "exact number"):
        assert shown in html
    assert f'src="/dsar/{case}/recordings/{calls["mine"]}/audio"' in html and 'preload="none"' in html

    # Listening through the case notes it; a call the case never found does not play from it.
    async with w.client.get(f"/dsar/{case}/recordings/{calls['mine']}/audio", cookies=d.cookies) as r:
        assert r.status == 200 and len(await r.read()) > 0
    async with w.client.get(f"/dsar/{case}/recordings/{calls['decoy']}/audio", cookies=d.cookies) as r:
        assert r.status == 404
    listened = await w.pool.fetch("SELECT recording_id FROM dsar_case_listens WHERE case_id = $1", case)
    assert [r["recording_id"] for r in listened] == [calls["mine"]]

    # Export: employee identity left out by default for a data subject.
    form = {"recording_id": str(calls["mine"]), "recipient": "The caller", "legal_basis": "GDPR Art. 15",
            "withhold_employees": "1"}  # fmt: skip
    async with w.client.post(f"/dsar/{case}/export", data=form, cookies=d.cookies, headers=d.origin) as r:
        assert r.status == 200, await r.text()
        bundle = await r.read()
        sha = r.headers["X-Callrec-Bundle-SHA256"]
    meta = json.loads(zipfile.ZipFile(io.BytesIO(bundle)).read("metadata.json"))
    assert meta["employee_identity"] == "withheld" and meta["disclosure"]["case_reference"] == f"DSAR-{case}"
    [receipt] = await cases.receipts(w.pool, case)
    assert (receipt.bundle_sha256, receipt.count, receipt.bundle_bytes) == (sha, 1, len(bundle))
    status, html = await d.get(f"/dsar/{case}/exports/{receipt.id}")
    assert status == 200 and sha in html and "left out (GDPR Art. 15(4))" in html

    # Answered: no more searches; every step named the case in its audit row.
    assert (await d.post(f"/dsar/{case}/status", {"status": "answered"}))[0] == 303
    status, _, html = await d.search(case, NUMBER, "2026-03-02T10:25Z")
    assert status == 409 and "reopen it" in html
    rows = await w.pool.fetch(
        "SELECT action, status FROM audit_log WHERE detail ->> 'case_id' = $1 ORDER BY id", str(case)
    )
    assert [(r["action"], r["status"]) for r in rows] == [
        ("dsar_case_open", 303), ("dsar_search", 303), ("dsar_case", 200),
        ("play", 200), ("play", 404), ("export", 200), ("dsar_receipt", 200),
        ("dsar_case_status", 303), ("dsar_search", 409),
    ]  # fmt: skip


async def test_a_search_survives_back_and_errors_keep_the_form(w: World) -> None:
    await _calls(w)
    d = await dpo(w)
    case = await d.open_case()
    status, _, html = await d.search(case, "123", "2026-03-02T10:25")
    assert status == 400 and "full phone number" in html and 'value="123"' in html
    status, _, html = await d.search(case, NUMBER, "yesterday")
    assert status == 400 and "not a date and time we can read" in html
    assert await w.pool.fetchval("SELECT count(*) FROM dsar_case_searches") == 0
    _, first, _ = await d.search(case, NUMBER, "2026-03-02T10:25Z", window=60)
    _, second, _ = await d.search(case, NUMBER, "2026-03-02T08:00Z", window=5)
    # Each stored search is its own GET URL: "Back" to the first shows the first's results again.
    assert len(_ids((await d.get(first.split("#")[0]))[1])) == 1
    assert "No calls found." in (await d.get(second.split("#")[0]))[1]
    # An export without a tick keeps what was typed and says what to do.
    search = first.split("=")[1].split("#")[0]
    status, _, html = await d.post(
        f"/dsar/{case}/export", {"recipient": "Lawyer X", "legal_basis": "Art. 15", "search": search}
    )
    assert status == 400 and "Tick at least one call" in html and 'value="Lawyer X"' in html
    assert 'name="withhold_employees" value="1">' in html  # unticked as sent, not ticked again
    assert len(_ids(html)) == 1  # the search the export came from
    other = {"recording_id": str(w.recs["bob"]), "recipient": "X", "legal_basis": "Art. 15"}
    status, _, html = await d.post(f"/dsar/{case}/export", other)
    assert status == 400 and "Only the calls found for this request" in html


async def test_deadline_is_one_calendar_month_as_postgresql_counts_it(w: World) -> None:
    d = await dpo(w)
    due = {}
    for received in ("2026-01-31", "2024-01-31", "2026-03-15", "2025-12-31"):
        case = await d.open_case(received=received)
        due[received] = (await cases.get(w.pool, case)).due_on
    assert due == {
        "2026-01-31": date(2026, 2, 28),
        "2024-01-31": date(2024, 2, 29),  # a leap year
        "2026-03-15": date(2026, 4, 15),
        "2025-12-31": date(2026, 1, 31),
    }
    case = await d.open_case(received="2026-01-31")
    assert (await d.post(f"/dsar/{case}/extend", {"reason": "many recordings to review"}))[0] == 303
    assert (await cases.get(w.pool, case)).due_on == date(2026, 4, 30)
    assert (await d.post(f"/dsar/{case}/status", {"status": "answered"}))[0] == 303
    status, _, html = await d.post(f"/dsar/{case}/extend", {"reason": "again"})
    assert status == 409 and "reopen it first" in html
    status, _, html = await d.post(
        "/dsar", {"kind": "data_subject", "requester": "X", "received_on": "2999-01-01"}
    )
    assert status == 400 and "not in the future" in html
    status, _, html = await d.post(
        "/dsar", {"kind": "data_subject", "requester": " ", "received_on": "2026-01-01"}
    )
    assert status == 400 and "Say who made the request" in html


async def test_case_list_shows_open_cases_first_by_deadline(w: World) -> None:
    d = await dpo(w)
    late = await d.open_case(requester="Later", received="2026-03-01")
    early = await d.open_case(requester="Earlier", received="2026-02-01")
    closed = await d.open_case(requester="Closed", received="2026-01-01")
    assert (await d.post(f"/dsar/{closed}/status", {"status": "refused", "note": "manifestly unfounded"}))[
        0
    ] == 303
    assert (await d.post(f"/dsar/{early}/status", {"status": "refused"}))[0] == 400  # the reason is required
    _, html = await d.get("/dsar")
    assert [int(n) for n in re.findall(r'href="/dsar/(\d+)"', html)] == [early, late, closed]


async def test_searches_are_rationed_per_hour(db_dsn: str, tmp_path: Path) -> None:
    async with world(db_dsn, tmp_path, key=KEY, dsar_searches_per_hour=2) as w:
        d = await dpo(w)
        case = await d.open_case()
        for _ in range(2):
            assert (await d.search(case, NUMBER, "2026-03-02T10:25Z"))[0] == 303
        status, _, html = await d.search(case, NUMBER, "2026-03-02T10:25Z")
        assert status == 429 and "Try again in" in html
        assert await w.pool.fetchval("SELECT count(*) FROM dsar_case_searches") == 2


async def test_no_full_number_lands_in_any_table(w: World, owner_dsn: str) -> None:
    calls = await _calls(w)
    d = await dpo(w)
    case = await d.open_case(requester=f"caller {NUMBER}, also 040-555 0123")
    await d.search(case, NUMBER, "2026-03-02T10:25Z", window=60)
    await d.search(case, "0405550123", "2026-03-02T10:25Z", window=60)
    await d.post(f"/dsar/{case}/export", {"recording_id": str(calls["mine"]), "recipient": f"to {NUMBER}",
                                          "legal_basis": "GDPR Art. 15"})  # fmt: skip
    await d.post(f"/dsar/{case}/status", {"status": "refused", "note": f"not {DECOY}"})
    proc = await asyncio.create_subprocess_exec(
        str(pg_bindir() / "pg_dump"), "--data-only", owner_dsn, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    dump = out.decode()
    assert "dsar_case_searches" in dump and "+358405550***" in dump
    for digits in ("3584055501", "4055501", "5550123", "5550999"):
        assert digits not in dump.replace(" ", "").replace("-", ""), digits


async def test_export_can_leave_out_employee_identity(w: World) -> None:
    rec = w.recs["alice"]
    await w.pool.execute("UPDATE users SET display_name = 'Aino Nieminen' WHERE name = 'alice'")
    body = {"recording_ids": [str(rec)], "recipient": "The caller", "legal_basis": "GDPR Art. 15",
            "case_reference": "DSAR-9"}  # fmt: skip

    async def metadata(**more: str) -> tuple[dict[str, Any], list[str]]:
        async with w.client.post("/api/exports", json=body | more, headers=w.auth("dana")) as r:
            assert r.status == 200, await r.text()
            z = zipfile.ZipFile(io.BytesIO(await r.read()))
        return json.loads(z.read("metadata.json")), z.namelist()

    meta, names = await metadata(employee_identity="withheld")
    text = json.dumps(meta)
    assert meta["employee_identity"] == "withheld" and "exported_by" not in meta
    for who in ("alice", "Aino", "Nieminen", "dana"):
        assert who not in text and not any(who in n for n in names), who
    [entry] = meta["recordings"]
    assert not {"agent", "agent_user", "agent_display_name"} & set(entry)
    assert entry["agents"] and all(set(a) == {"joined_at", "left_at"} for a in entry["agents"])

    meta, _ = await metadata()  # the API's default: included, and said so
    assert meta["employee_identity"] == "included" and meta["exported_by"] == "dana"
    assert meta["recordings"][0]["agent_display_name"] == "Aino Nieminen"
    async with w.client.post(
        "/api/exports", json=body | {"employee_identity": "no"}, headers=w.auth("dana")
    ) as r:
        assert r.status == 400 and "employee_identity" in (await r.json())["message"]
    rows = await w.pool.fetch(
        "SELECT detail ->> 'employee_identity' AS e FROM audit_log WHERE action = 'export'"
    )
    assert [r["e"] for r in rows] == ["withheld", "included", None]


async def test_hold_release_and_erase_from_a_recordings_page(w: World) -> None:
    rid = w.recs["alice"]
    page = f"/recordings/{rid}"
    d = await dpo(w)
    status, _, html = await d.post(
        f"{page}/hold", {"reason": "police case 12/2026", "until": "2001-01-01T00:00"}
    )
    assert status == 400 and "in the future" in html and 'value="police case 12/2026"' in html
    status, _, html = await d.post(f"{page}/hold", {"reason": "  "})
    assert status == 400 and "Give the reason" in html
    status, location, _ = await d.post(
        f"{page}/hold", {"reason": "police case 12/2026", "until": "2030-01-01T12:00"}
    )
    assert (status, location) == (303, page)
    _, html = await d.get(page)
    assert "police case 12/2026" in html and "dana" in html and "1 Jan 2030" in html

    status, _, html = await d.post(f"{page}/erase", {"reason": "Art. 17 request", "confirm": "1"})
    assert status == 409 and "release it before erasing" in html and 'value="Art. 17 request"' in html
    assert (await d.post(f"{page}/release", {"reason": ""}))[0] == 400
    assert (await d.post(f"{page}/release", {"reason": "case closed"}))[:2] == (303, page)
    assert (await d.post(f"{page}/erase", {"reason": "Art. 17 request"}))[0] == 400  # not confirmed
    status, location, _ = await d.post(f"{page}/erase", {"reason": "Art. 17 request", "confirm": "1"})
    assert (status, location) == (303, f"{page}/erased")
    assert await w.pool.fetchval("SELECT count(*) FROM recordings WHERE id = $1", rid) == 0
    logged = await w.pool.fetch(
        "SELECT action, by FROM legal_hold_log WHERE recording_id = $1 ORDER BY id", rid
    )
    assert [(r["action"], r["by"]) for r in logged] == [("hold", "dana"), ("release", "dana")]
    rows = await w.pool.fetch(
        "SELECT action, status, detail ->> 'reason' AS reason FROM audit_log"
        " WHERE recording_id = $1 AND action IN ('hold', 'release', 'erase') ORDER BY id",
        rid,
    )
    assert [(r["action"], r["status"]) for r in rows] == [
        ("hold", 400), ("hold", 400), ("hold", 303), ("erase", 409), ("release", 400), ("release", 303),
        ("erase", 400), ("erase", 303),
    ]  # fmt: skip


async def test_only_the_dpo_has_cases_and_hold_buttons(w: World) -> None:
    d = await dpo(w, "sam")
    for path in ("/dsar", "/dsar/new", "/dsar/1"):
        assert (await d.get(path))[0] == 403, path
    assert (await d.post("/dsar", {"kind": "police", "requester": "x", "received_on": "2026-01-01"}))[
        0
    ] == 403
    assert (await d.post(f"/recordings/{w.recs['alice']}/hold", {"reason": "x"}))[0] == 403
    status, html = await d.get(f"/recordings/{w.recs['alice']}")
    assert status == 200 and "/hold" not in html and "Legal hold and erasure" not in html
    dana = await dpo(w)
    assert (await dana.get("/dsar/999"))[0] == 404
