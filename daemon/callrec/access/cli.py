"""``callrec users ...`` and ``callrec audit``: the people who may reach recordings, and the
audit log, from a shell on the server.

Every change writes an audit row naming the operator's login (``cli:<user>``); reading the
audit log is an access too, and is logged the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from callrec.access import audit, passwords
from callrec.access.people import (
    ROLES,
    SIGN_INS,
    BadValue,
    PeopleError,
    Profile,
    add_user,
    disable_user,
    issue_token,
    list_users,
    revoke_tokens,
    set_profile,
    set_supervisor,
)
from callrec.config import Settings
from callrec.db import cli as db_cli
from callrec.db.pool import DbPool
from callrec.web.settings import LANGUAGES

Verb = Callable[[DbPool, argparse.Namespace], Awaitable[int]]


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``callrec users ...`` and ``callrec audit``; cli.parser() calls this."""
    users = sub.add_parser("users", help="Manage who may reach recordings.", description="Manage users.")
    verbs = users.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help: str, handler: Verb) -> argparse.ArgumentParser:
        cmd = verbs.add_parser(name, help=help, description=help, parents=[common])
        cmd.set_defaults(handler=lambda settings, args: _users(settings, handler, args))
        return cmd

    add = verb("add", "Add a user.", _cmd_add)
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--supervisor", metavar="NAME", help="their supervisor (a user with role supervisor)")
    add.add_argument(
        "--agent-id",
        metavar="VALUE",
        help="the CALLREC_AGENT value of their calls (default for an agent: NAME)",
    )
    _profile_options(add, "")
    pw = verb(
        "password",
        "Set a user's password for the web page, read from standard input (one line).",
        _cmd_password,
    )
    pw.add_argument("name")
    prof = verb(
        "set",
        'Change a user\'s display name, time zone, language or sign-in method ("" clears).',
        _cmd_set,
    )
    prof.add_argument("name")
    _profile_options(prof, '; "" clears it')
    lst = verb("list", "List users.", _cmd_list)
    lst.add_argument("--all", action="store_true", help="include disabled users")
    sup = verb("set-supervisor", "Change a user's supervisor.", _cmd_set_supervisor)
    sup.add_argument("name")
    sup.add_argument("supervisor", nargs="?", help="omit to clear")
    dis = verb("disable", "Disable a user and revoke their tokens.", _cmd_disable)
    dis.add_argument("name")
    tok = verb("token", "Issue a new API token and print it once.", _cmd_token)
    tok.add_argument("name")
    tok.add_argument("--days", type=int, help="expire after this many days (default: never)")
    rev = verb("revoke", "Revoke every token of a user.", _cmd_revoke)
    rev.add_argument("name")

    help = "Read the audit log of access to recordings (newest first)."
    cmd = sub.add_parser("audit", help=help, description=help, parents=[common])
    cmd.add_argument("--since", type=audit.parse_time, metavar="TIME", help="ISO time; without offset: local")
    cmd.add_argument("--until", type=audit.parse_time, metavar="TIME")
    cmd.add_argument("--user", metavar="NAME")
    cmd.add_argument("--action", metavar="ACTION", help="e.g. play, export, dsar_search, erase")
    cmd.add_argument("--recording", type=uuid.UUID, metavar="ID")
    cmd.add_argument("--limit", type=int, default=100)
    cmd.add_argument("--json", action="store_true", help="one JSON object per line")
    cmd.set_defaults(handler=_audit_command)


def _profile_options(cmd: argparse.ArgumentParser, clears: str) -> None:
    cmd.add_argument(
        "--display-name", metavar="TEXT", help=f"as the page shows them, any script (default: NAME){clears}"
    )
    cmd.add_argument(
        "--time-zone",
        metavar="ZONE",
        help=f"IANA name, e.g. Europe/Helsinki (default: [web] time_zone){clears}",
    )
    cmd.add_argument(
        "--language", metavar="LANG", help=f"{'|'.join(LANGUAGES)} (default: the browser's){clears}"
    )
    cmd.add_argument(
        "--sign-in",
        choices=SIGN_INS,
        help="password (set with `callrec users password`) or directory (the [ldap] server)",
    )


# --- `callrec users` ---------------------------------------------------------------------------


def _users(settings: Settings, handler: Verb, args: argparse.Namespace) -> int:
    if hasattr(args, "display_name"):
        try:
            args.profile = _profile(args).checked()
        except BadValue as exc:  # a usage mistake: no database needed to say so
            print(f"callrec: {exc}", file=sys.stderr)
            return 2
    return db_cli.run(settings, lambda pool: handler(pool, args), refusals=(PeopleError,))


def _profile(args: argparse.Namespace) -> Profile:
    return Profile(args.display_name, args.time_zone, args.language, args.sign_in)


def _shown(profile: Profile) -> dict[str, str]:
    """The profile fields given, for the audit row and the confirmation."""
    return {k: v for k, v in dataclasses.asdict(profile).items() if v is not None}


