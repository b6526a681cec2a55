"""The people who may reach recordings, and their API tokens (``callrec users`` is access/cli.py).

Every SQL statement about users and tokens lives here. A recording belongs to an agent
through ``recordings.agent_name = users.agent_id``: the value the dialplan sets in
CALLREC_AGENT, mapped to exactly one person (docs/api.md, "The agent link").
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast, get_args

import asyncpg

from callrec.db.pool import Db, Row
from callrec.web.settings import LANGUAGES, zone_or_none

Role = Literal["agent", "supervisor", "admin", "dpo"]
ROLES: tuple[Role, ...] = get_args(Role)
SignIn = Literal["password", "directory"]
SIGN_INS: tuple[SignIn, ...] = get_args(SignIn)
# Recognisable by secret scanners, and cheap to refuse before any database lookup.
TOKEN_PREFIX = "callrec_"
_TOKEN_MAX = 100


class PeopleError(Exception):
    """A user-management request that cannot be done, phrased as one line for the operator."""


class BadValue(PeopleError):
    """A value that can never be right (a zone that does not exist), whatever the database holds."""


@dataclass(frozen=True, slots=True)
class Profile:
    """How the page shows a person and how they sign in; a ``None`` field: leave it as it is,
    and "" (``set_profile``): clear it back to the default."""

    display_name: str | None = None
    time_zone: str | None = None
    language: str | None = None
    sign_in: SignIn | None = None

    def checked(self) -> Profile:
        """This profile with a display name trimmed; ``BadValue`` names the first bad field."""
        name = self.display_name
        if name is not None:
            name = " ".join(name.split()) if name.strip() else ""
            if len(name) > 120 or any(unicodedata.category(c) in ("Cc", "Cs", "Co") for c in name):
                raise BadValue("display name: 1 to 120 characters of any script, no control characters")
        if self.time_zone and zone_or_none(self.time_zone) is None:
            raise BadValue(f"time zone {self.time_zone!r}: use an IANA name such as Europe/Helsinki")
        if self.language and self.language not in LANGUAGES:
            raise BadValue(f"language {self.language!r}: expected one of {', '.join(LANGUAGES)}")
        if self.sign_in is not None and self.sign_in not in SIGN_INS:
            raise BadValue(f"sign-in {self.sign_in!r}: expected one of {', '.join(SIGN_INS)}")
        return Profile(name, self.time_zone, self.language, self.sign_in)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated person, as the access policy sees them."""

    user_id: int
    name: str
    role: Role
    agent_id: str | None
    display_name: str | None = None
    """As the page shows them, in any script; ``None``: the login name."""
    time_zone: str | None = None
    """An IANA zone the page shows and reads times in; ``None``: ``[web] time_zone``."""
    language: str | None = None
    """en, fi or sv; ``None``: the browser's choice (web/render.py)."""

    @property
    def shown_name(self) -> str:
        return self.display_name or self.name


@dataclass(frozen=True, slots=True)
class User:
    """One row of the directory, for listing."""

    name: str
    role: Role
    supervisor: str | None
    agent_id: str | None
    disabled_at: datetime | None
    active_tokens: int
    display_name: str | None = None
    sign_in: SignIn = "password"
    has_password: bool = False


PRINCIPAL_COLUMNS = "u.id, u.name, u.role, u.agent_id, u.display_name, u.time_zone, u.language"
"""What ``principal_of`` reads, from ``users u``."""


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def _user_id(db: Db, name: str) -> int:
    user_id = await db.fetchval("SELECT id FROM users WHERE name = $1", name)
    if user_id is None:
        raise PeopleError(f"no user named {name!r}; see `callrec users list`")
    return int(user_id)


async def _supervisor_id(db: Db, name: str) -> int:
    row = await db.fetchrow("SELECT id, role, disabled_at FROM users WHERE name = $1", name)
    if row is None:
        raise PeopleError(f"no user named {name!r} to be the supervisor")
    if row["role"] != "supervisor":
        raise PeopleError(f"{name!r} has role {row['role']}; a supervisor must have role supervisor")
    if row["disabled_at"] is not None:
        raise PeopleError(f"{name!r} is disabled and cannot be anyone's supervisor")
    return int(row["id"])


