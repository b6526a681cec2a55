"""The access API on real PostgreSQL: the authorisation matrix, audit completeness, Range,
data-subject search, exports, retention actions, and what must never be logged."""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from callrec.access import people
from tests.integration.access_world import PEOPLE, REACH, T0, World, as_owner, restored_logging, world

REFUSE_ALL_AUDIT_ROWS = "ALTER TABLE audit_log ADD CONSTRAINT refuse_all CHECK (false) NOT VALID"


@pytest.fixture
async def w(db_dsn: str, tmp_path: Path) -> AsyncIterator[World]:
    async with world(db_dsn, tmp_path) as built:
        yield built


# --- the authorisation matrix: role x resource ----------------------------------------------------


async def test_matrix_of_people_and_recordings(w: World) -> None:
    """Every person x every recording x (metadata, audio, search): one expected table."""
    expected, actual = {}, {}
    for who, (role, _, _) in PEOPLE.items():
        async with w.client.get("/api/recordings", headers=w.auth(who)) as r:
            listed = {x["id"] for x in (await r.json())["recordings"]}
        for rec, rid in w.recs.items():
            mine = rec in REACH[who]
            expected[who, rec] = (
                200 if mine or role == "admin" else 404,
                200 if mine else 403 if role == "admin" else 404,
                mine or role == "admin",
            )
            async with w.client.get(f"/api/recordings/{rid}", headers=w.auth(who)) as r:
                view = r.status
            async with w.client.get(f"/api/recordings/{rid}/audio", headers=w.auth(who)) as r:
                play = r.status
                await r.read()
            actual[who, rec] = (view, play, str(rid) in listed)
    assert actual == expected


DPO_ONLY = [
    (
        "POST",
        "/api/dsar/search",
        {"number": "+358401234567", "at": T0.isoformat(), "case_reference": "DSAR-1"},
    ),
    ("POST", "/api/exports", {"recording_ids": [], "recipient": "x", "legal_basis": "x"}),
    ("POST", "/api/recordings/{id}/hold", {"reason": "x"}),
    ("POST", "/api/recordings/{id}/release", {}),
    ("POST", "/api/recordings/{id}/erase", {"reason": "x"}),
    ("GET", "/api/audit", None),
]


async def test_dpo_only_actions_refuse_every_other_role_with_403(w: World) -> None:
    for who in ("alice", "sam", "sue", "adam"):
        for method, path, body in DPO_ONLY:
            # Refused before any recording is looked at (even an unknown id) and before the
            # body is read (even an unusable one): the answer says nothing about recordings.
            for rid in (w.recs["alice"], uuid.uuid4()):
                url = path.format(id=rid)
                async with w.client.request(method, url, json=body, headers=w.auth(who)) as r:
                    assert (r.status, (await r.json())["error"]) == (403, "forbidden"), (who, url)


async def test_admin_sees_operational_metadata_only(w: World) -> None:
    async with w.client.get(f"/api/recordings/{w.recs['alice']}", headers=w.auth("adam")) as r:
        meta = await r.json()
    assert meta["file_size"] > 0 and meta["register"] == "customer-service"
    assert not {"customer_number_masked", "agent", "agent_user", "audio_url"} & set(meta)
    async with w.client.get("/api/recordings?agent=alice", headers=w.auth("adam")) as r:
        assert r.status == 403
    async with w.client.get(f"/api/recordings/{w.recs['alice']}", headers=w.auth("sam")) as r:
        meta = await r.json()
    assert meta["customer_number_masked"] == "+358401234***"
    assert meta["agent"] == "alice" and meta["agent_user"] == "alice"
    assert "customer_number_hmac" not in meta


async def test_agent_link_is_the_agent_id_and_search_by_agent(w: World) -> None:
    async with w.client.get("/api/recordings?agent=sam", headers=w.auth("sue")) as r:
        # "sam" is a user name; their recordings carry agent id "sam-7"
        assert [x["id"] for x in (await r.json())["recordings"]] == [str(w.recs["sam"])]
    async with w.client.get("/api/recordings?agent=dave", headers=w.auth("sue")) as r:
        assert (await r.json())["recordings"] == []  # outside sue's team: nothing, not an error


async def test_moving_an_agent_changes_reach_at_once(w: World) -> None:
    path = f"/api/recordings/{w.recs['alice']}"
    async with w.client.get(path, headers=w.auth("sid")) as r:
        assert r.status == 404
    await people.set_supervisor(w.pool, "alice", "sid")
    async with w.client.get(path, headers=w.auth("sid")) as r:
        assert r.status == 200
    async with w.client.get(path, headers=w.auth("sam")) as r:
        assert r.status == 404


