"""What every page shares: its rendering for the person reading it, the error page, the
stylesheet, the language switch, and the routes of the feature modules (signin.py,
calls.py, dsar.py).

Pages are server-rendered HTML without any script (the Content-Security-Policy says
``script-src 'none'``); the audio element seeks through HTTP Range on the API. Every page
goes through the same middleware as the API (http/middleware.py): one audit row each, and
state-changing forms are checked as same-origin.
"""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import Any

from aiohttp import web

from callrec.access import policy as access
from callrec.access.people import Principal
from callrec.access.policy import Action
from callrec.http import middleware as serving
from callrec.web import render
from callrec.web.settings import LANGUAGES

_CSS = files(__package__).joinpath("templates/style.css").read_bytes()
READER = web.RequestKey("reader", render.Reader)


def add_routes(app: web.Application) -> None:
    from callrec.web import calls, dsar, live, signin  # the feature modules import this one

    add = functools.partial(serving.add_route, app)
    add("POST", "/language", _set_language, "language", public=True, html=True)
    signin.add_routes(app)
    calls.add_routes(app)
    live.add_routes(app)
    dsar.add_routes(app)
    app.router.add_get("/static/style.css", _css)
    app[serving.ERROR_PAGE] = _error_page


def reader(request: web.Request) -> render.Reader:
    """The reader of this request's page, decided once (web/render.py says how)."""
    if READER not in request:
        who = request.get(serving.PRINCIPAL)
        request[READER] = render.reader_of(request, who, serving.settings(request).web)
    return request[READER]


def _(request: web.Request, message: str) -> str:
    """A string of the Python code, in the reader's language."""
    return reader(request).gettext(message)


def N_(message: str) -> str:
    """Marks a string for the catalogues (``make messages``) where it is defined; ``_`` translates
    it where it is shown."""
    return message


def page(
    request: web.Request, template: str, title: str, *, status: int = 200, **values: Any
) -> web.Response:
    who: Principal | None = request.get(serving.PRINCIPAL)
    text = render.render(
        template,
        reader(request),
        title=title,
        who=who,
        may_dsar=who is not None and access.allowed(who.role, Action.DSAR_SEARCH),
        path=request.path_qs,
        **values,
    )
    return web.Response(text=text, status=status, content_type="text/html")


async def _css(request: web.Request) -> web.StreamResponse:
    return web.Response(body=_CSS, content_type="text/css", headers={"Cache-Control": "max-age=3600"})


_PLAIN_ERRORS = {
    400: N_("The request could not be used. Go back and check what you typed."),
    403: N_("This page is not open to your role."),
    404: N_("There is no such page or recording, or it is not yours to see."),
    409: N_("That cannot be done to this recording now (it may be on legal hold)."),
    429: N_("Too many requests for now. Wait a while and try again."),
    503: N_("The service cannot answer just now. Try again in a moment."),
}


def _error_page(request: web.Request, status: int, message: str) -> web.Response:
    """An error in plain words: the API's technical line stays in the log and the JSON API."""
    if status == 401:
        from callrec.web.signin import sign_in_page

        return sign_in_page(request, "", status=401)
    plain = _(request, _PLAIN_ERRORS.get(status, _PLAIN_ERRORS[503]))
    return page(request, "error.html", _(request, "Something went wrong"), status=status, message=plain)


def own_path(target: str, fallback: str = "/") -> str:
    """Where a form sends the person back to: a path of ours only, never another site."""
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else fallback


async def _set_language(request: web.Request) -> web.StreamResponse:
    """The language picked on the page: stored with a signed-in person, in a cookie otherwise."""
    form = await request.post()
    language = str(form.get("language", ""))
    if language not in LANGUAGES:
        raise serving.BadParam(f"language: expected one of {', '.join(LANGUAGES)}")
    back = own_path(str(form.get("back", "/")))
    who = request[serving.PRINCIPAL]
    if who is not None:
        await serving.pool(request).execute(
            "UPDATE users SET language = $2 WHERE id = $1", who.user_id, language
        )
    request[serving.ENTRY].detail["language"] = language
    resp = web.Response(status=303, headers={"Location": back})
    resp.set_cookie(render.LANGUAGE_COOKIE, language, path="/", samesite="Strict", max_age=365 * 86400)
    return resp
