"""`callrec users` and `callrec audit` through the real CLI entry point, on real PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import argon2
import asyncpg
import pytest

from callrec import cli
from callrec.access import people
from tests.integration.access_world import as_owner, restored_logging

CONFIG = """
[asterisk]
ari_username = "callrec"
ari_password = "x"
ami_username = "callrec"
ami_secret = "x"
recordings_dir = "{dir}"
[database]
dsn = "{dsn}"
[registers.customer-service]
direction = "inbound"
retention = "6 months"
"""


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(db_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    config = tmp_path / "callrec.toml"
    config.write_text(CONFIG.format(dir=tmp_path, dsn=db_dsn))

    def _run(*argv: str) -> tuple[int, str, str]:
        with restored_logging():  # main() points logging at pytest's stdout capture
            code = cli.main([*argv, "--config", str(config)])
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run


async def _fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def test_users_add_list_token_disable(run: Run, db_dsn: str) -> None:
    assert run("users", "add", "sue", "--role", "supervisor")[0] == 0
    assert run("users", "add", "alice", "--role", "agent", "--supervisor", "sue")[0] == 0
    assert (
        run("users", "add", "bob", "--role", "agent", "--supervisor", "sue", "--agent-id", "PJSIP/1002")[0]
        == 0
    )
    assert run("users", "add", "dana", "--role", "dpo")[0] == 0
    code, out, err = run("users", "token", "alice")
    token = out.strip()
    assert code == 0 and token.startswith("callrec_") and len(token) > 40 and "shown once" in err
    code, out, _ = run("users", "list")
    lines = out.splitlines()
    header = ["name", "role", "supervisor", "agent_id", "tokens", "sign_in", "status", "display_name"]
    assert lines[0].split() == header
    assert lines[1].split() == ["alice", "agent", "sue", "alice", "1", "-", "active", "-"]
    assert lines[2].split() == ["bob", "agent", "sue", "PJSIP/1002", "0", "-", "active", "-"]
    assert run("users", "disable", "alice") == (0, "disabled alice; 1 token(s) revoked\n", "")
    assert "alice" not in run("users", "list")[1] and "alice" in run("users", "list", "--all")[1]
    rows = asyncio.run(_fetch(db_dsn, "SELECT token_sha256 FROM user_tokens"))
    assert [bytes(r["token_sha256"]) for r in rows] == [hashlib.sha256(token.encode()).digest()]
    audit = asyncio.run(_fetch(db_dsn, "SELECT action, user_name, client FROM audit_log ORDER BY id"))
    assert [r["action"] for r in audit] == ["user_add"] * 4 + ["token_issue", "user_disable"]
    assert all(r["user_name"].startswith("cli:") and r["client"] == "cli" for r in audit)
    assert all(token not in str(r) for r in audit)


MISTAKES = [
    (("users", "add", "sue", "--role", "agent"), "exists already"),
    (("users", "add", "x", "--role", "agent", "--agent-id", "sue-agent"), "belongs to another user"),
    (("users", "add", "y", "--role", "agent", "--supervisor", "nobody"), "no user named 'nobody'"),
    (("users", "add", "z", "--role", "agent", "--supervisor", "alice"), "must have role supervisor"),
    (("users", "add", "bad name", "--role", "agent"), "a name is letters"),
    (("users", "add", "w", "--role", "dpo", "--agent-id", "7"), "takes no calls"),
    (("users", "set-supervisor", "sue", "sam"), "would make a loop"),
    (("users", "token", "ghost"), "no user named 'ghost'"),
    (("users", "token", "gone"), "is disabled"),
    (("users", "token", "sue", "--days", "0"), "--days"),
]


def test_user_mistakes_are_one_line(run: Run) -> None:
    run("users", "add", "sue", "--role", "supervisor", "--agent-id", "sue-agent")
    run("users", "add", "sam", "--role", "supervisor", "--supervisor", "sue")
    run("users", "add", "alice", "--role", "agent", "--supervisor", "sam")
    run("users", "add", "gone", "--role", "agent")
    run("users", "disable", "gone")
    for argv, message in MISTAKES:
        code, _, err = run(*argv)
        assert code == 1 and message in err and err.count("\n") == 1 and "Traceback" not in err, argv


async def test_supervisor_tree_and_loops(db_dsn: str) -> None:
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    try:
        for name, role, sup in [
            ("top", "supervisor", None),
            ("mid", "supervisor", "top"),
            ("a", "agent", "mid"),
        ]:
            await people.add_user(pool, name, role, supervisor=sup)  # type: ignore[arg-type]
        top = await pool.fetchval("SELECT id FROM users WHERE name = 'top'")
        assert await people.team_agent_ids(pool, top) == {"a"}
        with pytest.raises(people.PeopleError, match="loop"):
            await people.set_supervisor(pool, "top", "mid")
        with pytest.raises(asyncpg.IntegrityConstraintViolationError):
            await pool.execute("UPDATE users SET supervisor_id = id WHERE name = 'top'")
        await people.set_supervisor(pool, "a", None)
        assert await people.team_agent_ids(pool, top) == frozenset()
    finally:
        await pool.close()


def test_audit_cli_reads_and_is_itself_audited(run: Run) -> None:
    run("users", "add", "dana", "--role", "dpo")
    code, out, _ = run("audit", "--action", "user_add")
    assert code == 0 and "user_add ok/-" in out and '"name":"dana"' in out
    code, out, _ = run("audit", "--json", "--limit", "5")
    assert code == 0 and '"action":"audit_read"' in out


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def test_database_commands_share_exit_3_and_one_line(
    run: Run, db_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every command that opens the database (db/cli.py) answers an older schema and an
    unreachable server the same way: exit 3, one line, no traceback."""
    asyncio.run(as_owner(db_dsn, "DROP TABLE user_tokens CASCADE"))
    older = "callrec: database: the schema is older than this callrec; run `callrec migrate`\n"
    assert run("users", "list") == (3, "", older)

    unreachable = tmp_path / "unreachable.toml"
    unreachable.write_text(CONFIG.format(dir=tmp_path, dsn="postgresql://nobody@127.0.0.1:9/none"))
    for argv in (["users", "list"], ["audit"], ["migrate"], ["retention", "--dry-run"]):
        with restored_logging():
            code = cli.main([*argv, "--config", str(unreachable)])
        out, err = capsys.readouterr()
        assert code == 3 and out == "" and err.startswith("callrec: database: "), argv
        assert err.count("\n") == 1 and "Traceback" not in err, argv


