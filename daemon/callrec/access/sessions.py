"""Web sign-in sessions (docs/api.md#web-sessions): the page's cookie holds a random session
id, never the API token. Only the id's SHA-256 is stored (like tokens: 256 random bits, so a
plain hash suffices). A session ends at its lifetime, after the idle timeout without a
request, at sign-out, or when its person is disabled. One opened with a token also ends when
that token is revoked or expires; one opened with a password, when the password is changed
(access/passwords.py). The method is kept with the session (sql/011_sign_in.sql)."""

from __future__ import annotations

import secrets
from typing import Literal

from callrec.access.people import PRINCIPAL_COLUMNS, Principal, principal_of, token_digest
from callrec.db.pool import Db

SESSION_PREFIX = "cs_"
_MAX = 100

Method = Literal["token", "password", "directory"]


def _digest(session_id: str) -> bytes | None:
    if not session_id.startswith(SESSION_PREFIX) or len(session_id) > _MAX or not session_id.isascii():
        return None
    return token_digest(session_id)


async def open_session(db: Db, token: str, lifetime: float) -> str | None:
    """A new session for the holder of ``token`` (if it is valid now), or ``None``."""
    if not token.isascii():
        return None
    session_id = _new_id()
    opened = await db.fetchval(
        """
        INSERT INTO web_sessions (user_id, token_id, session_sha256, expires_at)
        SELECT t.user_id, t.id, $2, now() + $3 * interval '1 second'
        FROM user_tokens t JOIN users u ON u.id = t.user_id
        WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL
          AND (t.expires_at IS NULL OR t.expires_at > now()) AND u.disabled_at IS NULL
        RETURNING id
        """,
        token_digest(token),
        token_digest(session_id),
        lifetime,
    )
    return session_id if opened is not None else None


async def open_person_session(db: Db, user_id: int, method: Method, lifetime: float) -> str:
    """A new session for a person whose password (or directory bind) was just checked."""
    session_id = _new_id()
    await db.execute(
        "INSERT INTO web_sessions (user_id, method, session_sha256, expires_at)"
        " VALUES ($1, $2, $3, now() + $4 * interval '1 second')",
        user_id,
        method,
        token_digest(session_id),
        lifetime,
    )
    return session_id


def _new_id() -> str:
    return SESSION_PREFIX + secrets.token_urlsafe(32)


async def authenticate(db: Db, session_id: str, idle_timeout: float) -> Principal | None:
    """The person of a live session, which this use keeps alive; ``None`` for anything else."""
    digest = _digest(session_id)
    if digest is None:
        return None
    row = await db.fetchrow(
        f"""
        UPDATE web_sessions s SET last_seen_at = now()
        FROM users u
        WHERE s.session_sha256 = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
          AND s.last_seen_at > now() - $2 * interval '1 second'
          AND u.id = s.user_id AND u.disabled_at IS NULL
          AND (s.token_id IS NULL OR EXISTS (
                SELECT 1 FROM user_tokens t WHERE t.id = s.token_id AND t.revoked_at IS NULL
                  AND (t.expires_at IS NULL OR t.expires_at > now())))
        RETURNING {PRINCIPAL_COLUMNS}
        """,
        digest,
        idle_timeout,
    )
    return None if row is None else principal_of(row)


async def close_session(db: Db, session_id: str) -> bool:
    """Sign-out: the session can never be used again. False if it was not live."""
    digest = _digest(session_id)
    if digest is None:
        return False
    done = await db.fetchval(
        "UPDATE web_sessions SET revoked_at = now() WHERE session_sha256 = $1 AND revoked_at IS NULL"
        " RETURNING id",
        digest,
    )
    return done is not None