async def test_tokens_unknown_revoked_disabled_and_missing(w: World) -> None:
    path = f"/api/recordings/{w.recs['alice']}"
    async with w.client.get(path) as r:
        assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    for bad in ("callrec_" + "x" * 43, "not-a-token", ""):
        async with w.client.get(path, headers={"Authorization": f"Bearer {bad}"}) as r:
            assert r.status == 401
    async with w.client.get(path, headers={"Authorization": f"Basic {w.tokens['alice']}"}) as r:
        assert r.status == 401
    await people.revoke_tokens(w.pool, "alice")
    async with w.client.get(path, headers=w.auth("alice")) as r:
        assert r.status == 401
    fresh = await people.issue_token(w.pool, "alice")
    async with w.client.get(path, headers={"Authorization": f"Bearer {fresh}"}) as r:
        assert r.status == 200
    await people.disable_user(w.pool, "alice")
    async with w.client.get(path, headers={"Authorization": f"Bearer {fresh}"}) as r:
        assert r.status == 401
    stored = await w.pool.fetch("SELECT token_sha256 FROM user_tokens")
    assert hashlib.sha256(fresh.encode()).digest() in {s["token_sha256"] for s in stored}
    assert all(fresh.encode() not in bytes(s["token_sha256"]) for s in stored)


# --- audit ----------------------------------------------------------------------------------------


async def test_every_request_writes_exactly_one_audit_row(w: World) -> None:
    alice, dave = w.recs["alice"], w.recs["dave"]
    dsar = {"number": "+358401234567", "at": "2026-03-02T09:00Z", "case_reference": "D-1"}
    requests = [
        ("GET", f"/api/recordings/{alice}", "alice", None, {}, 200, "view", "ok"),
        ("GET", f"/api/recordings/{alice}/audio", "alice", None, {"Range": "bytes=0-9"}, 206, "play", "ok"),
        ("GET", f"/api/recordings/{alice}/audio?download=1", "alice", None, {}, 200, "download", "ok"),
        ("GET", f"/api/recordings/{dave}", "alice", None, {}, 404, "view", "not_found"),
        ("GET", f"/api/recordings/{dave}/audio", "alice", None, {}, 404, "play", "not_found"),
        ("GET", f"/api/recordings/{alice}", None, None, {}, 401, "view", "unauthenticated"),
        ("GET", "/api/recordings/not-a-uuid", "alice", None, {}, 404, "view", "not_found"),
        ("GET", f"/api/recordings/{alice}/audio", "adam", None, {}, 403, "play", "denied"),
        ("GET", f"/api/recordings/{alice}/audio", "alice", None, {"Range": "bytes=99999-"}, 416, "play",
         "invalid"),
        ("GET", "/api/recordings?from=yesterday", "alice", None, {}, 400, "search", "invalid"),
        ("GET", "/api/recordings", "sam", None, {}, 200, "search", "ok"),
        ("POST", "/api/dsar/search", "alice", {"number": "+358401234567", "at": "2026-03-02T09:00Z"}, {}, 403,
         "dsar_search", "denied"),
        ("POST", "/api/dsar/search", "dana", dsar, {}, 200,
         "dsar_search", "ok"),
        ("GET", "/api/audit", "dana", None, {}, 200, "audit_read", "ok"),
        ("GET", "/api/nothing-here", "alice", None, {}, 404, "unknown", "not_found"),
        ("DELETE", f"/api/recordings/{alice}", "dana", None, {}, 405, "unknown", "invalid"),
        ("GET", "/api/whoami", "bob", None, {}, 200, "whoami", "ok"),
        ("GET", "/api/openapi.json", None, None, {}, 200, "api_description", "ok"),
    ]  # fmt: skip
    for method, path, who, body, headers, status, _, _ in requests:
        hdrs = headers | (w.auth(who) if who else {})
        async with w.client.request(method, path, json=body, headers=hdrs) as r:
            assert r.status == status, (method, path, who, await r.text())
            await r.read()
    rows = await w.audit_rows()
    assert len(rows) == len(requests)
    for row, (_, path, who, _, _, status, action, outcome) in zip(rows, requests, strict=True):
        assert (row["user_name"], row["action"], row["outcome"], row["status"]) == (
            who,
            action,
            outcome,
            status,
        )
        assert row["client"] == "127.0.0.1"
        if str(alice) in path and action != "unknown":
            assert row["recording_id"] == alice
        assert row["role"] == (PEOPLE[who][0] if who else None)
    detail = json.loads(rows[12]["detail"])
    assert detail["number_masked"] == "+358401234***" and str(alice) in detail["recording_ids"]
    assert "358401234567" not in " ".join(r["detail"] for r in rows)


