"""The people who may reach recordings, their API tokens, and ``callrec users``.

Every SQL statement about users and tokens lives here. A recording belongs to an agent
through ``recordings.agent_name = users.agent_id``: the value the dialplan sets in
CALLREC_AGENT, mapped to exactly one person (README.md, "Access to recordings").
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast, get_args

import asyncpg

from callrec.access import audit
from callrec.config import Settings

Role = Literal["agent", "supervisor", "admin", "dpo"]
ROLES: tuple[Role, ...] = get_args(Role)
# Recognisable by secret scanners, and cheap to refuse before any database lookup.
TOKEN_PREFIX = "callrec_"
_TOKEN_MAX = 100


class PeopleError(Exception):
    """A user-management request that cannot be done, phrased as one line for the operator."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated person, as the access policy sees them."""

    user_id: int
    name: str
    role: Role
    agent_id: str | None


@dataclass(frozen=True, slots=True)
class User:
    """One row of the directory, for listing."""

    name: str
    role: Role
    supervisor: str | None
    agent_id: str | None
    disabled_at: datetime | None
    active_tokens: int


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def _user_id(db: Any, name: str) -> int:
    user_id = await db.fetchval("SELECT id FROM users WHERE name = $1", name)
    if user_id is None:
        raise PeopleError(f"no user named {name!r}; see `callrec users list`")
    return int(user_id)


async def _supervisor_id(db: Any, name: str) -> int:
    row = await db.fetchrow("SELECT id, role, disabled_at FROM users WHERE name = $1", name)
    if row is None:
        raise PeopleError(f"no user named {name!r} to be the supervisor")
    if row["role"] != "supervisor":
        raise PeopleError(f"{name!r} has role {row['role']}; a supervisor must have role supervisor")
    if row["disabled_at"] is not None:
        raise PeopleError(f"{name!r} is disabled and cannot be anyone's supervisor")
    return int(row["id"])


async def add_user(
    db: Any, name: str, role: Role, *, supervisor: str | None = None, agent_id: str | None = None
) -> int:
    """Create a user. An agent without ``agent_id`` is linked by their name."""
    if role not in ROLES:
        raise PeopleError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    if agent_id is None and role == "agent":
        agent_id = name
    if agent_id is not None and role in ("admin", "dpo"):
        raise PeopleError(f"role {role} takes no calls; drop --agent-id")
    sup = await _supervisor_id(db, supervisor) if supervisor else None
    try:
        user_id = await db.fetchval(
            "INSERT INTO users (name, role, supervisor_id, agent_id) VALUES ($1, $2, $3, $4) RETURNING id",
            name,
            role,
            sup,
            agent_id,
        )
    except asyncpg.UniqueViolationError as exc:
        if "agent_id" in str(exc.constraint_name):
            raise PeopleError(f"agent id {agent_id!r} belongs to another user already") from None
        raise PeopleError(f"a user named {name!r} exists already") from None
    except asyncpg.CheckViolationError:
        raise PeopleError(
            f"{name!r}: a name is letters, digits and . _ @ - (64 at most), starting with a letter or digit;"
            " an agent id is 1-128 characters"
        ) from None
    return int(user_id)


async def list_users(db: Any, *, include_disabled: bool = False) -> list[User]:
    rows = await db.fetch(
        """
        SELECT u.name, u.role, s.name AS supervisor, u.agent_id, u.disabled_at,
               (SELECT count(*) FROM user_tokens t WHERE t.user_id = u.id AND t.revoked_at IS NULL
                  AND (t.expires_at IS NULL OR t.expires_at > now())) AS active_tokens
        FROM users u LEFT JOIN users s ON s.id = u.supervisor_id
        WHERE $1 OR u.disabled_at IS NULL
        ORDER BY u.name
        """,
        include_disabled,
    )
    return [User(**dict(r)) for r in rows]


async def set_supervisor(db: Any, name: str, supervisor: str | None) -> None:
    user_id = await _user_id(db, name)
    sup = await _supervisor_id(db, supervisor) if supervisor else None
    try:
        await db.execute("UPDATE users SET supervisor_id = $2 WHERE id = $1", user_id, sup)
    except (asyncpg.IntegrityConstraintViolationError, asyncpg.CheckViolationError):
        raise PeopleError(f"{supervisor!r} reports to {name!r} already: that would make a loop") from None


async def disable_user(db: Any, name: str) -> int:
    """Disable the user and revoke their tokens; returns how many tokens were revoked."""
    user_id = await _user_id(db, name)
    await db.execute("UPDATE users SET disabled_at = now() WHERE id = $1 AND disabled_at IS NULL", user_id)
    return await _revoke(db, user_id)


async def issue_token(db: Any, name: str, *, days: int | None = None) -> str:
    """A new token for the user; only its digest is stored, so this is the one chance to see it."""
    row = await db.fetchrow("SELECT id, disabled_at FROM users WHERE name = $1", name)
    if row is None:
        raise PeopleError(f"no user named {name!r}; see `callrec users list`")
    if row["disabled_at"] is not None:
        raise PeopleError(f"{name!r} is disabled")
    token = new_token()
    await db.execute(
        "INSERT INTO user_tokens (user_id, token_sha256, expires_at)"
        " VALUES ($1, $2, now() + make_interval(days => $3))",
        row["id"],
        token_digest(token),
        days,
    )
    return token


