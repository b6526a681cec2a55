"""Signing in on the page with a username and password, on real PostgreSQL: the argon2id hash,
one message for every refusal, the throttle, the audit rows, and the rules that end a
password session (docs/web.md#signing-in)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import argon2
import pytest

from callrec.access import passwords, people
from callrec.access.people import Profile
from tests.integration.access_world import World, world

PASSWORD = "correct horse battery"
REFUSED = "That username and password do not match."


async def post_sign_in(w: World, **form: str) -> tuple[int, str, str | None]:
    """Status, page text and the session cookie (if one was set) of a sign-in form."""
    origin = {"Origin": str(w.client.make_url("")).rstrip("/")}
    w.client.session.cookie_jar.clear()  # each attempt as a browser that is not signed in
    async with w.client.post("/signin", data=form, headers=origin, allow_redirects=False) as r:
        cookie = r.cookies.get("callrec_session")
        w.client.session.cookie_jar.clear()
        return r.status, await r.text(), cookie.value if cookie is not None and cookie.value else None


async def whoami(w: World, session: str) -> str | None:
    """The name the page greets the session with, ``None`` when it asks to sign in."""
    async with w.client.get("/", cookies={"callrec_session": session}, allow_redirects=False) as r:
        text = await r.text()
        if 'name="password"' in text:
            return None
        assert r.status == 200, text
        return text.split('<form class="signout" method="post" action="/signout"><span>')[1].split("<")[0]


async def sign_ins(w: World) -> list[tuple[Any, ...]]:
    rows = await w.pool.fetch(
        "SELECT user_name, outcome, status, detail FROM audit_log WHERE action = 'sign_in' ORDER BY id"
    )
    return [(r["user_name"], r["outcome"], r["status"], json.loads(r["detail"])) for r in rows]


async def test_password_sign_in_one_message_for_every_refusal(db_dsn: str, tmp_path: Path) -> None:
    async with world(db_dsn, tmp_path) as w:
        await people.set_profile(w.pool, "alice", Profile(display_name="Alice Mäkinen"))
        assert await passwords.set_password(w.pool, "alice", PASSWORD) == 0
        stored = await w.pool.fetchval("SELECT password_hash FROM users WHERE name = 'alice'")
        assert stored.startswith("$argon2id$") and PASSWORD not in stored

        status, text, session = await post_sign_in(w, username="alice", password=PASSWORD)
        assert status == 303 and session is not None
        assert await whoami(w, session) == "Alice Mäkinen"
        method = await w.pool.fetchval("SELECT method FROM web_sessions WHERE token_id IS NULL")
        assert method == "password"

        refusals = [
            {"username": "alice", "password": "not the password"},  # wrong password
            {"username": "alicia", "password": PASSWORD},  # no such person
            {"username": "bob", "password": PASSWORD},  # a person without a password
            {"username": "*)(uid=*", "password": PASSWORD},  # not a name at all
            {"username": "alice", "password": ""},
            {"username": "alice", "password": "x" * 10_000},
        ]
        for form in refusals:
            status, text, session = await post_sign_in(w, **form)
            assert status == 401 and REFUSED in text and session is None, form
            # The username field keeps what was typed (escaped); the password is never echoed.
            assert 'name="username" value="' in text and PASSWORD not in text.replace(REFUSED, "")
        status, text, _ = await post_sign_in(w, username="*)(uid=*", password=PASSWORD)
        assert 'value="*)(uid=*"' in text

        rows = await sign_ins(w)
        assert rows[0] == ("alice", "ok", 303, {"method": "password", "user": "alice"})
        assert [r[1:3] for r in rows[1:]] == [("unauthenticated", 401)] * (len(refusals) + 1)
        # A name that exists is noted; anything else typed into the field is not (it may be
        # a password typed into the wrong box).
        assert [r[3].get("user") for r in rows[1:4]] == ["alice", None, "bob"]
        assert all(r[0] is None for r in rows[1:])


async def test_unknown_names_cost_the_same_work_off_the_event_loop(
    db_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with world(db_dsn, tmp_path) as w:
        await passwords.set_password(w.pool, "alice", PASSWORD)
        await people.set_profile(w.pool, "carol", Profile(sign_in="directory"))  # no [ldap] here
        checks: list[tuple[str, bool]] = []
        real = passwords._HASHER

        class Watched:
            def verify(self, stored: str, password: str) -> Any:
                checks.append((stored, threading.current_thread() is threading.main_thread()))
                return real.verify(stored, password)

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        monkeypatch.setattr(passwords, "_HASHER", Watched())
        for name in ("alice", "nobody", "bob", "carol", "bad name!"):
            status, _, _ = await post_sign_in(w, username=name, password="a wrong password")
            assert status == 401
        assert len(checks) == 5 and not any(on_loop for _, on_loop in checks)
        dummy = passwords._dummy()
        assert [stored == dummy for stored, _ in checks] == [False, True, True, True, True]


async def test_an_old_hash_is_replaced_at_sign_in(db_dsn: str, tmp_path: Path) -> None:
    async with world(db_dsn, tmp_path) as w:
        weak = argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
        await w.pool.execute("UPDATE users SET password_hash = $1 WHERE name = 'alice'", weak)
        status, _, _ = await post_sign_in(w, username="alice", password=PASSWORD)
        assert status == 303
        stored = await w.pool.fetchval("SELECT password_hash FROM users WHERE name = 'alice'")
        assert stored != weak and not argon2.PasswordHasher().check_needs_rehash(stored)
        assert argon2.PasswordHasher().verify(stored, PASSWORD)


async def test_password_sessions_end_at_idle_lifetime_disable_and_password_change(
    db_dsn: str, tmp_path: Path
) -> None:
    async with world(db_dsn, tmp_path) as w:
        for name in ("alice", "bob", "carol", "dave"):
            await passwords.set_password(w.pool, name, PASSWORD)

        async def session(name: str) -> str:
            status, _, cookie = await post_sign_in(w, username=name, password=PASSWORD)
            assert status == 303 and cookie is not None
            return cookie

        alice, bob, carol, dave = [await session(n) for n in ("alice", "bob", "carol", "dave")]
        # Revoking API tokens does not touch a password session.
        await people.revoke_tokens(w.pool, "alice")
        assert await whoami(w, alice) == "alice"

        idle = w.settings.session_idle_timeout + 1
        await w.pool.execute(
            "UPDATE web_sessions s SET last_seen_at = now() - $1 * interval '1 second'"
            " FROM users u WHERE u.id = s.user_id AND u.name = 'alice'",
            idle,
        )
        await w.pool.execute(
            "UPDATE web_sessions s SET expires_at = now() FROM users u"
            " WHERE u.id = s.user_id AND u.name = 'bob'"
        )
        await people.disable_user(w.pool, "carol")
        assert await passwords.set_password(w.pool, "dave", "a new password for dave") == 1
        assert [await whoami(w, s) for s in (alice, bob, carol, dave)] == [None] * 4
        status, _, _ = await post_sign_in(w, username="dave", password=PASSWORD)
        assert status == 401
        status, _, _ = await post_sign_in(w, username="carol", password=PASSWORD)
        assert status == 401  # disabled

        # Signing out ends it too; the cookie is then worthless.
        status, _, cookie = await post_sign_in(w, username="dave", password="a new password for dave")
        assert status == 303 and cookie is not None
        origin = {"Origin": str(w.client.make_url("")).rstrip("/")}
        async with w.client.post(
            "/signout", cookies={"callrec_session": cookie}, headers=origin, allow_redirects=False
        ) as r:
            assert r.status == 303
        assert await whoami(w, cookie) is None

        # Signing in again in the same browser ends the session it had.
        first = await session("bob")
        async with w.client.post(
            "/signin",
            data={"username": "dave", "password": "a new password for dave"},
            cookies={"callrec_session": first},
            headers=origin,
            allow_redirects=False,
        ) as r:
            assert r.status == 303 and r.cookies["callrec_session"].value != first
        assert await whoami(w, first) is None


async def test_failed_sign_ins_are_throttled_and_then_not_even_checked(db_dsn: str, tmp_path: Path) -> None:
    async with world(db_dsn, tmp_path, refused_per_minute=3) as w:
        await passwords.set_password(w.pool, "alice", PASSWORD)
        for _ in range(3):
            assert (await post_sign_in(w, username="alice", password="guess guess guess"))[0] == 401
        # Over the rate, even the right password is not checked: guessing gains nothing.
        status, text, session = await post_sign_in(w, username="alice", password=PASSWORD)
        assert status == 429 and session is None and "too many" in text.lower()
        assert (await post_sign_in(w, token=w.tokens["alice"]))[0] == 303  # a valid token is no refusal
        rows = await sign_ins(w)
        assert [r[1:3] for r in rows] == [("unauthenticated", 401)] * 3 + [("ok", 303)]


async def test_the_token_form_stays_for_people_without_a_password(db_dsn: str, tmp_path: Path) -> None:
    async with world(db_dsn, tmp_path) as w:
        status, text, _ = await post_sign_in(w, token="callrec_not-a-token")
        assert status == 401 and "That token is unknown" in text and "<details open>" in text
        status, _, session = await post_sign_in(w, token=w.tokens["bob"])
        assert status == 303 and session is not None and await whoami(w, session) == "bob"
        assert (await sign_ins(w))[-1] == ("bob", "ok", 303, {"method": "token"})
        async with w.client.get("/") as r:
            page = await r.text()
        assert 'autocomplete="current-password"' in page and "<details>" in page
