"""An agent's own call in progress, on top of their list: whether it is being recorded, and a
button that pauses the recording while the customer reads out card details, and one that
resumes it (docs/web.md#pausing-for-card-details). The same grant, audit row and mute as
``POST /api/calls/current/pause`` (http/calls.py); the page has no script, so what it shows is
as of its loading.
"""

from __future__ import annotations

import functools

from aiohttp import web

from callrec.http import calls as live_calls
from callrec.http import middleware as serving


def add_routes(app: web.Application) -> None:
    add = functools.partial(serving.add_route, app)
    add("POST", "/calls/current/pause", functools.partial(_set, paused=True), "pause", html=True)
    add("POST", "/calls/current/resume", functools.partial(_set, paused=False), "resume", html=True)


def own_call(request: web.Request) -> dict[str, object] | None:
    """What the list shows of the agent's live call, or ``None``."""
    found = live_calls.own_live_call(request)
    return None if found is None else {"id": found[0], "paused": found[1]}


async def _set(request: web.Request, *, paused: bool) -> web.StreamResponse:
    await live_calls.set_own_pause(request, paused)
    return web.Response(status=303, headers={"Location": "/"})