async def add_user(
    db: Db,
    name: str,
    role: Role,
    *,
    supervisor: str | None = None,
    agent_id: str | None = None,
    profile: Profile = Profile(),
) -> int:
    """Create a user. An agent without ``agent_id`` is linked by their name."""
    profile = profile.checked()
    if role not in ROLES:
        raise PeopleError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    if agent_id is None and role == "agent":
        agent_id = name
    if agent_id is not None and role in ("admin", "dpo"):
        raise PeopleError(f"role {role} takes no calls; drop --agent-id")
    sup = await _supervisor_id(db, supervisor) if supervisor else None
    try:
        user_id = await db.fetchval(
            "INSERT INTO users (name, role, supervisor_id, agent_id, display_name, time_zone, language,"
            " sign_in) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            name,
            role,
            sup,
            agent_id,
            profile.display_name or None,
            profile.time_zone or None,
            profile.language or None,
            profile.sign_in or "password",
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


async def list_users(db: Db, *, include_disabled: bool = False) -> list[User]:
    rows = await db.fetch(
        """
        SELECT u.name, u.role, s.name AS supervisor, u.agent_id, u.disabled_at,
               (SELECT count(*) FROM user_tokens t WHERE t.user_id = u.id AND t.revoked_at IS NULL
                  AND (t.expires_at IS NULL OR t.expires_at > now())) AS active_tokens,
               u.display_name, u.sign_in, u.password_hash IS NOT NULL AS has_password
        FROM users u LEFT JOIN users s ON s.id = u.supervisor_id
        WHERE $1 OR u.disabled_at IS NULL
        ORDER BY u.name
        """,
        include_disabled,
    )
    return [User(**dict(r)) for r in rows]


async def set_supervisor(db: Db, name: str, supervisor: str | None) -> None:
    user_id = await _user_id(db, name)
    sup = await _supervisor_id(db, supervisor) if supervisor else None
    try:
        await db.execute("UPDATE users SET supervisor_id = $2 WHERE id = $1", user_id, sup)
    except (asyncpg.IntegrityConstraintViolationError, asyncpg.CheckViolationError):
        raise PeopleError(f"{supervisor!r} reports to {name!r} already: that would make a loop") from None


async def set_profile(db: Db, name: str, profile: Profile) -> int:
    """Change what ``profile`` names (a "" clears it); how many web sessions that ended: a
    change of sign-in method ends the sessions opened the old way, and forgets the password
    of someone who now signs in through the directory."""
    profile = profile.checked()
    user_id = await _user_id(db, name)
    clear = {f: getattr(profile, f) == "" for f in ("display_name", "time_zone", "language")}
    ended = await db.fetch(
        """
        WITH old AS (SELECT id, sign_in FROM users WHERE id = $1 FOR UPDATE),
        changed AS (
            UPDATE users u SET
              display_name = CASE WHEN $2 THEN NULL ELSE coalesce($3, u.display_name) END,
              time_zone = CASE WHEN $4 THEN NULL ELSE coalesce($5, u.time_zone) END,
              language = CASE WHEN $6 THEN NULL ELSE coalesce($7, u.language) END,
              sign_in = coalesce($8, u.sign_in),
              password_hash = CASE WHEN coalesce($8, u.sign_in) = 'directory' THEN NULL
                                   ELSE u.password_hash END
            FROM old WHERE u.id = old.id
            RETURNING old.sign_in AS before, u.sign_in AS after
        )
        UPDATE web_sessions s SET revoked_at = now() FROM changed
        WHERE changed.before <> changed.after AND s.user_id = $1 AND s.method = changed.before
          AND s.revoked_at IS NULL
        RETURNING s.id
        """,
        user_id,
        clear["display_name"],
        profile.display_name or None,
        clear["time_zone"],
        profile.time_zone or None,
        clear["language"],
        profile.language or None,
        profile.sign_in,
    )
    return len(ended)


async def disable_user(db: Db, name: str) -> int:
    """Disable the user and revoke their tokens; returns how many tokens were revoked."""
    user_id = await _user_id(db, name)
    await db.execute("UPDATE users SET disabled_at = now() WHERE id = $1 AND disabled_at IS NULL", user_id)
    return await _revoke(db, user_id)


async def issue_token(db: Db, name: str, *, days: int | None = None) -> str:
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


async def revoke_tokens(db: Db, name: str) -> int:
    return await _revoke(db, await _user_id(db, name))


async def _revoke(db: Db, user_id: int) -> int:
    status = await db.execute(
        "UPDATE user_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", user_id
    )
    return int(status.split()[-1])


async def authenticate(db: Db, token: str) -> Principal | None:
    """The active user holding this token, or ``None`` (unknown, revoked, expired, disabled)."""
    # A token is ASCII; anything else (invalid UTF-8 arrives as surrogates) is simply unknown.
    if not token.startswith(TOKEN_PREFIX) or len(token) > _TOKEN_MAX or not token.isascii():
        return None
    row = await db.fetchrow(
        f"""
        SELECT {PRINCIPAL_COLUMNS}
        FROM user_tokens t JOIN users u ON u.id = t.user_id
        WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL
          AND (t.expires_at IS NULL OR t.expires_at > now()) AND u.disabled_at IS NULL
        """,
        token_digest(token),
    )
    return None if row is None else principal_of(row)


def principal_of(row: Row) -> Principal:
    return Principal(
        int(row["id"]),
        row["name"],
        cast(Role, row["role"]),
        row["agent_id"],
        row["display_name"],
        row["time_zone"],
        row["language"],
    )


async def team_agent_ids(db: Db, user_id: int) -> frozenset[str]:
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


async def agents_in_reach(db: Db, agent_ids: frozenset[str] | None) -> list[tuple[str, str]]:
    """(agent id, shown name) of the people whose calls ``agent_ids`` reaches (``None``: all),
    by shown name: what a supervisor picks from when searching for a team member's calls."""
    rows = await db.fetch(
        """
        SELECT agent_id, coalesce(display_name, name) AS shown FROM users
        WHERE agent_id IS NOT NULL AND ($1::text[] IS NULL OR agent_id = ANY($1::text[]))
        ORDER BY lower(coalesce(display_name, name)), agent_id
        """,
        None if agent_ids is None else sorted(agent_ids),
    )
    return [(r["agent_id"], r["shown"]) for r in rows]


async def set_language(db: Db, user_id: int, language: str) -> None:
    """The language picked on the page, kept for the person's next visit (web/site.py)."""
    await db.execute("UPDATE users SET language = $2 WHERE id = $1", user_id, language)


async def shown_names(db: Db, agent_ids: Sequence[str]) -> dict[str, str]:
    """Agent id -> the shown name of the user it belongs to, for the ids that have one."""
    rows = await db.fetch(
        "SELECT agent_id, coalesce(display_name, name) AS shown FROM users WHERE agent_id = ANY($1::text[])",
        list(agent_ids),
    )
    return {r["agent_id"]: r["shown"] for r in rows}