async def test_audit_log_is_append_only_for_every_role(w: World, owner_dsn: str) -> None:
    async with w.client.get("/api/whoami", headers=w.auth("bob")) as r:
        assert r.status == 200
    owner = await asyncpg.connect(owner_dsn)
    try:
        for sql in ("UPDATE audit_log SET outcome = 'ok'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await w.pool.execute(sql)  # the runtime role has no such right
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await owner.execute(sql)  # the owner has it; the trigger refuses
    finally:
        await owner.close()
    assert len(await w.audit_rows()) == 1


async def test_audit_read_filters_by_recording_and_user(w: World) -> None:
    alice = w.recs["alice"]
    for _ in range(2):
        async with w.client.get(f"/api/recordings/{alice}/audio", headers=w.auth("sam")) as r:
            await r.read()
    async with w.client.get(f"/api/audit?recording_id={alice}&user=sam", headers=w.auth("dana")) as r:
        entries = (await r.json())["entries"]
    assert [(e["action"], e["user_name"], e["status"]) for e in entries] == [("play", "sam", 200)] * 2


async def test_a_failed_audit_write_refuses_the_access(w: World) -> None:
    await as_owner(
        w.settings.database_dsn, "ALTER TABLE audit_log ADD CONSTRAINT refuse_all CHECK (false) NOT VALID"
    )
    async with w.client.get(f"/api/recordings/{w.recs['alice']}/audio", headers=w.auth("alice")) as r:
        assert r.status == 503
        assert (await r.json())["error"] == "audit_unavailable"
    async with w.client.get(f"/api/recordings/{w.recs['alice']}", headers=w.auth("alice")) as r:
        assert r.status == 503
        assert "alice" not in await r.text()


# --- Range -------------------------------------------------------------------------------------------


async def test_range_requests(w: World) -> None:
    rid = w.recs["alice"]
    data = (w.settings.asterisk.recordings_dir / f"{T0:%Y/%m/%d}/{rid}.wav").read_bytes()
    size = len(data)
    for header, first, last in [
        ("bytes=0-99", 0, 99),  # the first bytes
        ("bytes=1000-1999", 1000, 1999),  # the middle
        ("bytes=-500", size - 500, size - 1),  # the suffix: the last 500
        ("bytes=4000-", 4000, size - 1),  # open-ended
        ("bytes=7990-99999999", 7990, size - 1),  # past the end: clamped
        ("bytes=-99999999", 0, size - 1),  # a suffix longer than the file: all of it
    ]:
        async with w.client.get(
            f"/api/recordings/{rid}/audio", headers=w.auth("alice") | {"Range": header}
        ) as r:
            assert r.status == 206, header
            assert r.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
            assert int(r.headers["Content-Length"]) == last - first + 1
            assert r.headers["Accept-Ranges"] == "bytes" and r.headers["Content-Type"] == "audio/wav"
            assert await r.read() == data[first : last + 1]


async def test_unsatisfiable_or_malformed_range_is_416(w: World) -> None:
    rid = w.recs["alice"]
    size = await w.pool.fetchval("SELECT file_size FROM recordings WHERE id = $1", rid)
    for header in (
        f"bytes={size}-",
        "bytes=99999-",
        "bytes=9-2",
        "bytes=-0",
        "bytes=abc",
        "bytes=",
        "bytes=-",
    ):
        async with w.client.get(
            f"/api/recordings/{rid}/audio", headers=w.auth("alice") | {"Range": header}
        ) as r:
            assert (r.status, r.headers.get("Content-Range")) == (416, f"bytes */{size}"), header


async def test_whole_file_without_range_with_several_ranges_or_stale_if_range(w: World) -> None:
    rid = w.recs["alice"]
    path = f"/api/recordings/{rid}/audio"
    async with w.client.get(path, headers=w.auth("alice")) as r:
        whole, etag = await r.read(), r.headers["ETag"]
        assert r.status == 200 and r.headers["Accept-Ranges"] == "bytes"
        assert hashlib.sha256(whole).hexdigest() == etag.strip('"')
        assert r.headers["Cache-Control"] == "no-store"
    async with w.client.get(path, headers=w.auth("alice") | {"Range": "bytes=0-1,5-6"}) as r:
        assert r.status == 200 and await r.read() == whole
    async with w.client.get(path, headers=w.auth("alice") | {"Range": "bytes=0-1", "If-Range": '"old"'}) as r:
        assert r.status == 200 and await r.read() == whole
    async with w.client.get(path, headers=w.auth("alice") | {"Range": "bytes=0-1", "If-Range": etag}) as r:
        assert r.status == 206 and await r.read() == whole[:2]
    async with w.client.head(path, headers=w.auth("alice")) as r:
        assert r.status == 200 and int(r.headers["Content-Length"]) == len(whole)


async def test_missing_audio_file_is_reported(w: World) -> None:
    rid = w.recs["bob"]
    (w.settings.asterisk.recordings_dir / f"{T0:%Y/%m/%d}/{rid}.wav").unlink()
    async with w.client.get(f"/api/recordings/{rid}/audio", headers=w.auth("bob")) as r:
        assert r.status == 404 and (await r.json())["error"] == "audio_missing"


# --- tokens and numbers never logged ---------------------------------------------------------------


async def test_tokens_and_full_numbers_are_never_logged(w: World) -> None:
    out = io.StringIO()
    with restored_logging(out):
        token = w.tokens["dana"]
        origin = {"Origin": str(w.client.make_url("")).rstrip("/")}
        steps: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", "/api/whoami", {"headers": w.auth("dana")}),
            ("GET", "/api/whoami", {"headers": {"Authorization": "Bearer callrec_wrong-token-value-xyz"}}),
            ("GET", "/", {"cookies": {"callrec_token": token}}),
            ("POST", "/signin", {"data": {"token": token}, "headers": origin, "allow_redirects": False}),
            ("POST", "/signin", {"data": {"token": token + "x"}, "headers": origin}),
        ]
        for method, path, kwargs in steps:
            async with w.client.request(method, path, **kwargs) as r:
                assert r.status in (200, 303, 401)
        body = {
            "number": "+358 40 123 4567",
            "at": "2026-03-02T09:00Z",
            "window_minutes": 10,
            "case_reference": "D",
        }
        async with w.client.post("/api/dsar/search", json=body, headers=w.auth("dana")) as r:
            assert r.status == 200
        async with w.client.post("/api/dsar/search", json=body | {"at": "bad"}, headers=w.auth("dana")) as r:
            assert r.status == 400
    text = out.getvalue()
    assert '"action": "whoami"' in text or '"action":"whoami"' in text
    assert token not in text and token[8:20] not in text
    assert "wrong-token-value" not in text
    assert "358401234567" not in text.replace(" ", "")
    assert all(token not in row["detail"] for row in await w.audit_rows())


