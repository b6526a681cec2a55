"""Passwords for signing in on the page (docs/web.md#signing-in): argon2id with argon2-cffi's
default parameters, hashed and checked in one worker thread (each costs tens to hundreds of
milliseconds of CPU: the event loop keeps serving meanwhile).

Checking costs the same whether or not the person exists, has a password or signs in through
the directory: an unknown name is checked against a dummy hash, so the time taken does not
tell which names exist. A hash made with older parameters is replaced at the next good sign-in.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from callrec.access.people import PRINCIPAL_COLUMNS, PeopleError, Principal, principal_of
from callrec.db.pool import Db, Row

MIN_LENGTH = 10
"""Shorter passwords are refused (NIST SP 800-63B asks for at least 8; the page is for work)."""
MAX_LENGTH = 256
"""Longer ones too: a megabyte of "password" would only cost CPU."""

_HASHER = argon2.PasswordHasher()
# One argon2 computation at a time, beside the event loop: each takes most of a core for tens
# to hundreds of milliseconds, and a burst of sign-ins (or a flood from many addresses) must
# queue here rather than take the CPU that recording calls needs (bench/sign_in.py).
_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="callrec-argon2")
T = TypeVar("T")


async def _off_loop(work: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_WORKER, work, *args)


def check_new(password: str) -> str:
    """``password`` if it may become someone's password; ``PeopleError`` says why not."""
    if "\n" in password or "\r" in password:
        raise PeopleError("the password must be one line")
    if len(password) < MIN_LENGTH:
        raise PeopleError(f"the password must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PeopleError(f"the password must be at most {MAX_LENGTH} characters")
    if not password.isprintable():
        raise PeopleError("the password must not contain control characters")
    return password


async def hash_password(password: str) -> str:
    return await _off_loop(_HASHER.hash, password)


@functools.cache
def _dummy() -> str:
    """A hash no password is checked against for real; made once, with today's parameters."""
    return _HASHER.hash("not anyone's password")


def _matches(stored: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored or _dummy(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def set_password(db: Db, name: str, password: str) -> int:
    """Set the person's password and end the sessions opened with the old one; how many ended."""
    digest = await hash_password(check_new(password))
    row = await db.fetchrow("SELECT id, sign_in, disabled_at FROM users WHERE name = $1", name)
    if row is None:
        raise PeopleError(f"no user named {name!r}; see `callrec users list`")
    if row["sign_in"] != "password":
        raise PeopleError(
            f"{name!r} signs in through the directory; `callrec users set {name} --sign-in password` first"
        )
    if row["disabled_at"] is not None:
        raise PeopleError(f"{name!r} is disabled")
    await db.execute(
        "UPDATE users SET password_hash = $2, password_set_at = now() WHERE id = $1", row["id"], digest
    )
    return await end_sessions(db, int(row["id"]), "password")


async def end_sessions(db: Db, user_id: int, method: str) -> int:
    status = await db.execute(
        "UPDATE web_sessions SET revoked_at = now()"
        " WHERE user_id = $1 AND method = $2 AND revoked_at IS NULL",
        user_id,
        method,
    )
    return int(status.split()[-1])


async def sign_in_row(db: Db, name: str) -> Row | None:
    """The active person named ``name`` with how they sign in, or ``None``."""
    return await db.fetchrow(
        f"SELECT {PRINCIPAL_COLUMNS}, u.sign_in, u.password_hash FROM users u"
        " WHERE u.name = $1 AND u.disabled_at IS NULL",
        name,
    )


async def check_password(db: Db, row: Row | None, password: str) -> Principal | None:
    """The person of ``row`` (``sign_in_row``) if ``password`` is theirs, else ``None``; the
    same work either way."""
    stored: Any = None
    if row is not None and row["sign_in"] == "password":
        stored = row["password_hash"]
    if not await _off_loop(_matches, stored, password):
        return None
    assert row is not None and stored is not None
    if _HASHER.check_needs_rehash(stored):
        # Parameters changed since it was set: store it as today's defaults would.
        await db.execute(
            "UPDATE users SET password_hash = $2 WHERE id = $1 AND password_hash = $3",
            row["id"],
            await hash_password(password),
            stored,
        )
    return principal_of(row)