async def _cmd_add(pool: DbPool, args: argparse.Namespace) -> int:
    await add_user(
        pool, args.name, args.role, supervisor=args.supervisor, agent_id=args.agent_id, profile=args.profile
    )
    detail = {"name": args.name, "role": args.role, "supervisor": args.supervisor, "agent_id": args.agent_id}
    await audit.write(pool, audit.cli_entry("user_add", detail | _shown(args.profile)))
    print(f"added {args.name} ({args.role})")
    return 0


async def _cmd_set(pool: DbPool, args: argparse.Namespace) -> int:
    changes = _shown(args.profile)
    if not changes:
        raise PeopleError("nothing to change: give --display-name, --time-zone, --language or --sign-in")
    ended = await set_profile(pool, args.name, args.profile)
    detail = {"name": args.name, "sessions_ended": ended} | changes
    await audit.write(pool, audit.cli_entry("user_set", detail))
    print(f"{args.name}: " + ", ".join(f"{k.replace('_', ' ')} {v or 'cleared'}" for k, v in changes.items()))
    return 0


async def _cmd_password(pool: DbPool, args: argparse.Namespace) -> int:
    ended = await passwords.set_password(pool, args.name, _read_password())
    await audit.write(pool, audit.cli_entry("password_set", {"name": args.name, "sessions_ended": ended}))
    print(f"{args.name}: password set; {ended} web session(s) ended")
    return 0


def _read_password() -> str:
    """At a terminal: asked twice, not echoed. Piped: all of standard input, less one final
    line end (``printf '%s\\n' "$pw" | callrec users password alice``)."""
    if sys.stdin.isatty():
        first = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != first:
            raise PeopleError("the two passwords differ; nothing changed")
        return first
    text = sys.stdin.read()
    return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")


async def _cmd_list(pool: DbPool, args: argparse.Namespace) -> int:
    rows = await list_users(pool, include_disabled=args.all)
    header = ("name", "role", "supervisor", "agent_id", "tokens", "sign_in", "status", "display_name")
    table = [header] + [
        (
            u.name,
            u.role,
            u.supervisor or "-",
            u.agent_id or "-",
            str(u.active_tokens),
            u.sign_in if u.sign_in == "directory" or u.has_password else "-",
            f"disabled {u.disabled_at:%Y-%m-%d}" if u.disabled_at else "active",
            u.display_name or "-",
        )
        for u in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


async def _cmd_set_supervisor(pool: DbPool, args: argparse.Namespace) -> int:
    await set_supervisor(pool, args.name, args.supervisor)
    detail = {"name": args.name, "supervisor": args.supervisor}
    await audit.write(pool, audit.cli_entry("user_set_supervisor", detail))
    print(f"{args.name}: supervisor {args.supervisor or 'cleared'}")
    return 0


async def _cmd_disable(pool: DbPool, args: argparse.Namespace) -> int:
    revoked = await disable_user(pool, args.name)
    await audit.write(pool, audit.cli_entry("user_disable", {"name": args.name, "tokens_revoked": revoked}))
    print(f"disabled {args.name}; {revoked} token(s) revoked")
    return 0


async def _cmd_token(pool: DbPool, args: argparse.Namespace) -> int:
    if args.days is not None and not 1 <= args.days <= 3650:
        raise PeopleError("--days: expected 1 to 3650")
    token = await issue_token(pool, args.name, days=args.days)
    await audit.write(pool, audit.cli_entry("token_issue", {"name": args.name, "days": args.days}))
    # Only the token on stdout, so `callrec users token alice > file` captures just it.
    print(token)
    print(f"callrec: this token for {args.name} is shown once; only its hash is stored", file=sys.stderr)
    return 0


async def _cmd_revoke(pool: DbPool, args: argparse.Namespace) -> int:
    revoked = await revoke_tokens(pool, args.name)
    await audit.write(pool, audit.cli_entry("token_revoke", {"name": args.name, "tokens_revoked": revoked}))
    print(f"{args.name}: {revoked} token(s) revoked")
    return 0


# --- `callrec audit` ---------------------------------------------------------------------------


def _audit_command(settings: Settings, args: argparse.Namespace) -> int:
    async def work(pool: DbPool) -> int:
        filters = {"since": args.since, "until": args.until, "user": args.user, "action": args.action}
        rows = await audit.read(
            pool, **filters, recording_id=args.recording, limit=max(1, min(args.limit, 100_000))
        )
        # Reading the log is an access too.
        detail = {k: str(v) for k, v in filters.items() if v is not None}
        await audit.write(pool, audit.cli_entry("audit_read", detail | {"rows": len(rows)}))
        for row in reversed(rows):  # oldest first on a terminal, like a log
            print(orjson.dumps(row, default=str).decode() if args.json else _audit_line(row))
        return 0

    return db_cli.run(settings, work)


def _audit_line(row: dict[str, Any]) -> str:
    who = f"{row['user_name'] or '-'}({row['role'] or '-'})"
    rec = str(row["recording_id"] or "-")
    detail = orjson.dumps(row["detail"]).decode() if row["detail"] else ""
    return (
        f"{row['at']:%Y-%m-%d %H:%M:%S%z} {who} {row['action']} {row['outcome']}/{row['status'] or '-'}"
        f" {rec} {row['client'] or '-'} {detail}".rstrip()
    )