# --- data-subject requests ---------------------------------------------------------------------------


async def _dsar_world(w: World, key: bytes | None) -> dict[str, uuid.UUID]:
    """Three calls from numbers that share a mask, and one an hour later from the right number."""
    from tests.integration.access_world import add_recording

    base = T0 + timedelta(days=10)
    rdir = w.settings.asterisk.recordings_dir
    calls = {}
    for i, (name, number, minutes) in enumerate(
        [("right", "+358 40 555 0123", 0), ("other1", "+358405550124", 2), ("other2", "+358405550999", -3),
         ("right_later", "+358405550123", 90)]
    ):  # fmt: skip
        calls[name] = await add_recording(
            w.pool, rdir, agent="alice", started_at=base + timedelta(minutes=minutes), number=number, key=key,
            seed=50 + i,
        )  # fmt: skip
    return calls


async def _dsar(w: World, **body: object) -> dict[str, object]:
    body.setdefault("case_reference", "DSAR-2026-7")
    async with w.client.post("/api/dsar/search", json=body, headers=w.auth("dana")) as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def test_dsar_without_the_key_lists_every_call_sharing_the_mask(w: World) -> None:
    calls = await _dsar_world(w, key=None)
    at = (T0 + timedelta(days=10, minutes=1)).isoformat()
    found = await _dsar(w, number="040 555 0123".replace("040", "+35840"), at=at, window_minutes=10)
    assert found["number_masked"] == "+358405550***" and found["exact_matching"] is False
    ids = [c["id"] for c in found["candidates"]]  # type: ignore[attr-defined]
    assert set(ids) == {str(calls[k]) for k in ("right", "other1", "other2")}
    assert all(c["match"] == "masked" for c in found["candidates"])  # type: ignore[attr-defined]
    assert ids[0] == str(calls["right"])  # nearest in time first


async def test_dsar_with_the_key_finds_exactly_the_right_calls(db_dsn: str, tmp_path: Path) -> None:
    from tests.integration.access_world import KEY

    async with world(db_dsn, tmp_path, key=KEY) as w:
        calls = await _dsar_world(w, key=KEY)
        at = (T0 + timedelta(days=10, minutes=1)).isoformat()
        found = await _dsar(w, number="+358 (40) 555-0123", at=at, window_minutes=10)
        assert found["exact_matching"] is True
        assert [(c["id"], c["match"]) for c in found["candidates"]] == [(str(calls["right"]), "exact")]  # type: ignore[attr-defined]
        wide = await _dsar(w, number="+358405550123", at=at, window_minutes=120)
        assert [c["id"] for c in wide["candidates"]] == [str(calls["right"]), str(calls["right_later"])]  # type: ignore[attr-defined]
        other = await _dsar(w, number="+358405550999", at=at, window_minutes=10)
        assert [c["id"] for c in other["candidates"]] == [str(calls["other2"])]  # type: ignore[attr-defined]


async def test_dsar_key_now_but_not_at_recording_time_falls_back_to_the_mask(
    db_dsn: str, tmp_path: Path
) -> None:
    from tests.integration.access_world import KEY

    async with world(db_dsn, tmp_path, key=KEY) as w:
        calls = await _dsar_world(w, key=None)
        at = (T0 + timedelta(days=10)).isoformat()
        found = await _dsar(w, number="+358405550123", at=at, window_minutes=10)
        assert {c["id"] for c in found["candidates"]} == {  # type: ignore[attr-defined]
            str(calls[k]) for k in ("right", "other1", "other2")
        }


