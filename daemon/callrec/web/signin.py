"""Signing in and out of the page (docs/web.md#signing-in).

The main way is a username and password: checked against the argon2id hash in the users
table (access/passwords.py) or, for people with ``sign_in = directory``, by a bind to the
``[ldap]`` directory (access/directory.py). An API token still opens a session too, for
people without either. Signing in opens a server-side session (access/sessions.py); its
random id goes in an HttpOnly, SameSite=Strict cookie (Secure behind HTTPS), so the audio
element's own requests carry it. No credential ever goes in a cookie.

A refused sign-in answers 401, so the refused-request throttle (http/throttle.py) counts it;
once a client is over its rate no password is checked at all until its minute ends.
"""

from __future__ import annotations

import functools
import re

import structlog
from aiohttp import web

from callrec.access import directory, passwords, sessions
from callrec.access.people import Principal, principal_of
from callrec.http import middleware as serving
from callrec.web.site import _, page

log = structlog.get_logger("callrec.web")

# A login name as sql/004_access.sql allows it; anything else names no one.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def add_routes(app: web.Application) -> None:
    add = functools.partial(serving.add_route, app)
    add("POST", "/signin", _sign_in, "sign_in", public=True, html=True)
    add("POST", "/signout", _sign_out, "sign_out", public=True, html=True)


def sign_in_page(
    request: web.Request,
    message: str = "",
    *,
    status: int = 200,
    username: str = "",
    token_open: bool = False,
) -> web.Response:
    resp = page(
        request,
        "sign_in.html",
        _(request, "Sign in"),
        status=status,
        message=message,
        username=username,
        token_open=token_open,
    )
    if serving.COOKIE in request.cookies and request.get(serving.PRINCIPAL) is None:
        resp.del_cookie(serving.COOKIE, path="/")  # revoked or expired: forget it
    return resp


def open_session_cookie(request: web.Request, who: Principal, session_id: str) -> web.Response:
    """The answer to a successful sign-in: the session's cookie, and on to the recordings."""
    entry = request[serving.ENTRY]
    entry.user_id, entry.user_name, entry.role = who.user_id, who.name, who.role
    resp = web.Response(status=303, headers={"Location": "/"})
    secure = request.secure or request.headers.get("X-Forwarded-Proto") == "https"
    # No Max-Age: the browser forgets it when closed; the server ends it anyway (lifetime,
    # idle timeout, sign-out). HttpOnly: no script can read it.
    resp.set_cookie(serving.COOKIE, session_id, path="/", httponly=True, samesite="Strict", secure=secure)
    return resp


async def _sign_in(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    if "token" in form:
        return await _with_token(request, str(form.get("token", "")).strip())
    username = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    entry = request[serving.ENTRY]
    if request.app[serving.THROTTLE].over(entry.client or "-"):
        return sign_in_page(request, status=401, username=username)  # the middleware makes it a 429
    db, settings = serving.pool(request), serving.settings(request)
    valid = _NAME.match(username) is not None and len(password) <= passwords.MAX_LENGTH
    row = await passwords.sign_in_row(db, username) if valid else None
    method: sessions.Method = "directory" if row is not None and row["sign_in"] == "directory" else "password"
    entry.detail["method"] = method
    if row is not None:
        entry.detail["user"] = row["name"]  # only a name that exists: never a mistyped password
    who: Principal | None = None
    if method == "directory" and settings.ldap is not None and row is not None:
        outcome = await directory.check(settings.ldap, username, password)
        if outcome == "unreachable":
            message = _(request, "The directory cannot be reached, so no one can sign in with it just now.")
            message += " " + _(request, "Try again in a few minutes; if it lasts, tell an administrator.")
            return sign_in_page(request, message, status=503, username=username)
        who = principal_of(row) if outcome == "ok" else None
    else:
        if method == "directory":
            log.warning("a directory user tried to sign in, but [ldap] is not configured", user=username)
        # Also for a name no one has (a dummy hash): the same work, so the time tells nothing.
        who = await passwords.check_password(db, row if valid else None, password)
    if who is None:
        message = _(request, "That username and password do not match. Check both and try again.")
        return sign_in_page(request, message, status=401, username=username)
    await _end_previous(request)
    session_id = await sessions.open_person_session(db, who.user_id, method, settings.session_lifetime)
    return open_session_cookie(request, who, session_id)


async def _end_previous(request: web.Request) -> None:
    """Signing in again (as anyone) ends the session the browser had: one browser, one session."""
    previous = request.cookies.get(serving.COOKIE)
    if previous:
        await sessions.close_session(serving.pool(request), previous)


async def _with_token(request: web.Request, token: str) -> web.StreamResponse:
    request[serving.ENTRY].detail["method"] = "token"
    settings = serving.settings(request)
    session_id = await sessions.open_session(serving.pool(request), token, settings.session_lifetime)
    who = await serving.session_principal(request, session_id) if session_id else None
    if session_id is None or who is None:
        message = _(request, "That token is unknown, revoked or expired.")
        return sign_in_page(request, message, status=401, token_open=True)
    await _end_previous(request)
    return open_session_cookie(request, who, session_id)


async def _sign_out(request: web.Request) -> web.StreamResponse:
    session_id = request.cookies.get(serving.COOKIE)
    if session_id:
        await sessions.close_session(serving.pool(request), session_id)
    resp = web.Response(status=303, headers={"Location": "/"})
    resp.del_cookie(serving.COOKIE, path="/")
    return resp
