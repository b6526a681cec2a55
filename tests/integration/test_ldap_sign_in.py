"""Directory sign-in against a real OpenLDAP (tests/harness/slapd.py) and real PostgreSQL:
a good bind signs in, every refusal is the same message, names are escaped for the DN and
the search filter, and a directory that is down or silent is a plain message, logged and
counted, never a 500 (docs/web.md#signing-in)."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from callrec.access import directory, passwords, people
from callrec.access.directory_settings import DirectorySettings
from callrec.access.people import Profile
from callrec.ops import metrics
from tests.harness import slapd
from tests.integration.access_world import restored_logging, world
from tests.integration.test_sign_in import REFUSED, post_sign_in, sign_ins, whoami

pytestmark = pytest.mark.skipif(
    not slapd.available(), reason="needs Debian's slapd (tests/harness/apt-deps.sh installs it)"
)

DIRECTORY = {"carol": "carol's directory password", "erin": "erin's directory password"}
UNREACHABLE = "The directory cannot be reached"


@pytest.fixture
def server() -> Iterator[slapd.Slapd]:
    with slapd.running_slapd(DIRECTORY) as s:
        yield s


def by_dn(s: slapd.Slapd) -> DirectorySettings:
    return DirectorySettings(s.url, bind_dn=f"uid={{username}},{slapd.PEOPLE}", timeout=2.0)


def counted(outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value("callrec_directory_sign_ins_total", {"outcome": outcome})
    return value or 0.0


async def test_directory_sign_in_against_slapd(server: slapd.Slapd, db_dsn: str, tmp_path: Path) -> None:
    async with world(db_dsn, tmp_path, ldap=by_dn(server)) as w:
        for name in ("carol", "dave"):  # dave is not in the directory
            await people.set_profile(w.pool, name, Profile(sign_in="directory"))
        await passwords.set_password(w.pool, "alice", "alice's own password")
        before = {o: counted(o) for o in ("ok", "refused", "unreachable")}

        status, _, carol = await post_sign_in(w, username="carol", password=DIRECTORY["carol"])
        assert status == 303 and carol is not None and await whoami(w, carol) == "carol"
        assert await w.pool.fetchval("SELECT method FROM web_sessions WHERE token_id IS NULL") == "directory"
        # A password person is checked here, never against the directory.
        assert (await post_sign_in(w, username="alice", password="alice's own password"))[0] == 303

        for username, password in [
            ("carol", "not carol's password"),
            ("carol", ""),  # an unauthenticated bind must not count as a password
            ("erin", DIRECTORY["erin"]),  # in the directory, but not a callrec user
            ("dave", DIRECTORY["carol"]),  # a callrec directory user the directory does not know
            ("*)(uid=*", DIRECTORY["carol"]),
            ("carol+cn=carol", DIRECTORY["carol"]),  # not a callrec name: refused before any bind
        ]:
            status, text, session = await post_sign_in(w, username=username, password=password)
            assert status == 401 and REFUSED in text and session is None, username
        # Asked: carol (right, wrong, empty: refused unasked) and dave; the rest are not
        # callrec directory users, so the directory never hears of them.
        assert counted("ok") - before["ok"] == 1 and counted("refused") - before["refused"] == 3

        server.stop()
        log = io.StringIO()
        with restored_logging(log):
            status, text, session = await post_sign_in(w, username="carol", password=DIRECTORY["carol"])
        assert status == 503 and UNREACHABLE in text and 'value="carol"' in text and session is None
        assert counted("unreachable") - before["unreachable"] == 1
        line = next(json.loads(x) for x in log.getvalue().splitlines() if "directory" in x)
        assert line["event"] == "the directory cannot be reached" and line["url"] == server.url
        assert DIRECTORY["carol"] not in log.getvalue()
        assert await whoami(w, carol) == "carol"  # an open session does not need the directory

        rows = await sign_ins(w)
        assert rows[0] == ("carol", "ok", 303, {"method": "directory", "user": "carol"})
        assert rows[-1][1:] == ("error", 503, {"method": "directory", "user": "carol"})
        assert rows[4][3] == {"method": "password"}  # erin: no callrec user of that name


async def test_search_mode_finds_the_entry_and_escapes_the_filter(server: slapd.Slapd) -> None:
    anonymous = DirectorySettings(server.url, search_base=slapd.PEOPLE, timeout=2.0)
    account = replace(anonymous, search_dn=slapd.ROOT_DN, search_password=slapd.ROOT_PASSWORD)
    for settings in (anonymous, account):
        assert await directory.check(settings, "carol", DIRECTORY["carol"]) == "ok"
        assert await directory.check(settings, "carol", "wrong") == "refused"
        assert await directory.check(settings, "nobody", DIRECTORY["carol"]) == "refused"
        # Unescaped, (uid=carol*) would find carol and the bind would succeed.
        assert await directory.check(settings, "carol*", DIRECTORY["carol"]) == "refused"
        assert await directory.check(settings, "*", DIRECTORY["carol"]) == "refused"
        assert await directory.check(settings, "*)(uid=*", DIRECTORY["carol"]) == "refused"
    # A DN template escapes too: an RDN of its own is not slipped in.
    assert await directory.check(by_dn(server), "carol,ou=people", DIRECTORY["carol"]) == "refused"
    wrong_account = replace(account, search_password="not the root password")
    assert await directory.check(wrong_account, "carol", DIRECTORY["carol"]) == "unreachable"


async def test_a_silent_directory_is_unreachable_not_a_hang() -> None:
    """A server that accepts the connection and never answers: the timeout ends the wait."""
    accepted: list[socket.socket] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    accepting = loop.create_task(loop.sock_accept(listener))
    try:
        port = listener.getsockname()[1]
        settings = DirectorySettings(f"ldap://127.0.0.1:{port}", bind_dn="uid={username},dc=x", timeout=0.5)
        before = counted("unreachable")
        assert await directory.check(settings, "carol", "some password") == "unreachable"
        assert counted("unreachable") == before + 1
        accepted.append((await accepting)[0])
    finally:
        accepting.cancel()
        for conn in accepted:
            conn.close()
        listener.close()


async def test_directory_users_are_refused_without_a_directory(db_dsn: str, tmp_path: Path) -> None:
    async with world(db_dsn, tmp_path) as w:
        await people.set_profile(w.pool, "carol", Profile(sign_in="directory"))
        status, text, _ = await post_sign_in(w, username="carol", password=DIRECTORY["carol"])
        assert status == 401 and REFUSED in text
        detail = (await sign_ins(w))[0][3]
        assert detail == {"method": "directory", "user": "carol"}


async def test_tls_verifies_the_certificate_and_its_name() -> None:
    """ldaps:// and StartTLS against slapd with a certificate for localhost from a CA of the
    test: the right CA binds; the system's CAs, or a name the certificate does not carry, do
    not (the password is never sent then)."""
    with slapd.running_slapd(DIRECTORY, tls=True) as s:
        assert s.ldaps_url is not None
        dn = f"uid={{username}},{slapd.PEOPLE}"
        ldaps = DirectorySettings(s.ldaps_url, bind_dn=dn, ca_file=s.ca_file, timeout=2.0)
        starttls = replace(ldaps, url=s.url.replace("127.0.0.1", "localhost"), start_tls=True)
        log = io.StringIO()
        for settings in (ldaps, starttls):
            assert await directory.check(settings, "carol", DIRECTORY["carol"]) == "ok"
            assert await directory.check(settings, "carol", "wrong") == "refused"
            untrusted = replace(settings, ca_file=None)
            by_address = replace(settings, url=settings.url.replace("localhost", "127.0.0.1"))
            with restored_logging(log):
                assert await directory.check(untrusted, "carol", DIRECTORY["carol"]) == "unreachable"
                assert await directory.check(by_address, "carol", DIRECTORY["carol"]) == "unreachable"
        reasons = [json.loads(line)["error"] for line in log.getvalue().splitlines()]
        assert len(reasons) == 4 and all("CERTIFICATE_VERIFY_FAILED" in r for r in reasons), reasons
        assert sum("IP address mismatch" in r for r in reasons) == 2
        gc.collect()  # a socket left open by a failed handshake would warn here, and fail the test