async def test_dsar_refuses_unusable_requests(w: World) -> None:
    for body in [
        {"number": "123", "at": "2026-03-02T09:00Z"},
        {"number": "+358401234567"},
        {"at": "2026-03-02T09:00Z"},
        {"number": 358401234567, "at": "2026-03-02T09:00Z"},
        {"number": "+358401234567", "at": "2026-03-02T09:00Z", "window_minutes": -1},
    ]:
        async with w.client.post("/api/dsar/search", json=body, headers=w.auth("dana")) as r:
            assert r.status == 400, body
            assert "358401234567" not in await r.text()


# --- exports ---------------------------------------------------------------------------------------


EXPORT = {
    "recipient": "Helsinki police",
    "legal_basis": "Criminal investigation",
    "case_reference": "5500/R/123/26",
}


async def test_export_bundle_and_disclosure_record(w: World) -> None:
    ids = [str(w.recs["alice"]), str(w.recs["dave"])]
    async with w.client.post(
        "/api/exports", json=EXPORT | {"recording_ids": ids}, headers=w.auth("dana")
    ) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/zip"
        assert "attachment" in r.headers["Content-Disposition"]
        data = await r.read()
    assert hashlib.sha256(data).hexdigest() == r.headers["X-Callrec-Bundle-SHA256"]
    zf = zipfile.ZipFile(io.BytesIO(data))
    sums = dict(line.split("  ")[::-1] for line in zf.read("SHA256SUMS").decode().splitlines())
    assert set(sums) == set(zf.namelist()) - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert hashlib.sha256(zf.read(name)).hexdigest() == digest
    meta = json.loads(zf.read("metadata.json"))
    assert meta["disclosure"] == EXPORT and meta["exported_by"] == "dana"
    assert [m["id"] for m in meta["recordings"]] == ids
    assert "customer_number_hmac" not in meta["recordings"][0]
    [row] = await w.audit_rows()
    detail = json.loads(row["detail"])
    assert (row["action"], row["outcome"], row["user_name"]) == ("export", "ok", "dana")
    assert detail["recording_ids"] == ids and detail["bundle_sha256"] == hashlib.sha256(data).hexdigest()
    assert {k: detail[k] for k in EXPORT} == EXPORT
    async with w.client.get(f"/api/audit?recording_id={ids[1]}&action=export", headers=w.auth("dana")) as r:
        assert len((await r.json())["entries"]) == 1


async def test_export_refuses_altered_audio_and_bad_requests(w: World) -> None:
    rid = w.recs["carol"]
    path = w.settings.asterisk.recordings_dir / f"{T0 + timedelta(hours=2):%Y/%m/%d}/{rid}.wav"
    path.write_bytes(path.read_bytes() + b"tampered")
    body = EXPORT | {"recording_ids": [str(rid)]}
    async with w.client.post("/api/exports", json=body, headers=w.auth("dana")) as r:
        assert r.status == 409 and "sha256" in (await r.json())["message"]
    bad_bodies: list[dict[str, object]] = [
        EXPORT | {"recording_ids": []},
        EXPORT | {"recording_ids": ["nope"]},
        {"recording_ids": [str(w.recs["alice"])], "recipient": "x", "legal_basis": "y"},
    ]
    for bad in bad_bodies:
        async with w.client.post("/api/exports", json=bad, headers=w.auth("dana")) as r:
            assert r.status == 400
    async with w.client.post(
        "/api/exports", json=EXPORT | {"recording_ids": [str(uuid.uuid4())]}, headers=w.auth("dana")
    ) as r:
        assert r.status == 404
    outcomes = [(r["status"], r["outcome"]) for r in await w.audit_rows()]
    assert outcomes == [
        (409, "error"),
        (400, "invalid"),
        (400, "invalid"),
        (400, "invalid"),
        (404, "not_found"),
    ]


# --- retention actions --------------------------------------------------------------------------------


async def test_hold_release_erase(w: World) -> None:
    rid = w.recs["bob"]
    base = f"/api/recordings/{rid}"
    async with w.client.post(f"{base}/hold", json={"reason": "complaint 17"}, headers=w.auth("dana")) as r:
        assert r.status == 200 and (await r.json())["legal_hold"] is True
    async with w.client.post(f"{base}/erase", json={"reason": "Art. 17"}, headers=w.auth("dana")) as r:
        assert r.status == 409 and (await r.json())["error"] == "legal_hold"
    async with w.client.post(f"{base}/release", json={}, headers=w.auth("dana")) as r:
        assert r.status == 200 and (await r.json())["legal_hold"] is False
    async with w.client.post(f"{base}/erase", json={"reason": "Art. 17"}, headers=w.auth("dana")) as r:
        assert r.status == 200 and (await r.json())["bytes_destroyed"] > 0
    async with w.client.get(base, headers=w.auth("dana")) as r:
        assert r.status == 404
    async with w.client.post(f"{base}/hold", json={"reason": "x"}, headers=w.auth("dana")) as r:
        assert r.status == 404
    async with w.client.post(f"{base}/hold", json={}, headers=w.auth("dana")) as r:
        assert r.status in (400, 404)
    rows = [(r["action"], r["status"], r["recording_id"]) for r in await w.audit_rows()]
    assert [a for a, _, _ in rows] == ["hold", "erase", "release", "erase", "view", "hold", "hold"]
    assert all(r == rid for _, _, r in rows)


