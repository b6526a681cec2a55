"""The pure parts of signing in: what a new password, a display name, a zone and a language
may be; the [ldap] table; the throttle's "no more checks" point; the directory's refusal of
an empty password before any connection (docs/web.md#signing-in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from callrec.access import directory, passwords
from callrec.access.directory_settings import DirectorySettings, parse_ldap
from callrec.access.people import BadValue, PeopleError, Profile
from callrec.config_tables import ConfigError, Section
from callrec.http.throttle import Throttle
from callrec.ops import metrics


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("", "at least 10"),
        ("123456789", "at least 10"),
        ("x" * 257, "at most 256"),
        ("one line\nand another", "one line"),
        ("carriage\rreturn123", "one line"),
        ("a tab\tinside it", "control characters"),
        ("nul\x00byte-----", "control characters"),
    ],
)
def test_new_passwords_refused(password: str, message: str) -> None:
    with pytest.raises(PeopleError, match=message):
        passwords.check_new(password)


def test_new_passwords_taken() -> None:
    for good in ("1234567890", "pässwörd in any script 密码", "x" * 256, "  spaces count  "):
        assert passwords.check_new(good) == good


def test_profiles() -> None:
    p = Profile(display_name="  Väinö \t Väinämöinen ", time_zone="Europe/Helsinki", language="fi")
    assert p.checked() == Profile("Väinö Väinämöinen", "Europe/Helsinki", "fi", None)
    assert Profile(display_name="   ").checked().display_name == ""  # clears
    assert Profile(display_name="王明").checked().display_name == "王明"
    for bad, field in [
        (Profile(display_name="a\x1bb"), "display name"),
        (Profile(display_name="\ud800"), "display name"),  # invalid UTF-8 from a shell
        (Profile(display_name="x" * 121), "display name"),
        (Profile(time_zone="Europe/Atlantis"), "time zone"),
        (Profile(time_zone="../../etc/passwd"), "time zone"),
        (Profile(language="de"), "language"),
        (Profile(sign_in="kerberos"), "sign-in"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(BadValue, match=f"^{field}"):
            bad.checked()


def ldap(**values: object) -> DirectorySettings | None:
    return parse_ldap(Section(values, "ldap"))


def test_ldap_table(tmp_path: Path) -> None:
    assert ldap() is None
    s = ldap(url="ldap://ldap.example.org:389", bind_dn="uid={username},dc=example,dc=org", start_tls=True)
    assert s == DirectorySettings(
        "ldap://ldap.example.org:389", bind_dn="uid={username},dc=example,dc=org", start_tls=True
    )
    (tmp_path / "pw").write_text("service secret\n")
    s = ldap(
        url="ldaps://dc1.corp.example",
        search_base="DC=corp,DC=example",
        search_filter="(sAMAccountName={username})",
        search_dn="CN=callrec,DC=corp,DC=example",
        search_password_file=str(tmp_path / "pw"),
        timeout=2.5,
    )
    assert s is not None and s.search_password == "service secret" and s.timeout == 2.5
    assert "service secret" not in repr(s)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"bind_dn": "uid={username}"}, r"^ldap\.url: missing"),
        ({"url": "http://x", "bind_dn": "uid={username}"}, r"^ldap\.url: expected"),
        ({"url": "ldap://", "bind_dn": "uid={username}"}, r"^ldap\.url: expected"),
        ({"url": "ldap://x"}, r"^ldap\.bind_dn: give either bind_dn or search_base"),
        ({"url": "ldap://x", "bind_dn": "a={username}", "search_base": "b"}, "either"),
        ({"url": "ldap://x", "bind_dn": "uid=alice,dc=x"}, r"^ldap\.bind_dn: must contain \{username\}"),
        ({"url": "ldap://x", "search_base": "b", "search_filter": "(uid=*)"}, r"^ldap\.search_filter: must"),
        ({"url": "ldap://x", "search_base": "b", "search_dn": "cn=s"}, r"^ldap\.search_password: missing"),
        ({"url": "ldaps://x", "bind_dn": "{username}", "start_tls": True}, r"^ldap\.start_tls: an ldaps"),
        ({"url": "ldap://x", "bind_dn": "{username}", "ca_file": "/nonexistent"}, r"^ldap\.ca_file: "),
        (
            {"url": "ldap://x", "bind_dn": "{username}", "timeout": 0},
            r"^ldap\.timeout: must be a positive number",
        ),
        ({"url": "ldap://x", "bind_dn": "{username}", "tls": True}, r"^ldap\.tls: unknown key"),
    ],
)
def test_ldap_mistakes_are_one_line(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ldap(**values)


def test_throttle_says_when_a_password_is_no_longer_checked() -> None:
    now = [0.0]
    t = Throttle(per_minute=2, clock=lambda: now[0])
    assert not t.over("a")
    assert t.refused("a") and not t.over("a")
    assert t.refused("a") and t.over("a") and not t.over("b")
    assert not t.refused("a")  # the third: a 429
    now[0] = 60.0
    assert not t.over("a")  # a new minute


async def test_an_empty_password_never_reaches_the_directory() -> None:
    # Port 9 on a documentation address: any connection attempt would fail as "unreachable".
    settings = DirectorySettings("ldap://192.0.2.1:9", bind_dn="uid={username}", timeout=0.1)
    before = metrics.REGISTRY.get_sample_value("callrec_directory_sign_ins_total", {"outcome": "refused"})
    assert await directory.check(settings, "carol", "") == "refused"
    assert await directory.check(settings, "", "a password") == "refused"
    after = metrics.REGISTRY.get_sample_value("callrec_directory_sign_ins_total", {"outcome": "refused"})
    assert (after or 0) - (before or 0) == 2
