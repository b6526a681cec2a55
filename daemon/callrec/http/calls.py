"""Live calls under /api/calls: pausing and resuming a recording while a card number is read
out (docs/dialplan.md#pause-for-card-numbers, docs/api.md#pausing-a-live-call).

``POST /api/calls/current/pause`` and ``/resume`` act on the signed-in agent's own call now in
progress; ``POST /api/calls/{id}/pause`` and ``/resume`` on the call whose recording has this
id, for a supervisor whose team has an agent on it, or the DPO. The middleware writes the one
audit row of each request, with the recording's id.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from callrec.access import policy as access
from callrec.access.policy import Action
from callrec.http import middleware as serving
from callrec.http.middleware import ApiError, json_response
from callrec.recording.pause import MuteFailed, NotRecording, Pauses
from callrec.recording.tracker import CallTracker


@dataclass(frozen=True)
class LiveCalls:
    """What the API needs of the daemon's live state: who is on which call, and the pauses."""

    tracker: CallTracker
    pauses: Pauses


LIVE: web.AppKey[LiveCalls | None] = web.AppKey("live_calls")
"""None where no daemon runs the recordings (the API served on its own): no call is live."""


def add_routes(app: web.Application, live: LiveCalls | None) -> None:
    app[LIVE] = live
    add = functools.partial(serving.add_route, app)
    # "current" before {id}: the router tries routes in the order they were added.
    add("POST", "/api/calls/current/pause", functools.partial(_current, paused=True), "pause")
    add("POST", "/api/calls/current/resume", functools.partial(_current, paused=False), "resume")
    add("POST", "/api/calls/{id}/pause", functools.partial(_by_id, paused=True), "pause")
    add("POST", "/api/calls/{id}/resume", functools.partial(_by_id, paused=False), "resume")


def _no_call() -> ApiError:
    return ApiError(404, "no_live_call", "no call being recorded within your reach")


def own_live_call(request: web.Request) -> tuple[uuid.UUID, bool] | None:
    """The signed-in agent's call being recorded now, and whether it is paused; ``None``: none."""
    who, live = serving.principal(request), request.app[LIVE]
    rid = live.tracker.live_recording_of_agent(who.agent_id) if live and who.agent_id else None
    return None if rid is None or live is None else (rid, live.pauses.is_paused(rid))


async def set_own_pause(request: web.Request, paused: bool) -> bool:
    """Pause or resume the signed-in agent's own call (API and page alike); True if it changed."""
    who = serving.principal(request)
    await access.grant(serving.pool(request), who, Action.PAUSE if paused else Action.RESUME)
    found = own_live_call(request)
    if found is None:
        raise _no_call()
    return await _change(request, found[0], paused)


async def _current(request: web.Request, *, paused: bool) -> web.StreamResponse:
    changed = await set_own_pause(request, paused)
    return json_response({"id": request[serving.ENTRY].recording_id, "paused": paused, "changed": changed})


async def _by_id(request: web.Request, *, paused: bool) -> web.StreamResponse:
    who = serving.principal(request)
    g = await access.grant(serving.pool(request), who, Action.PAUSE if paused else Action.RESUME)
    rid, live = request[serving.ENTRY].recording_id, request.app[LIVE]
    agents = live.tracker.agents_of(rid) if live is not None and rid is not None else None
    if rid is None or agents is None or (g.agent_ids is not None and not agents & g.agent_ids):
        raise _no_call()
    return await _set(request, rid, paused)


async def _set(request: web.Request, rid: uuid.UUID, paused: bool) -> web.StreamResponse:
    changed = await _change(request, rid, paused)
    return json_response({"id": rid, "paused": paused, "changed": changed})


async def _change(request: web.Request, rid: uuid.UUID, paused: bool) -> bool:
    entry, live = request[serving.ENTRY], request.app[LIVE]
    assert live is not None
    entry.recording_id = rid
    try:
        changed = await live.pauses.set(rid, paused, source="api", by=serving.principal(request).name)
    except NotRecording:
        raise _no_call() from None
    except MuteFailed as exc:
        raise ApiError(409, "mute_failed", "Asterisk did not mute the recording; try again") from exc
    entry.detail.update({"changed": changed})
    return changed


def _op(summary: str) -> dict[str, Any]:
    ok = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "paused": {"type": "boolean"},
            "changed": {"type": "boolean", "description": "false: it already was so"},
        },
    }
    return {
        "post": {
            "summary": summary,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": ok}}},
                "401": {"description": "No valid token."},
                "403": {"description": "The role may not pause calls."},
                "404": {"description": "No call being recorded within the caller's reach."},
                "409": {"description": "Asterisk did not mute or unmute the recording."},
            },
        }
    }


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
OPENAPI_PATHS: dict[str, Any] = {
    "/api/calls/current/pause": _op("Pause the recording of your own call in progress (card numbers)."),
    "/api/calls/current/resume": _op("Resume the recording of your own call in progress."),
    "/api/calls/{id}/pause": {
        "post": {
            **_op("Pause the recording of a call of your team (supervisor, dpo).")["post"],
            "parameters": [_ID],
        }
    },
    "/api/calls/{id}/resume": {
        "post": {
            **_op("Resume the recording of a call of your team (supervisor, dpo).")["post"],
            "parameters": [_ID],
        }
    },
}