async def test_hold_refuses_a_past_until(w: World) -> None:
    body = {"reason": "x", "until": "2001-01-01T00:00Z"}
    async with w.client.post(f"/api/recordings/{w.recs['bob']}/hold", json=body, headers=w.auth("dana")) as r:
        assert r.status == 400


# --- web forms and cookies ------------------------------------------------------------------------------


async def test_cookie_authenticated_state_change_must_be_same_origin(w: World) -> None:
    body = {"number": "+358401234567", "at": "2026-03-02T09:00Z", "case_reference": "D-3"}
    cookie = {"callrec_session": await w.sign_in("dana")}
    w.client.session.cookie_jar.clear()  # sent by hand below, or not at all
    async with w.client.post("/api/dsar/search", json=body, cookies=cookie) as r:
        assert r.status == 403 and (await r.json())["error"] == "cross_site"
    async with w.client.post(
        "/api/dsar/search", json=body, cookies=cookie, headers={"Sec-Fetch-Site": "cross-site"}
    ) as r:
        assert r.status == 403
    async with w.client.post(
        "/api/dsar/search", json=body, cookies=cookie, headers={"Sec-Fetch-Site": "same-origin"}
    ) as r:
        assert r.status == 200


async def test_sign_in_sets_a_strict_httponly_cookie(w: World) -> None:
    origin = {"Origin": str(w.client.make_url("")).rstrip("/")}
    async with w.client.post("/signin", data={"token": "callrec_nope"}, headers=origin) as r:
        assert r.status == 401 and "unknown" in await r.text()
    async with w.client.post(
        "/signin", data={"token": w.tokens["alice"]}, headers=origin, allow_redirects=False
    ) as r:
        assert r.status == 303
        cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert w.tokens["alice"] not in cookie
    async with w.client.get("/", params={"from": "2026-01-01T00:00"}) as r:
        page = await r.text()
    assert str(w.recs["alice"]) in page and str(w.recs["bob"]) not in page
    assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")
    rows = await w.audit_rows()
    assert [(x["action"], x["user_name"], x["outcome"]) for x in rows] == [
        ("sign_in", None, "unauthenticated"),
        ("sign_in", "alice", "ok"),
        ("search", "alice", "ok"),
    ]


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
    "array": list,
    "object": dict,
}


def _type_errors(doc: dict[str, Any], schema: dict[str, Any], value: dict[str, Any]) -> list[str]:
    """Keys of ``value`` whose JSON type or enum the object ``schema`` does not allow."""
    wrong = []
    for key, item in value.items():
        prop = _resolve(doc, schema["properties"].get(key, {}))
        types = prop.get("type", [])
        types = [types] if isinstance(types, str) else types
        # bool is an int in Python, never in JSON
        ok = not types or any(
            isinstance(item, _JSON_TYPES[t]) and not (isinstance(item, bool) and t in ("integer", "number"))
            for t in types
        )
        if not ok or ("enum" in prop and item not in prop["enum"]):
            wrong.append(f"{key}={item!r}")
    return wrong


