"""The access API: JSON under /api, bearer tokens, one audit row per request.

``build_api(pool, settings)`` gives the aiohttp application that ``callrec run`` serves on
``[api] listen``, the web page at / included. Who may do what is decided in
``callrec.access``; this module only reads requests and shapes JSON answers. Search,
data-subject search and export run the same core as the web page (``http/core.py``).
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from callrec.access import audit, dsar, exports
from callrec.access import policy as access
from callrec.access.policy import Action
from callrec.archive.reading import Archive
from callrec.config import Settings
from callrec.db.pool import DbPool
from callrec.http import calls, core, openapi, throttle
from callrec.http import middleware as serving
from callrec.http.middleware import ApiError, BadParam, int_param, json_response, recording_id, time_param
from callrec.privacy import redact
from callrec.retention import holds as retention
from callrec.web import site

# Requests are small JSON documents; an export of MAX_RECORDINGS ids is about 40 KB.
MAX_BODY = 128 * 1024


def build_api(
    pool: DbPool,
    settings: Settings,
    archive: Archive | None = None,
    *,
    live: calls.LiveCalls | None = None,
) -> web.Application:
    """The application for ``[api] listen``. Serve it with ``web.AppRunner(app, access_log=None)``:
    the middleware logs one line per request without tokens or query strings."""
    app = web.Application(middlewares=[serving.audited], client_max_size=MAX_BODY)
    app[serving.POOL] = pool
    app[serving.SETTINGS] = settings
    app[serving.ARCHIVE] = archive
    app[serving.ROUTES] = {}
    app[serving.ERRORS] = _refusal
    refused = app[serving.THROTTLE] = throttle.Throttle(settings.refused_per_minute)
    app.cleanup_ctx.append(lambda _: throttle.write_rows(refused, pool))
    app.on_response_prepare.append(serving.security_headers)
    add = functools.partial(serving.add_route, app)
    add("GET", "/api/openapi.json", _openapi, "api_description", public=True)
    add("GET", "/api/whoami", _whoami, "whoami")
    add("GET", "/api/recordings", _search, "search")
    add("GET", "/api/recordings/{id}", _view, "view")
    add("GET", "/api/recordings/{id}/audio", core.serve_audio, "play")
    add("HEAD", "/api/recordings/{id}/audio", core.serve_audio, "play")
    add("POST", "/api/recordings/{id}/hold", _hold, "hold")
    add("POST", "/api/recordings/{id}/release", _release, "release")
    add("POST", "/api/recordings/{id}/erase", _erase, "erase")
    add("POST", "/api/dsar/search", _dsar, "dsar_search")
    add("POST", "/api/exports", _export, "export")
    add("GET", "/api/audit", _audit, "audit_read")
    calls.add_routes(app, live)  # live: the daemon's calls in progress (pause, resume)
    site.add_routes(app)
    return app


def _refusal(exc: Exception) -> ApiError | None:
    """Domain errors as HTTP answers. Forbidden is about the role, never about one recording."""
    if isinstance(exc, access.Forbidden):
        return ApiError(403, "forbidden", str(exc))
    if isinstance(exc, access.NotVisible | retention.RecordingNotFound):
        return ApiError(404, "not_found", "no such recording")
    if isinstance(exc, retention.RecordingOnHold):
        return ApiError(409, "legal_hold", "the recording is on legal hold; release it first")
    if isinstance(exc, dsar.TooMany):
        return ApiError(429, "too_many_requests", str(exc), headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, exports.IntegrityError):
        return ApiError(409, "integrity", str(exc), outcome="error")
    if isinstance(exc, BadParam | dsar.BadRequest | exports.BadExport):
        return ApiError(400, "bad_request", str(exc))
    if isinstance(exc, OSError | TimeoutError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError):
        return ApiError(503, "unavailable", "the database or the recordings folder is unavailable")
    if isinstance(exc, ValueError):  # retention's checks of reason and until
        return ApiError(400, "bad_request", str(exc))
    return None


# --- request parsing ----------------------------------------------------------------------------


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise BadParam("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadParam("the body must be a JSON object")
    serving.refuse_control(body, "body")
    return body


def _reason(body: dict[str, Any], *, required: bool) -> str | None:
    reason = body.get("reason")
    if reason is None and not required:
        return None
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 300:
        raise BadParam("reason: required, at most 300 characters")
    return redact(reason.strip())  # free text: no phone number reaches the register


# --- handlers -----------------------------------------------------------------------------------


async def _openapi(request: web.Request) -> web.StreamResponse:
    return json_response(openapi.DOCUMENT)


async def _whoami(request: web.Request) -> web.StreamResponse:
    who = serving.principal(request)
    allowed = [a.value for a in Action if access.allowed(who.role, a)]
    return json_response({"name": who.name, "role": who.role, "agent_id": who.agent_id, "may": allowed})


async def _search(request: web.Request) -> web.StreamResponse:
    who = serving.principal(request)
    found = await core.search(serving.pool(request), who, request.query)
    request[serving.ENTRY].detail.update(found.audit)
    return json_response(
        {
            "recordings": [access.as_json(r, who.role) for r in found.recordings],
            "total": found.total,
            "limit": found.limit,
            "offset": found.offset,
            "sort": found.sort,
        }
    )


async def _view(request: web.Request) -> web.StreamResponse:
    return await _after(request, recording_id(request))


async def _retention_action(request: web.Request, action: Action) -> tuple[DbPool, uuid.UUID, dict[str, Any]]:
    who = serving.principal(request)
    g = await access.grant(serving.pool(request), who, action)
    rid = recording_id(request)
    await access.get(serving.pool(request), g, rid)
    return serving.pool(request), rid, await _body(request)


async def _hold(request: web.Request) -> web.StreamResponse:
    db, rid, body = await _retention_action(request, Action.HOLD)
    reason = _reason(body, required=True)
    assert reason is not None
    until = time_param(body.get("until"), "until")
    request[serving.ENTRY].detail.update({"reason": reason, "until": until})
    by = serving.principal(request).name
    await retention.hold(
        db, rid, reason=reason, by=by, until=until, audit=serving.audit_in_transaction(request)
    )
    return await _after(request, rid)


async def _release(request: web.Request) -> web.StreamResponse:
    db, rid, body = await _retention_action(request, Action.RELEASE)
    reason = _reason(body, required=False)
    request[serving.ENTRY].detail.update({"reason": reason})
    by = serving.principal(request).name
    await retention.release(db, rid, by=by, audit=serving.audit_in_transaction(request))
    return await _after(request, rid)


async def _erase(request: web.Request) -> web.StreamResponse:
    db, rid, body = await _retention_action(request, Action.ERASE)
    reason = _reason(body, required=True)
    assert reason is not None
    request[serving.ENTRY].detail.update({"reason": reason})
    archive = serving.archive(request)
    destroyed = await retention.erase(
        db,
        serving.settings(request),
        rid,
        reason=reason,
        by=serving.principal(request).name,
        store=archive.store if archive is not None else None,
        audit=serving.audit_in_transaction(request),
    )
    return json_response({"id": rid, "erased": True, "bytes_destroyed": destroyed})


async def _after(request: web.Request, rid: uuid.UUID) -> web.StreamResponse:
    """One recording's JSON as the person may see it (a view, or the answer to a change)."""
    who = serving.principal(request)
    return json_response(access.as_json(await core.view(serving.pool(request), who, rid), who.role))