def test_display_names_zones_languages_and_passwords(
    run: Run, db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    added = run(
        "users", "add", "vaino", "--role", "agent", "--display-name", "  Väinämöinen   Kalevala ",
        "--time-zone", "Europe/Helsinki", "--language", "fi",
    )  # fmt: skip
    assert added == (0, "added vaino (agent)\n", "")
    assert run("users", "add", "ming", "--role", "agent", "--display-name", "王明")[0] == 0
    code, out, _ = run("users", "list")
    vaino = ["vaino", "agent", "-", "vaino", "0", "-", "active", "Väinämöinen", "Kalevala"]
    assert out.splitlines()[2].split() == vaino
    assert "王明" in out
    rows = asyncio.run(_fetch(db_dsn, "SELECT display_name, time_zone, language FROM users ORDER BY name"))
    assert [tuple(r) for r in rows] == [
        ("王明", None, None),
        ("Väinämöinen Kalevala", "Europe/Helsinki", "fi"),
    ]

    for argv, message in [
        (("--time-zone", "Mars/Olympus"), "time zone 'Mars/Olympus': use an IANA name"),
        (("--language", "de"), "language 'de': expected one of en, fi, sv"),
        (("--display-name", "bell\x07"), "display name: 1 to 120 characters"),
        (("--display-name", "x" * 121), "display name: 1 to 120 characters"),
    ]:
        for verb in (("add", "new", "--role", "agent"), ("set", "vaino")):
            code, _, err = run("users", *verb, *argv)
            assert code == 2 and err.startswith(f"callrec: {message}") and err.count("\n") == 1, err

    def password(name: str, stdin: str) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        return run("users", "password", name)

    assert password("vaino", "sampo is forged\n") == (0, "vaino: password set; 0 web session(s) ended\n", "")
    stored = asyncio.run(_fetch(db_dsn, "SELECT password_hash FROM users WHERE name = 'vaino'"))[0][0]
    assert argon2.PasswordHasher().verify(stored, "sampo is forged")
    for stdin, message in [
        ("", "at least 10 characters"),
        ("short\n", "at least 10 characters"),
        ("two lines of\ntext here\n", "must be one line"),
        ("tab\tin the password", "control characters"),
    ]:
        code, _, err = password("vaino", stdin)
        assert code == 1 and message in err and err.count("\n") == 1, stdin
    assert password("nobody", "long enough password")[2].startswith("callrec: no user named 'nobody'")
    assert run("users", "list")[1].splitlines()[2].split()[5] == "password"

    code, out, _ = run("users", "set", "vaino", "--sign-in", "directory", "--display-name", "")
    assert (code, out) == (0, "vaino: display name cleared, sign in directory\n")
    assert run("users", "list")[1].splitlines()[2].split() == [
        "vaino", "agent", "-", "vaino", "0", "directory", "active", "-",
    ]  # fmt: skip
    rows = asyncio.run(_fetch(db_dsn, "SELECT password_hash, time_zone FROM users WHERE name = 'vaino'"))
    assert tuple(rows[0]) == (None, "Europe/Helsinki")  # a directory user has no password here
    assert "through the directory" in password("vaino", "another long password")[2]
    assert run("users", "set", "vaino")[2] == (
        "callrec: nothing to change: give --display-name, --time-zone, --language or --sign-in\n"
    )
    audit = asyncio.run(_fetch(db_dsn, "SELECT action, detail::text FROM audit_log ORDER BY id"))
    assert [r[0] for r in audit] == ["user_add", "user_add", "password_set", "user_set"]
    assert all("sampo" not in r[1] for r in audit)
