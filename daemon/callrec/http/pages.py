"""The web page at /: sign in with a token, search, play; the DPO's data-subject search and
export. Server-rendered HTML without any script; the audio element seeks through HTTP Range
on the API. Every page goes through the same middleware as the API: one audit row each.

Signing in puts the token in an HttpOnly, SameSite=Strict cookie (Secure behind HTTPS), so
the audio element's own requests carry it; state-changing forms are checked as same-origin.
"""

from __future__ import annotations

import functools
import html
import string
from datetime import datetime
from importlib.resources import files

from aiohttp import web

from callrec.access import dsar, exports, people
from callrec.access import policy as access
from callrec.access.people import Principal
from callrec.access.policy import Action, Recording
from callrec.http import middleware as serving
from callrec.http.middleware import BadParam, int_param, recording_id, time_param

_LAYOUT = string.Template(files(__package__).joinpath("templates/layout.html").read_text(encoding="utf-8"))
_CSS = files(__package__).joinpath("templates/style.css").read_bytes()


def e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


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


def page(title: str, body: str, who: Principal | None, *, status: int = 200) -> web.Response:
    nav = ""
    if who is not None:
        nav = ' <a href="/">Recordings</a>'
        if access.allowed(who.role, Action.DSAR_SEARCH):
            nav += ' <a href="/dsar">Data-subject request</a>'
        nav += (
            f' <form method="post" action="/signout"><span>{e(who.name)} ({e(who.role)})</span>'
            ' <button type="submit">Sign out</button></form>'
        )
    text = _LAYOUT.substitute(
        title=e(title), nav=nav, body=body, tz=datetime.now().astimezone().strftime("%z")
    )
    return web.Response(text=text, status=status, content_type="text/html")


def _error_page(request: web.Request, status: int, message: str) -> web.Response:
    who = request.get(serving.PRINCIPAL)
    if status == 401:
        return page("Sign in", _sign_in_form(message), None, status=401)
    return page(
        f"{status}", f'<p class="error">{e(message)}</p><p><a href="/">Back</a></p>', who, status=status
    )


def _sign_in_form(message: str = "") -> str:
    error = f'<p class="error">{e(message)}</p>' if message else ""
    return (
        f"{error}<form class=fields method=post action=/signin>"
        "<label>Your token<input type=password name=token autocomplete=off required size=50></label>"
        "<button type=submit>Sign in</button></form>"
        '<p class="note">Ask an administrator for a token (<code>callrec users token NAME</code>).</p>'
    )


