"""What every access request goes through, API and web page alike: authentication, the
same-origin check, exactly one audit row, error bodies, security headers, the log line.

The audit row is written before any data leaves: a handler that streams calls ``commit()``
before its first byte; for every other response the middleware writes the row before the
response is sent. When the row cannot be written, the access is refused (503).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog
from aiohttp import web

from callrec.access import audit, people, sessions
from callrec.access import policy as access
from callrec.access.people import Principal
from callrec.archive.reading import Archive
from callrec.config import Settings
from callrec.db.pool import Db, DbPool
from callrec.http import throttle
from callrec.ops import metrics

log = structlog.get_logger("callrec.api")

COOKIE = "callrec_session"
"""The web page's session id (access/sessions.py); never the API token."""
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorPage = Callable[[web.Request, int, str], web.Response]


@dataclass(frozen=True, slots=True)
class RouteInfo:
    action: str
    """The audit action of a request to this route (a handler may refine it)."""
    public: bool = False
    """Answers without a signed-in person (the sign-in page, the OpenAPI description)."""
    html: bool = False
    """A web page: errors render as HTML, a stale cookie means signed out."""


class ApiError(Exception):
    """A refusal with its status, a stable code and one line for the person."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        outcome: audit.Outcome | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})
        self.outcome = outcome


POOL: web.AppKey[DbPool] = web.AppKey("pool")
SETTINGS = web.AppKey("settings", Settings)
ARCHIVE: web.AppKey[Archive | None] = web.AppKey("archive")
ROUTES: web.AppKey[dict[Any, RouteInfo]] = web.AppKey("routes")
ERRORS: web.AppKey[Callable[[Exception], ApiError | None]] = web.AppKey("errors")
ERROR_PAGE: web.AppKey[ErrorPage] = web.AppKey("error_page")
THROTTLE = web.AppKey("throttle", throttle.Throttle)

ENTRY = web.RequestKey("audit_entry", audit.Entry)
PRINCIPAL: web.RequestKey[Principal | None] = web.RequestKey("principal")
WRITTEN = web.RequestKey("audit_written", bool)
STARTED = web.RequestKey("body_started", bool)
_UNKNOWN = RouteInfo("unknown")


class BadParam(ValueError):
    """A query, form or body field is unusable; the message names it."""


# C0, DEL and C1: a NUL cannot be stored in PostgreSQL text at all, and the others only hide
# what a field says. Refused in every text field before anything changes.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def refuse_control(value: Any, name: str) -> None:
    """Raise ``BadParam`` if any text in ``value`` (a string, or a JSON document's keys and
    values) holds a control character."""
    if isinstance(value, str):
        if _CONTROL.search(value):
            raise BadParam(f"{name}: control characters are not allowed")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            refuse_control(key, name)
            refuse_control(item, str(key) if isinstance(key, str) and not _CONTROL.search(key) else name)
    elif isinstance(value, list | tuple):
        for item in value:
            refuse_control(item, name)


def time_param(value: Any, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return audit.parse_time(str(value))
    except ValueError:
        raise BadParam(
            f"{name}: expected an ISO 8601 time between the years {audit.EARLIEST} and {audit.LATEST},"
            " such as 2026-03-01T14:30+02:00"
        ) from None


def int_param(value: Any, name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadParam(f"{name}: expected a whole number") from None
    if not low <= number <= high:
        raise BadParam(f"{name}: expected {low} to {high}")
    return number


def recording_id(request: web.Request) -> uuid.UUID:
    """An id that is not a UUID names no recording: 404, like any other unknown id."""
    rid = request[ENTRY].recording_id  # the middleware parsed it
    if rid is None:
        raise access.NotVisible("not a recording id")
    return rid


def add_route(
    app: web.Application, method: str, path: str, handler: Handler, action: str, **flags: bool
) -> None:
    route = app.router.add_route(method, path, handler)
    app[ROUTES][route] = RouteInfo(action, **flags)


def principal(request: web.Request) -> Principal:
    """The signed-in person; routes that are not public never run without one."""
    who = request[PRINCIPAL]
    assert who is not None
    return who


def pool(request: web.Request) -> DbPool:
    return request.app[POOL]


def settings(request: web.Request) -> Settings:
    return request.app[SETTINGS]


def archive(request: web.Request) -> Archive | None:
    return request.app[ARCHIVE]


def client_address(request: web.Request) -> str:
    """The peer, or, when the peer is one of ``[api] trusted_proxies``, the address that proxy
    saw: the last X-Forwarded-For entry (the one the proxy appended itself). No proxy is
    trusted by default: any local program could otherwise name any address
    (docs/api.md#behind-a-reverse-proxy)."""
    peer = request.remote or "-"
    forwarded = request.headers.get("X-Forwarded-For")
    trusted = settings(request).trusted_proxies
    if forwarded and trusted:
        try:
            if str(ipaddress.ip_address(peer)) in trusted:
                seen = str(ipaddress.ip_address(forwarded.rsplit(",", 1)[-1].strip()))
                return f"{seen} via {peer}"
        except ValueError:
            pass
    return peer


def _credential(request: web.Request) -> tuple[str | None, str]:
    """The presented token and where it came from: ``bearer`` or ``cookie``."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        return (value.strip() if scheme.lower() == "bearer" else ""), "bearer"
    cookie = request.cookies.get(COOKIE)
    return (cookie, "cookie") if cookie else (None, "")


async def session_principal(request: web.Request, session_id: str) -> Principal | None:
    return await sessions.authenticate(pool(request), session_id, settings(request).session_idle_timeout)


def _same_origin(request: web.Request) -> bool:
    """A browser-sent state change must come from our own pages (cookies are ambient)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    return origin is not None and urlsplit(origin).netloc == request.host


async def _authenticate(request: web.Request, info: RouteInfo) -> None:
    token, source = _credential(request)
    who = None
    if token and source == "cookie":
        who = await session_principal(request, token)
    elif token:
        who = await people.authenticate(pool(request), token)
    if token is not None and who is None and not (info.html and source == "cookie"):
        raise ApiError(
            401,
            "invalid_token",
            "the token or session is unknown, revoked or expired",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if request.method not in _SAFE_METHODS and source != "bearer" and not _same_origin(request):
        raise ApiError(403, "cross_site", "a state-changing request must come from callrec's own page")
    if who is not None:
        request[PRINCIPAL] = who
        entry = request[ENTRY]
        entry.user_id, entry.user_name, entry.role = who.user_id, who.name, who.role
    elif not info.public:
        raise ApiError(
            401,
            "unauthenticated",
            "sign in: send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _refusal(request: web.Request, exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, web.HTTPException):
        return ApiError(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    if isinstance(exc, Exception):
        mapped = request.app[ERRORS](exc)
        if mapped is not None:
            return mapped
    log.error("access request failed", error=type(exc).__name__, detail=str(exc)[:200], path=request.path)
    return ApiError(500, "internal", "internal error; see the daemon's log")


def _render(request: web.Request, info: RouteInfo, err: ApiError) -> web.Response:
    if info.html or (not request.path.startswith("/api/") and info is _UNKNOWN):
        resp = request.app[ERROR_PAGE](request, err.status, err.message)
    else:
        resp = json_response({"error": err.code, "message": err.message}, status=err.status)
    resp.headers.update(err.headers)
    return resp


def _text(value: object) -> str:
    """asyncpg's UUID is a subclass orjson does not take as a UUID."""
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(type(value).__name__)


def json_response(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, default=_text), status=status, content_type="application/json"
    )


def _throttled(request: web.Request, info: RouteInfo) -> web.Response | None:
    """A refused (401) request over its client's rate, the page's failed sign-in included: a
    429, counted into one audit row a minute instead of a row of its own (http/throttle.py)."""
    client = request[ENTRY].client or "-"
    if request.app[THROTTLE].refused(client):
        return None
    retry = str(request.app[THROTTLE].retry_after(client))
    request[WRITTEN] = True
    request[ENTRY].status, request[ENTRY].outcome = 429, "unauthenticated"
    err = ApiError(429, "too_many_requests", "too many refused requests", headers={"Retry-After": retry})
    return _render(request, info, err)


@web.middleware
async def audited(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/static/") and request.match_info.http_exception is None:
        return await handler(request)  # the stylesheet: no personal data, no row; a miss has one
    started = time.monotonic()
    info = request.app[ROUTES].get(request.match_info.route, _UNKNOWN)
    entry = audit.Entry(info.action, client=client_address(request))
    request[ENTRY], request[WRITTEN], request[PRINCIPAL], request[STARTED] = entry, False, None, False
    # Noted before any check, so a refused attempt on a recording names it too.
    with contextlib.suppress(ValueError):
        entry.recording_id = uuid.UUID(request.match_info.get("id", ""))
    outcome: audit.Outcome | None = None
    try:
        await _authenticate(request, info)
        for key, value in request.query.items():
            refuse_control(key, "query")
            refuse_control(value, key)
        response = await handler(request)
    except Exception as exc:  # every refusal still gets its audit row
        if request[STARTED]:
            raise  # the row is written and the body under way: nothing left to tell this client
        err = _refusal(request, exc)
        outcome = err.outcome
        response = _render(request, info, err)
    if not request[WRITTEN] and response.status == 401:
        response = _throttled(request, info) or response
    if not request[WRITTEN]:
        entry.status = response.status
        entry.outcome = outcome or audit.outcome_for(response.status)
        try:
            await audit.write(pool(request), entry)
        except Exception as exc:
            metrics.AUDIT_WRITE_FAILURES.inc()
            log.error("audit row not written: access refused", error=type(exc).__name__, action=entry.action)
            entry.status, entry.outcome = 503, "error"
            response = _render(request, info, ApiError(503, "audit_unavailable", "try again shortly"))
    metrics.API_REQUESTS.labels(action=entry.action, outcome=entry.outcome).inc()
    log.info(
        "access",
        action=entry.action,
        outcome=entry.outcome,
        status=entry.status,
        user=entry.user_name,
        role=entry.role,
        recording_id=str(entry.recording_id) if entry.recording_id else None,
        ms=round((time.monotonic() - started) * 1000, 1),
    )
    return response


def audit_in_transaction(
    request: web.Request, status: int = 200
) -> Callable[[Db, Mapping[str, Any]], Awaitable[None]]:
    """The audit row of a state change, written on the change's connection inside its
    transaction (``retention.holds.Audit``): the change and its row commit together or not at
    all. A row that cannot be written undoes the change and answers 503."""

    async def write(conn: Db, detail: Mapping[str, Any]) -> None:
        entry = request[ENTRY]
        entry.status, entry.outcome = status, audit.outcome_for(status)
        entry.detail.update(detail)
        try:
            await audit.write(conn, entry)
        except Exception as exc:
            metrics.AUDIT_WRITE_FAILURES.inc()
            log.error("audit row not written: change undone", error=type(exc).__name__, action=entry.action)
            raise ApiError(503, "audit_unavailable", "try again shortly") from exc
        # Committed with the change, unless the commit itself fails; then nothing changed.
        request[WRITTEN] = True

    return write


async def commit(request: web.Request, status: int, **detail: Any) -> None:
    """Write the audit row now, before a streamed body; refuse the access if it fails."""
    entry = request[ENTRY]
    entry.status, entry.outcome = status, audit.outcome_for(status)
    entry.detail.update(detail)
    try:
        await audit.write(pool(request), entry)
    except Exception as exc:
        raise ApiError(503, "audit_unavailable", "try again shortly") from exc
    request[WRITTEN] = True


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Personal data: never cached, never framed, never sniffed; the pages run no script."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'none'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    )