def _response_schema(doc: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    response = doc["paths"][path][method.lower()]["responses"][str(status)]
    return _resolve(doc, response["content"]["application/json"]["schema"])


# What the described API gets wrong (operation, status or key); empty since issue #15. Exact on
# purpose, so that a new gap shows here.
KNOWN_GAPS: set[str] = set()


async def test_openapi_describes_every_api_route(w: World) -> None:
    async with w.client.get("/api/openapi.json") as r:
        assert r.status == 200
        doc = await r.json()
    described = {(p, m.upper()) for p, ops in doc["paths"].items() for m in ops}
    served = {
        (route.resource.canonical, route.method)
        for route in w.client.app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/api/")
    }
    assert described == served
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            params = op.get("parameters", [])
            in_path = [p for p in params if p["in"] == "path"]
            assert {p["name"] for p in in_path} == set(re.findall(r"\{(\w+)\}", path)), (method, path)
            assert all(p["required"] for p in in_path), (method, path)
            assert op["responses"], (method, path)


async def test_openapi_recording_schema_is_what_each_role_gets(w: World) -> None:
    async with w.client.get("/api/openapi.json") as r:
        doc = await r.json()
    recording = _resolve(doc, {"$ref": "#/components/schemas/Recording"})
    props, required = set(recording["properties"]), set(recording.get("required", []))
    # The schema's own note: admin sees no customer_number_masked, agent, agents, agent_user or audio_url.
    hidden_from_admin = {
        "customer_number_masked",
        "agent",
        "agents",
        "agent_user",
        "agent_display_name",
        "audio_url",
    }
    assert hidden_from_admin <= props
    gaps: set[str] = set()
    for who in ("alice", "sam", "sue", "dana", "adam"):
        role = PEOPLE[who][0]
        expected = props - hidden_from_admin if role == "admin" else props
        async with w.client.get("/api/recordings", headers=w.auth(who)) as r:
            assert r.status == 200
            page = await r.json()
        listed = page["recordings"]
        assert len(listed) == (len(w.recs) if role == "admin" else len(REACH[who]))
        page_props = set(_response_schema(doc, "/api/recordings", "GET", 200)["properties"])
        gaps |= {f"GET /api/recordings 200: key {k} not described" for k in set(page) - page_props}
        gaps |= {f"GET /api/recordings 200: key {k} not served" for k in page_props - set(page)}
        async with w.client.get(f"/api/recordings/{listed[0]['id']}", headers=w.auth(who)) as r:
            assert r.status == 200
            one = await r.json()
        assert one == listed[0]
        for rec in listed:
            assert set(rec) == expected, who
            assert required <= set(rec), who
            assert _type_errors(doc, recording, rec) == [], who
    assert gaps == {g for g in KNOWN_GAPS if g.startswith("GET /api/recordings 200")}


async def test_openapi_describes_every_status_the_main_routes_answer(w: World) -> None:
    """Each status a real request can get, and each error body, is in the description."""
    async with w.client.get("/api/openapi.json") as r:
        doc = await r.json()
    error_props = set(_resolve(doc, {"$ref": "#/components/schemas/Error"})["properties"])
    alice, dave, bob, carol, ghost = (w.recs[k] for k in ("alice", "dave", "bob", "carol", "ghost"))
    (w.settings.asterisk.recordings_dir / f"{T0 + timedelta(hours=6):%Y/%m/%d}/{ghost}.wav").unlink()
    unknown = uuid.uuid4()
    audio, rec = "/api/recordings/{id}/audio", "/api/recordings/{id}"
    dsar = {"number": "+358401234567", "at": T0.isoformat(), "case_reference": "DSAR-1"}
    export = {"recipient": "police", "legal_basis": "x", "case_reference": "c-1"}
    # (method, described path, id or None, who, body, headers, status it must get)
    probes: list[tuple[str, str, uuid.UUID | None, str | None, Any, dict[str, str], int]] = [
        ("GET", "/api/openapi.json", None, None, None, {}, 200),
        ("GET", "/api/whoami", None, "bob", None, {}, 200),
        ("GET", "/api/whoami", None, None, None, {}, 401),
        ("GET", "/api/recordings", None, "sam", None, {}, 200),
        ("GET", "/api/recordings?from=yesterday", None, "alice", None, {}, 400),
        ("GET", "/api/recordings", None, None, None, {}, 401),
        ("GET", "/api/recordings?agent=alice", None, "adam", None, {}, 403),
        ("GET", rec, alice, "alice", None, {}, 200),
        ("GET", rec, alice, None, None, {}, 401),
        ("GET", rec, dave, "alice", None, {}, 404),
        ("GET", audio, alice, "alice", None, {}, 200),
        ("GET", audio, alice, "alice", None, {"Range": "bytes=0-9"}, 206),
        ("GET", audio, alice, "alice", None, {"Range": "bytes=99999-"}, 416),
        ("GET", audio, alice, None, None, {}, 401),
        ("GET", audio, alice, "adam", None, {}, 403),
        ("GET", audio, dave, "alice", None, {}, 404),
        ("GET", audio, ghost, "dana", None, {}, 404),  # the row is there, the file is not
        ("HEAD", audio, alice, "alice", None, {}, 200),
        ("HEAD", audio, alice, "alice", None, {"Range": "bytes=0-9"}, 206),
        ("HEAD", audio, alice, None, None, {}, 401),
        ("HEAD", audio, alice, "adam", None, {}, 403),
        ("HEAD", audio, dave, "alice", None, {}, 404),
        ("POST", rec + "/hold", alice, "dana", {"reason": "case 7"}, {}, 200),
        ("POST", rec + "/hold", alice, "dana", {}, {}, 400),
        ("POST", rec + "/hold", alice, None, {"reason": "x"}, {}, 401),
        ("POST", rec + "/hold", alice, "alice", {"reason": "x"}, {}, 403),
        ("POST", rec + "/hold", unknown, "dana", {"reason": "x"}, {}, 404),
        ("POST", rec + "/erase", alice, "dana", {"reason": "x"}, {}, 409),  # on hold
        ("POST", rec + "/release", alice, "dana", {}, {}, 200),
        ("POST", rec + "/release", alice, "dana", {"reason": "x" * 301}, {}, 400),
        ("POST", rec + "/release", alice, None, {}, {}, 401),
        ("POST", rec + "/release", alice, "alice", {}, {}, 403),
        ("POST", rec + "/release", unknown, "dana", {}, {}, 404),
        ("POST", rec + "/erase", carol, "dana", {"reason": "x"}, {}, 200),
        ("POST", rec + "/erase", bob, "dana", {}, {}, 400),
        ("POST", rec + "/erase", bob, None, {"reason": "x"}, {}, 401),
        ("POST", rec + "/erase", bob, "alice", {"reason": "x"}, {}, 403),
        ("POST", rec + "/erase", unknown, "dana", {"reason": "x"}, {}, 404),
        ("POST", "/api/dsar/search", None, "dana", dsar, {}, 200),
        ("POST", "/api/dsar/search", None, "dana", {"number": 5, "at": T0.isoformat()}, {}, 400),
        ("POST", "/api/dsar/search", None, None, dsar, {}, 401),
        ("POST", "/api/dsar/search", None, "alice", dsar, {}, 403),
        ("POST", "/api/exports", None, "dana", export | {"recording_ids": [str(bob)]}, {}, 200),
        ("POST", "/api/exports", None, "dana", export | {"recording_ids": "all"}, {}, 400),
        ("POST", "/api/exports", None, None, export | {"recording_ids": [str(bob)]}, {}, 401),
        ("POST", "/api/exports", None, "alice", export | {"recording_ids": [str(bob)]}, {}, 403),
        ("POST", "/api/exports", None, "dana", export | {"recording_ids": [str(unknown)]}, {}, 404),
        ("POST", "/api/exports", None, "dana", export | {"recording_ids": [str(ghost)]}, {}, 409),
        ("GET", "/api/audit", None, "dana", None, {}, 200),
        ("GET", "/api/audit?from=yesterday", None, "dana", None, {}, 400),
        ("GET", "/api/audit", None, None, None, {}, 401),
        ("GET", "/api/audit", None, "alice", None, {}, 403),
    ]  # fmt: skip
    # Every answer needs its audit row: without one, any route answers 503.
    allowed = {(m, p.split("?")[0]): (rid, who, body) for m, p, rid, who, body, _, s in probes if s == 200}
    outage = [(m, p, rid, who, body, {}, 503) for (m, p), (rid, who, body) in allowed.items()]
    origin = {"Origin": str(w.client.make_url("")).rstrip("/")}
    gaps: set[str] = set()

    async def ask(
        method: str,
        path: str,
        rid: uuid.UUID | None,
        who: str | None,
        body: Any,
        headers: dict[str, str],
        status: int,
    ) -> None:
        url = path.format(id=rid)
        # Without a token a POST must come from the page itself (else 403 cross_site).
        headers = headers | (w.auth(who) if who else origin if method == "POST" else {})
        async with w.client.request(method, url, json=body, headers=headers) as r:
            assert r.status == status, (method, url, who, await r.text())
            answer = await r.read()
            content_type = r.content_type
        template = path.split("?")[0]
        if str(status) not in doc["paths"][template][method.lower()]["responses"]:
            gaps.add(f"{method} {template} {status}: not described")
        if status >= 400 and method != "HEAD":
            assert content_type == "application/json", (method, url)
            assert set(json.loads(answer)) <= error_props, (method, url, answer)

    for probe in probes:
        await ask(*probe)
    await as_owner(
        w.settings.database_dsn, "ALTER TABLE audit_log ADD CONSTRAINT refuse_all CHECK (false) NOT VALID"
    )
    for probe in outage:
        await ask(*probe)
    assert gaps == {g for g in KNOWN_GAPS if not g.startswith("GET /api/recordings 200")}


async def test_served_by_an_app_runner_as_callrec_run_does(w: World) -> None:
    """The integration in app.py: its own pool, AppRunner without aiohttp's access log, a TCPSite."""
    from aiohttp import ClientSession, web

    from callrec.http.api import build_api

    behind_proxy = replace(w.settings, trusted_proxies=frozenset({"127.0.0.1"}))
    runner = web.AppRunner(build_api(w.pool, behind_proxy), access_log=None, shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        headers = w.auth("alice") | {"X-Forwarded-For": "198.51.100.7, 203.0.113.5"}
        async with (
            ClientSession() as session,
            session.get(f"http://{host}:{port}/api/recordings/{w.recs['alice']}", headers=headers) as r,
        ):
            assert r.status == 200
    finally:
        await runner.cleanup()
    [row] = await w.audit_rows()
    # Only the entry the trusted proxy on loopback appended itself is believed.
    assert row["client"] == "203.0.113.5 via 127.0.0.1"


async def test_pages_escape_what_the_dialplan_wrote(w: World) -> None:
    from tests.integration.access_world import add_recording

    rid = await add_recording(
        w.pool, w.settings.asterisk.recordings_dir, agent='<img src=x onerror="alert(1)">'
    )
    cookie = {"callrec_session": await w.sign_in("dana")}
    for path in ("/?from=2026-01-01T00:00", f"/recordings/{rid}"):
        async with w.client.get(path, cookies=cookie) as r:
            page = await r.text()
        assert (
            r.status == 200
            and "<img" not in page
            and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page  # markupsafe's spelling
        )
