"""Signing in and out of the page (docs/web.md#signing-in).

Signing in opens a server-side session (access/sessions.py); its random id goes in an
HttpOnly, SameSite=Strict cookie (Secure behind HTTPS), so the audio element's own requests
carry it. No credential ever goes in a cookie.
"""

from __future__ import annotations

import functools

from aiohttp import web

from callrec.access import sessions
from callrec.access.people import Principal
from callrec.http import middleware as serving
from callrec.web.site import _, page


def add_routes(app: web.Application) -> None:
    add = functools.partial(serving.add_route, app)
    add("POST", "/signin", _sign_in, "sign_in", public=True, html=True)
    add("POST", "/signout", _sign_out, "sign_out", public=True, html=True)


def sign_in_page(request: web.Request, message: str = "", *, status: int = 200) -> web.Response:
    resp = page(request, "sign_in.html", _(request, "Sign in"), status=status, message=message)
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
    token = str(form.get("token", "")).strip()
    settings = serving.settings(request)
    session_id = await sessions.open_session(serving.pool(request), token, settings.session_lifetime)
    who = await serving.session_principal(request, session_id) if session_id else None
    if session_id is None or who is None:
        return sign_in_page(request, _(request, "That token is unknown, revoked or expired."), status=401)
    return open_session_cookie(request, who, session_id)


async def _sign_out(request: web.Request) -> web.StreamResponse:
    session_id = request.cookies.get(serving.COOKIE)
    if session_id:
        await sessions.close_session(serving.pool(request), session_id)
    resp = web.Response(status=303, headers={"Location": "/"})
    resp.del_cookie(serving.COOKIE, path="/")
    return resp