async def _dsar(request: web.Request) -> web.StreamResponse:
    who = serving.principal(request)
    key = serving.settings(request).number_hmac_key
    per_hour = serving.settings(request).dsar_searches_per_hour
    read = functools.partial(_body, request)
    write = serving.audit_in_transaction(request)
    found = await core.dsar_search(serving.pool(request), who, key, read, per_hour=per_hour, audit=write)
    return json_response(
        {
            "number_masked": found.result.masked,
            "exact_matching": found.result.exact_matching,
            "candidates": [
                access.as_json(c.recording, who.role) | {"match": c.match, "seconds_away": c.seconds_away}
                for c in found.result.candidates
            ],
        }
    )


async def _export(request: web.Request) -> web.StreamResponse:
    read = functools.partial(_body, request)
    exported = await core.export(request, serving.principal(request), read)
    return await core.send_export(request, exported)


async def _audit(request: web.Request) -> web.StreamResponse:
    who = serving.principal(request)
    await access.grant(serving.pool(request), who, Action.AUDIT_READ)
    q = request.query
    try:
        rid = uuid.UUID(q["recording_id"]) if q.get("recording_id") else None
    except ValueError:
        raise BadParam("recording_id: expected a UUID") from None
    since, until = time_param(q.get("from"), "from"), time_param(q.get("to"), "to")
    user, action = q.get("user") or None, q.get("action") or None
    limit = int_param(q.get("limit"), "limit", 100, 1, core.MAX_PAGE)
    rows = await audit.read(
        serving.pool(request),
        since=since,
        until=until,
        user=user,
        action=action,
        recording_id=rid,
        limit=limit,
    )
    # Times as they are; the texts typed by a person masked (a number given as user=).
    user_text, action_text = (redact(v) if v else None for v in (user, action))
    asked = {"from": since, "to": until, "user": user_text, "action": action_text, "recording_id": rid}
    request[serving.ENTRY].detail.update(
        {k: str(v) for k, v in asked.items() if v is not None} | {"count": len(rows)}
    )
    return json_response({"entries": rows})