def when(value: datetime) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _local_input(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%dT%H:%M") if value else ""


async def _index(request: web.Request) -> web.StreamResponse:
    who = request[serving.PRINCIPAL]
    if who is None:
        resp = page("Sign in", _sign_in_form(), None)
        if serving.COOKIE in request.cookies:  # revoked or expired: forget it
            resp.del_cookie(serving.COOKIE, path="/")
        return resp
    if "run" not in request.query:
        return page("Recordings", _search_form(request, who, access.Filters()), who)
    q = request.query
    request[serving.ENTRY].action = Action.SEARCH.value
    filters = serving.search_filters(q)
    limit = int_param(q.get("limit"), "limit", 100, 1, 1000)
    g = await access.grant(serving.pool(request), who, Action.SEARCH)
    found = await access.search(serving.pool(request), g, filters, limit=limit)
    request[serving.ENTRY].detail.update(filters.detail() | {"count": len(found)})
    body = _search_form(request, who, filters) + _results(who, found)
    return page("Recordings", body, who)


def _search_form(request: web.Request, who: Principal, f: access.Filters) -> str:
    registers = sorted(serving.settings(request).registers)
    options = '<option value="">all</option>' + "".join(
        f"<option{' selected' if r == f.register else ''}>{e(r)}</option>" for r in registers
    )
    agent = ""
    if access.VIEWS[who.role] == "full":
        agent = f'<label>Agent<input name=agent value="{e(f.agent)}" size=12></label>'
    return (
        '<form class=fields method=get action="/"><input type=hidden name=run value=1>'
        f'<label>From<input type=datetime-local name=from value="{_local_input(f.since)}"></label>'
        f'<label>To<input type=datetime-local name=to value="{_local_input(f.until)}"></label>'
        f"<label>Register<select name=register>{options}</select></label>{agent}"
        "<button type=submit>Search</button></form>"
    )


def _results(who: Principal, found: list[Recording]) -> str:
    if not found:
        return '<p class="note">No recordings found.</p>'
    full = access.VIEWS[who.role] == "full"
    head = "<th>Started</th><th>Seconds</th><th>Register</th><th>Direction</th>"
    head += "<th>Customer</th><th>Agent</th>" if full else "<th>Node</th><th>Size</th>"
    rows = []
    for r in found:
        cells = f"<td>{when(r.started_at)}</td><td>{r.duration_seconds:.0f}</td><td>{e(r.register_name)}</td>"
        cells += f"<td>{e(r.direction)}</td>"
        if full:
            cells += f"<td>{e(r.customer_number_masked)}</td><td>{e(r.agent_user or r.agent_name)}</td>"
        else:
            cells += f"<td>{e(r.node)}</td><td>{r.file_size}</td>"
        rows.append(f'<tr>{cells}<td><a href="/recordings/{r.id}">open</a></td></tr>')
    return f"<table><thead><tr>{head}<th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>"


async def _recording(request: web.Request) -> web.StreamResponse:
    who = serving.principal(request)
    g = await access.grant(serving.pool(request), who, Action.VIEW)
    rec = await access.get(serving.pool(request), g, recording_id(request))
    body = ""
    if access.allowed(who.role, Action.PLAY):
        url = f"/api/recordings/{rec.id}/audio"
        body += f'<audio controls preload="metadata" src="{url}"></audio>'
        body += f'<p><a href="{url}?download=1">Download</a></p>'
    facts = rec.to_json(who.role)
    facts.pop("audio_url", None)
    body += "<dl>" + "".join(
        f"<dt>{e(k.replace('_', ' '))}</dt><dd>{_fact(v)}</dd>" for k, v in facts.items()
    )
    body += "</dl>"
    return page(f"Recording {when(rec.started_at)}", body, who)


def _fact(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return e(when(value) if isinstance(value, datetime) else value)


async def _sign_in(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    token = str(form.get("token", "")).strip()
    who = await people.authenticate(serving.pool(request), token) if token else None
    if who is None:
        return page("Sign in", _sign_in_form("That token is unknown, revoked or expired."), None, status=401)
    entry = request[serving.ENTRY]
    entry.user_id, entry.user_name, entry.role = who.user_id, who.name, who.role
    resp = web.Response(status=303, headers={"Location": "/"})
    secure = request.secure or request.headers.get("X-Forwarded-Proto") == "https"
    # No Max-Age: the browser forgets it when closed. HttpOnly: no script can read it.
    resp.set_cookie(serving.COOKIE, token, path="/", httponly=True, samesite="Strict", secure=secure)
    return resp


async def _sign_out(request: web.Request) -> web.StreamResponse:
    resp = web.Response(status=303, headers={"Location": "/"})
    resp.del_cookie(serving.COOKIE, path="/")
    return resp


async def _dsar_form(request: web.Request) -> web.StreamResponse:
    who = serving.principal(request)
    await access.grant(serving.pool(request), who, Action.DSAR_SEARCH)
    return page("Data-subject request", _dsar_fields(), who)


def _dsar_fields(at: str = "", window: int = 30) -> str:
    return (
        "<form class=fields method=post action=/dsar>"
        "<label>Full phone number<input name=number required autocomplete=off size=18></label>"
        f'<label>Time of the call<input type=datetime-local name=at required value="{e(at)}"></label>'
        f'<label>± minutes<input type=number name=window_minutes min=0 value="{window}" size=5></label>'
        "<button type=submit>Find calls</button></form>"
    )


async def _dsar(request: web.Request) -> web.StreamResponse:
    who = serving.principal(request)
    g = await access.grant(serving.pool(request), who, Action.DSAR_SEARCH)
    form = await request.post()
    at = time_param(form.get("at"), "at")
    if at is None:
        raise BadParam("at: the approximate time of the call")
    window = int_param(form.get("window_minutes"), "window_minutes", 30, 0, dsar.MAX_WINDOW_MINUTES)
    result = await dsar.search_for(request, g, str(form.get("number", "")), at, window)
    match = "exact (keyed HMAC)" if result.exact_matching else "masked number only"
    body = _dsar_fields(_local_input(at), window)
    body += f"<p>Masked number <strong>{e(result.masked)}</strong>; matching: {match}.</p>"
    if not result.candidates:
        return page("Data-subject request", body + '<p class="note">No calls found.</p>', who)
    rows = "".join(
        f'<tr><td><input type=checkbox name=recording_id value="{c.recording.id}" checked></td>'
        f"<td>{when(c.recording.started_at)}</td><td>{c.recording.duration_seconds:.0f}</td>"
        f"<td>{e(c.recording.register_name)}</td><td>{e(c.match)}</td>"
        f'<td><a href="/recordings/{c.recording.id}">open</a></td></tr>'
        for c in result.candidates
    )
    body += (
        "<form method=post action=/export><table><thead><tr><th></th><th>Started</th><th>Seconds</th>"
        f"<th>Register</th><th>Match</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
        "<div class=fields><label>Recipient<input name=recipient required size=24></label>"
        '<label>Legal basis<input name=legal_basis required size=30 value="GDPR Art. 15"></label>'
        "<label>Case reference<input name=case_reference required size=16></label>"
        "<button type=submit>Export zip</button></div></form>"
    )
    return page("Data-subject request", body, who)


async def _export(request: web.Request) -> web.StreamResponse:
    g = await access.grant(serving.pool(request), serving.principal(request), Action.EXPORT)
    form = await request.post()
    ids = exports.parse_ids([str(v) for v in form.getall("recording_id", [])])
    disclosure = exports.Disclosure.parse(
        form.get("recipient"), form.get("legal_basis"), form.get("case_reference")
    )
    return await exports.respond(request, g, ids, disclosure)