async def revoke_tokens(db: Any, name: str) -> int:
    return await _revoke(db, await _user_id(db, name))


async def _revoke(db: Any, user_id: int) -> int:
    status = await db.execute(
        "UPDATE user_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", user_id
    )
    return int(status.split()[-1])


async def authenticate(db: Any, token: str) -> Principal | None:
    """The active user holding this token, or ``None`` (unknown, revoked, expired, disabled)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > _TOKEN_MAX:
        return None
    row = await db.fetchrow(
        """
        SELECT u.id, u.name, u.role, u.agent_id
        FROM user_tokens t JOIN users u ON u.id = t.user_id
        WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL
          AND (t.expires_at IS NULL OR t.expires_at > now()) AND u.disabled_at IS NULL
        """,
        token_digest(token),
    )
    if row is None:
        return None
    return Principal(int(row["id"]), row["name"], cast(Role, row["role"]), row["agent_id"])


async def team_agent_ids(db: Any, user_id: int) -> frozenset[str]:
    """Agent ids of the user and of all their direct and indirect subordinates.

    Disabled subordinates count: a supervisor still hears a former team member's calls.
    """
    rows = await db.fetch(
        """
        WITH RECURSIVE team (id, agent_id) AS (
            SELECT id, agent_id FROM users WHERE id = $1
            UNION
            SELECT u.id, u.agent_id FROM users u JOIN team ON u.supervisor_id = team.id
        )
        SELECT agent_id FROM team WHERE agent_id IS NOT NULL
        """,
        user_id,
    )
    return frozenset(r["agent_id"] for r in rows)


# --- `callrec users` ---------------------------------------------------------------------------


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``callrec users ...`` and ``callrec audit``."""
    users = sub.add_parser("users", help="Manage who may reach recordings.", description="Manage users.")
    verbs = users.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help: str, handler: Any) -> argparse.ArgumentParser:
        cmd: argparse.ArgumentParser = verbs.add_parser(name, help=help, description=help, parents=[common])
        cmd.set_defaults(handler=lambda settings, args: _cli(settings, handler, args))
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
    audit.add_commands(sub, common)


def _cli(settings: Settings, handler: Any, args: argparse.Namespace) -> int:
    try:
        return int(asyncio.run(_with_pool(settings, handler, args)))
    except PeopleError as exc:
        print(f"callrec: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresConnectionError) as exc:
        print(f"callrec: database: {exc}", file=sys.stderr)
        return 3


async def _with_pool(settings: Settings, handler: Any, args: argparse.Namespace) -> int:
    pool = await asyncpg.create_pool(settings.database_dsn, min_size=1, max_size=1, timeout=10)
    try:
        return int(await handler(pool, args))
    finally:
        await pool.close()


async def _cmd_add(pool: Any, args: argparse.Namespace) -> int:
    await add_user(pool, args.name, args.role, supervisor=args.supervisor, agent_id=args.agent_id)
    detail = {"name": args.name, "role": args.role, "supervisor": args.supervisor, "agent_id": args.agent_id}
    await audit.write(pool, audit.cli_entry("user_add", detail))
    print(f"added {args.name} ({args.role})")
    return 0


async def _cmd_list(pool: Any, args: argparse.Namespace) -> int:
    rows = await list_users(pool, include_disabled=args.all)
    header = ("name", "role", "supervisor", "agent_id", "tokens", "status")
    table = [header] + [
        (
            u.name,
            u.role,
            u.supervisor or "-",
            u.agent_id or "-",
            str(u.active_tokens),
            f"disabled {u.disabled_at:%Y-%m-%d}" if u.disabled_at else "active",
        )
        for u in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


async def _cmd_set_supervisor(pool: Any, args: argparse.Namespace) -> int:
    await set_supervisor(pool, args.name, args.supervisor)
    detail = {"name": args.name, "supervisor": args.supervisor}
    await audit.write(pool, audit.cli_entry("user_set_supervisor", detail))
    print(f"{args.name}: supervisor {args.supervisor or 'cleared'}")
    return 0


async def _cmd_disable(pool: Any, args: argparse.Namespace) -> int:
    revoked = await disable_user(pool, args.name)
    await audit.write(pool, audit.cli_entry("user_disable", {"name": args.name, "tokens_revoked": revoked}))
    print(f"disabled {args.name}; {revoked} token(s) revoked")
    return 0


async def _cmd_token(pool: Any, args: argparse.Namespace) -> int:
    if args.days is not None and not 1 <= args.days <= 3650:
        raise PeopleError("--days: expected 1 to 3650")
    token = await issue_token(pool, args.name, days=args.days)
    await audit.write(pool, audit.cli_entry("token_issue", {"name": args.name, "days": args.days}))
    # Only the token on stdout, so `callrec users token alice > file` captures just it.
    print(token)
    print(f"callrec: this token for {args.name} is shown once; only its hash is stored", file=sys.stderr)
    return 0


async def _cmd_revoke(pool: Any, args: argparse.Namespace) -> int:
    revoked = await revoke_tokens(pool, args.name)
    await audit.write(pool, audit.cli_entry("token_revoke", {"name": args.name, "tokens_revoked": revoked}))
    print(f"{args.name}: {revoked} token(s) revoked")
    return 0
