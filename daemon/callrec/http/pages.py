"""The web page at /: sign in with a token, search, play; the DPO's data-subject search and
export. Server-rendered HTML without any script; the audio element seeks through HTTP Range
on the API. Every page goes through the same middleware as the API: one audit row each.

Signing in with a token opens a server-side session (access/sessions.py); its random id goes
in an HttpOnly, SameSite=Strict cookie (Secure behind HTTPS), so the audio element's own
requests carry it. The token itself never goes in a cookie. State-changing forms are checked
as same-origin.
The templates (templates/*.html) are Jinja2 with autoescaping on: every value a page shows
is escaped by the template engine, none by hand.
"""

from __future__ import annotations

import functools
from datetime import datetime
from importlib.resources import files
from typing import Any

import jinja2
from aiohttp import web

from callrec.access import policy as access
from callrec.access import sessions
from callrec.access.people import Principal
from callrec.access.policy import Action
from callrec.http import core
from callrec.http import middleware as serving
from callrec.http.middleware import recording_id
from callrec.recording.facts import Recording

_CSS = files(__package__).joinpath("templates/style.css").read_bytes()


def when(value: datetime) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _local_input(value: datetime | None) -> str:
    """The value of a datetime-local field: server time, no offset, as a person types it."""
    return value.astimezone().strftime("%Y-%m-%dT%H:%M") if value else ""


def _fact(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return when(value) if isinstance(value, datetime) else str(value)


def _iso_when(value: str) -> str:
    """A time of the agents list (ISO 8601, recording/facts.py AgentStint) as ``when`` shows it."""
    return when(datetime.fromisoformat(value))


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("callrec.http", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATES.filters.update(when=when, local_input=_local_input, fact=_fact, iso_when=_iso_when)


def add_routes(app: web.Application) -> None:
    add = functools.partial(serving.add_route, app)
    add("GET", "/", _index, "page", public=True, html=True)
    add("POST", "/signin", _sign_in, "sign_in", public=True, html=True)
    add("POST", "/signout", _sign_out, "sign_out", public=True, html=True)
    add("GET", "/recordings/{id}", _recording, "view", html=True)
    add("GET", "/dsar", _dsar_form, "page", html=True)
    add("POST", "/dsar", _dsar, "dsar_search", html=True)
    add("POST", "/export", _export, "export", html=True)
    app.router.add_get("/static/style.css", _css)
    app[serving.ERROR_PAGE] = _error_page


async def _css(request: web.Request) -> web.StreamResponse:
    return web.Response(body=_CSS, content_type="text/css", headers={"Cache-Control": "max-age=3600"})


def page(
    template: str, title: str, who: Principal | None, *, status: int = 200, **values: Any
) -> web.Response:
    text = _TEMPLATES.get_template(template).render(
        title=title,
        who=who,
        may_dsar=who is not None and access.allowed(who.role, Action.DSAR_SEARCH),
        tz=datetime.now().astimezone().strftime("%z"),
        **values,
    )
    return web.Response(text=text, status=status, content_type="text/html")


def _sign_in_page(message: str = "", *, status: int = 200) -> web.Response:
    return page("sign_in.html", "Sign in", None, status=status, message=message)


def _error_page(request: web.Request, status: int, message: str) -> web.Response:
    if status == 401:
        return _sign_in_page(message, status=401)
    return page("error.html", f"{status}", request.get(serving.PRINCIPAL), status=status, message=message)


async def _index(request: web.Request) -> web.StreamResponse:
    who = request[serving.PRINCIPAL]
    if who is None:
        resp = _sign_in_page()
        if serving.COOKIE in request.cookies:  # revoked or expired: forget it
            resp.del_cookie(serving.COOKIE, path="/")
        return resp
    if "run" not in request.query:
        return _search_page(request, who, access.Filters(), None)
    request[serving.ENTRY].action = Action.SEARCH.value
    # The form sends no offset: a page shows the first results only.
    found = await core.search(serving.pool(request), who, request.query)
    request[serving.ENTRY].detail.update(found.audit)
    return _search_page(request, who, found.filters, found.recordings)


def _search_page(
    request: web.Request, who: Principal, filters: access.Filters, found: list[Recording] | None
) -> web.Response:
    return page(
        "search.html",
        "Recordings",
        who,
        filters=filters,
        found=found,
        registers=sorted(serving.settings(request).registers),
        full=access.VIEWS[who.role] == "full",
    )


async def _recording(request: web.Request) -> web.StreamResponse:
    who = serving.principal(request)
    rec = await core.view(serving.pool(request), who, recording_id(request))
    facts = access.as_json(rec, who.role)
    audio_url = facts.pop("audio_url", None)
    return page("recording.html", f"Recording {when(rec.started_at)}", who, facts=facts, audio_url=audio_url)


async def _sign_in(request: web.Request) -> web.StreamResponse:
    """The token opens a server-side session; the cookie holds only the session's id."""
    form = await request.post()
    token = str(form.get("token", "")).strip()
    settings = serving.settings(request)
    session_id = await sessions.open_session(serving.pool(request), token, settings.session_lifetime)
    who = await serving.session_principal(request, session_id) if session_id else None
    if session_id is None or who is None:
        return _sign_in_page("That token is unknown, revoked or expired.", status=401)
    entry = request[serving.ENTRY]
    entry.user_id, entry.user_name, entry.role = who.user_id, who.name, who.role
    resp = web.Response(status=303, headers={"Location": "/"})
    secure = request.secure or request.headers.get("X-Forwarded-Proto") == "https"
    # No Max-Age: the browser forgets it when closed; the server ends it anyway (lifetime,
    # idle timeout, sign-out). HttpOnly: no script can read it.
    resp.set_cookie(serving.COOKIE, session_id, path="/", httponly=True, samesite="Strict", secure=secure)
    return resp


async def _sign_out(request: web.Request) -> web.StreamResponse:
    session_id = request.cookies.get(serving.COOKIE)
    if session_id:
        await sessions.close_session(serving.pool(request), session_id)
    resp = web.Response(status=303, headers={"Location": "/"})
    resp.del_cookie(serving.COOKIE, path="/")
    return resp


_DSAR_TITLE = "Data-subject request"


async def _dsar_form(request: web.Request) -> web.StreamResponse:
    who = serving.principal(request)
    await access.grant(serving.pool(request), who, Action.DSAR_SEARCH)
    return page("dsar.html", _DSAR_TITLE, who, at=None, window_minutes=30, result=None, case_reference="")


async def _dsar(request: web.Request) -> web.StreamResponse:
    who = serving.principal(request)
    key = serving.settings(request).number_hmac_key
    per_hour = serving.settings(request).dsar_searches_per_hour
    write = serving.audit_in_transaction(request)
    found = await core.dsar_search(
        serving.pool(request), who, key, request.post, per_hour=per_hour, audit=write
    )
    return page(
        "dsar.html",
        _DSAR_TITLE,
        who,
        at=found.at,
        window_minutes=found.window_minutes,
        result=found.result,
        case_reference=found.audit["case_reference"],
    )


async def _export(request: web.Request) -> web.StreamResponse:
    async def read() -> core.Fields:
        form = await request.post()
        # One checkbox per recording, each named recording_id; the API takes a list.
        return {"recording_ids": form.getall("recording_id", [])} | {
            name: form.get(name) for name in ("recipient", "legal_basis", "case_reference")
        }

    exported = await core.export(request, serving.principal(request), read)
    return await core.send_export(request, exported)
