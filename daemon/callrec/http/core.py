"""What a search, a data-subject search and an export do, for the API and the web page alike.

Each function takes the signed-in person, the database and the request's fields as plain
values, decides the grant, runs the query and returns the result with the audit row's detail.
The API shapes JSON from the result and the page renders a template, so the two cannot drift
apart in who may do what or in what the audit log records.

The grant comes before the request's fields are read: a role that may not do this at all is
refused without a word about the body it sent (docs/api.md#errors).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog
from aiohttp import web

from callrec.access import dsar, exports
from callrec.access import policy as access
from callrec.access.people import Principal
from callrec.access.policy import Action
from callrec.archive import reading
from callrec.archive.crypto import CorruptObject
from callrec.archive.keys import MissingKey
from callrec.archive.reading import Archive, Audio
from callrec.archive.settings import EXTENSIONS
from callrec.archive.store import StoreError
from callrec.db.pool import Db, DbPool
from callrec.http import audio
from callrec.http import middleware as serving
from callrec.http.middleware import ApiError, BadParam, int_param, time_param
from callrec.ops import metrics
from callrec.privacy import number_hmac, redact
from callrec.recording.facts import Recording
from callrec.retention import holds

log = structlog.get_logger("callrec.api")
T = TypeVar("T")

MAX_PAGE = 1000
_DSAR_LOCK = 0x44534152  # "DSAR": with the user id, one advisory lock per person

Fields = Mapping[str, Any]
ReadFields = Callable[[], Awaitable[Fields]]
"""Reads the request's fields (a JSON body, a form) once the grant allows it."""
RecordSearch = Callable[[Db, dsar.Result, datetime, int, str | None], Awaitable[None]]
"""Stores a data-subject search where it belongs (a case, access/cases.py) on the search's
connection, before its audit row: given the result, the time, the window and the number's
keyed HMAC (never the number)."""


@dataclass(frozen=True, slots=True)
class Searched:
    filters: access.Filters
    recordings: list[Recording]
    total: int
    limit: int
    offset: int
    sort: str
    audit: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DsarFound:
    at: datetime
    window_minutes: int
    result: dsar.Result
    audit: dict[str, Any]
    """Keeps the masked number, never the number given (docs/privacy.md#finding-a-data-subjects-calls)."""


@dataclass(frozen=True, slots=True)
class Exported:
    bundle: exports.Bundle
    exported_at: datetime
    disclosure: exports.Disclosure
    recording_ids: list[uuid.UUID]
    employee_identity: exports.EmployeeIdentity
    audit: dict[str, Any]
    """The disclosure record (docs/privacy.md#disclosure)."""


async def _read(read: ReadFields) -> Fields:
    fields = await read()
    serving.refuse_control(fields, "form")
    return fields


def _text(query: Fields, name: str, longest: int = 64) -> str | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > longest:
        raise BadParam(f"{name}: at most {longest} characters")
    return value.strip() or None


def _seconds(query: Fields, name: str) -> float | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise BadParam(f"{name}: expected a number of seconds") from None
    if not 0 <= seconds <= 1e7:
        raise BadParam(f"{name}: expected 0 to 10000000 seconds")
    return seconds


_FRAGMENT = frozenset("0123456789+*")


def search_filters(query: Fields) -> access.Filters:
    direction = _text(query, "direction")
    if direction not in (None, "inbound", "outbound"):
        raise BadParam("direction: expected inbound or outbound")
    number = _text(query, "number", 32)
    if number is not None and not set(number) <= _FRAGMENT:
        raise BadParam("number: a part of the masked number: digits, + and * only")
    on_hold = _text(query, "on_hold")
    if on_hold not in (None, "true", "false"):
        raise BadParam("on_hold: expected true or false")
    return access.Filters(
        since=time_param(query.get("from"), "from"),
        until=time_param(query.get("to"), "to"),
        register=_text(query, "register"),
        agent=_text(query, "agent", 128),
        service_number=_text(query, "service_number"),
        direction=direction,
        min_seconds=_seconds(query, "min_seconds"),
        max_seconds=_seconds(query, "max_seconds"),
        number=number,
        on_hold=None if on_hold is None else on_hold == "true",
    )


async def search(db: Db, who: Principal, query: Fields, *, default_limit: int = 100) -> Searched:
    """``query``: from, to, register, agent, service_number, direction, min_seconds,
    max_seconds, number, on_hold, sort, limit, offset, as the API and the page's form name them."""
    filters = search_filters(query)
    limit = int_param(query.get("limit"), "limit", default_limit, 1, MAX_PAGE)
    offset = int_param(query.get("offset"), "offset", 0, 0, 10_000_000)
    sort = query.get("sort") or "-started"
    if sort not in access.SORT_KEYS:
        raise BadParam(f"sort: expected one of {', '.join(access.SORT_KEYS)}")
    g = await access.grant(db, who, Action.SEARCH)
    found = await access.search(db, g, filters, limit=limit, offset=offset, sort=sort)
    detail = filters.detail() | {"count": len(found.recordings), "total": found.total}
    return Searched(filters, found.recordings, found.total, limit, offset, sort, detail)


async def view(db: Db, who: Principal, recording_id: uuid.UUID) -> Recording:
    return await access.get(db, await access.grant(db, who, Action.VIEW), recording_id)


async def dsar_search(
    db: DbPool,
    who: Principal,
    key: bytes | None,
    read: ReadFields,
    *,
    per_hour: int,
    audit: holds.Audit,
    record: RecordSearch | None = None,
) -> DsarFound:
    """``read`` gives number, at, window_minutes, case_reference; ``key``: the HMAC key, if
    configured; ``per_hour``: ``[privacy] dsar_searches_per_hour``. ``record`` (the page's
    case) and the audit row (by ``audit``) are written in the transaction that counted the
    person's searches, under a lock per person: concurrent searches cannot all pass the count
    (docs/api.md#limits)."""
    g = await access.grant(db, who, Action.DSAR_SEARCH)
    fields = await _read(read)
    number = fields.get("number")
    if not isinstance(number, str):
        raise BadParam("number: the full phone number as a string")
    case = fields.get("case_reference")
    if not isinstance(case, str) or not case.strip() or len(case) > 200:
        raise BadParam(
            "case_reference: required, the request's case or ticket number (at most 200 characters)"
        )
    at = time_param(fields.get("at"), "at")
    if at is None:
        raise BadParam("at: the approximate time of the call (ISO 8601)")
    window = int_param(fields.get("window_minutes"), "window_minutes", 30, 0, dsar.MAX_WINDOW_MINUTES)
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _DSAR_LOCK, who.user_id)
        await dsar.check_quota(conn, who.user_id, per_hour)
        result = await dsar.search(conn, g, number, at, window, key)
        detail = {
            "number_masked": result.masked,
            "case_reference": redact(case.strip()),
            "at": at.isoformat(),
            "window_minutes": window,
            "exact_matching": result.exact_matching,
            "recording_ids": [str(c.recording.id) for c in result.candidates],
        }
        # The number tried, reviewable with the key without storing it (docs/privacy.md).
        hashed = number_hmac(number, key)
        if hashed is not None:
            detail["number_hmac"] = hashed
        if record is not None:
            await record(conn, result, at, window, hashed)
        await audit(conn, detail)
    return DsarFound(at, window, result, detail)


async def open_audio(request: web.Request, rec: Recording) -> Audio:
    """The recording's audio as served, or the API error that says why it cannot be."""
    recordings_dir = serving.settings(request).asterisk.recordings_dir
    try:
        return await reading.open_audio(serving.pool(request), rec, serving.archive(request), recordings_dir)
    except FileNotFoundError:
        raise ApiError(404, "audio_missing", "the recording's audio is not on this server") from None
    except MissingKey as exc:
        log.error("archived audio cannot be decrypted", recording_id=str(rec.id), error=str(exc)[:200])
        raise ApiError(
            503, "audio_key_unavailable", "the key to decrypt this recording is not configured"
        ) from None
    except (StoreError, CorruptObject) as exc:
        log.error("archived audio cannot be read", recording_id=str(rec.id), error=str(exc)[:200])
        raise ApiError(
            503, "audio_unavailable", "the archive store cannot serve this recording now"
        ) from None


def _blocks(db: Db, archive: Archive | None, recordings_dir: Path) -> exports.Source:
    """The audio of each recording for ``exports.build``, which runs in a worker thread: each
    block is read on the event loop (the store is asynchronous) and handed over."""
    loop = asyncio.get_running_loop()

    def on_loop(aw: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(_await(aw), loop).result()

    def blocks(rec: Recording) -> Iterator[bytes]:
        try:
            sound = on_loop(reading.open_audio(db, rec, archive, recordings_dir))
        except FileNotFoundError:
            raise exports.IntegrityError(f"recording {rec.id}: the audio is missing") from None
        except (MissingKey, StoreError, CorruptObject) as exc:
            raise exports.IntegrityError(f"recording {rec.id}: {exc}") from None
        with sound:
            it = sound.read(0, sound.size - 1)
            while True:
                try:
                    yield on_loop(it.__anext__())
                except StopAsyncIteration:
                    return
                except CorruptObject as exc:
                    metrics.ARCHIVE_CORRUPT.labels(where="export").inc()
                    raise exports.IntegrityError(f"recording {rec.id}: {exc}") from None

    return blocks


async def _await(aw: Awaitable[T]) -> T:
    return await aw


async def export(request: web.Request, who: Principal, read: ReadFields) -> Exported:
    """``read`` gives recording_ids, recipient, legal_basis, case_reference and optionally
    employee_identity (``included``, the default, or ``withheld``: GDPR Art. 15(4)). The
    caller must send the bundle with ``send_export``, which closes it."""
    db = serving.pool(request)
    source = _blocks(db, serving.archive(request), serving.settings(request).asterisk.recordings_dir)
    g = await access.grant(db, who, Action.EXPORT)
    fields = await _read(read)
    ids = exports.parse_ids(fields.get("recording_ids"))
    disclosure = exports.Disclosure.parse(
        fields.get("recipient"), fields.get("legal_basis"), fields.get("case_reference")
    )
    employees = exports.parse_employee_identity(fields.get("employee_identity"))
    recordings = await access.get_many(db, g, ids)
    now = datetime.now(UTC)
    bundle = await asyncio.to_thread(
        exports.build,
        recordings,
        source,
        disclosure,
        exported_by=who.name,
        exported_at=now,
        employee_identity=employees,
    )
    detail = disclosure.to_json() | {
        "employee_identity": employees,
        "recording_ids": [str(i) for i in ids],
        "bundle_sha256": bundle.sha256,
        "bundle_bytes": bundle.size,
    }
    return Exported(bundle, now, disclosure, ids, employees, detail)


RecordExport = Callable[[Db, Exported], Awaitable[None]]
"""Stores an export's receipt (a case's, access/cases.py) in the transaction of its audit row."""


async def send_export(
    request: web.Request, exported: Exported, record: RecordExport | None = None
) -> web.StreamResponse:
    """The disclosure is in the audit log (and ``record``'s receipt with it, in one
    transaction) before the first byte of the bundle leaves."""
    bundle = exported.bundle
    try:
        if record is None:
            await serving.commit(request, 200, **exported.audit)
        else:
            write = serving.audit_in_transaction(request)
            async with serving.pool(request).acquire() as conn, conn.transaction():
                await record(conn, exported)
                await write(conn, exported.audit)
        headers = {
            "Content-Type": "application/zip",
            "Content-Disposition": (
                f'attachment; filename="callrec-export-{exported.exported_at:%Y%m%dT%H%M%SZ}.zip"'
            ),
            "X-Callrec-Bundle-SHA256": bundle.sha256,
        }
        sound = reading.from_fd(os.dup(bundle.file.fileno()), "application/zip")
        with sound:
            return await audio.stream(request, sound, 0, bundle.size, 200, headers)
    finally:
        bundle.file.close()


async def serve_audio(request: web.Request) -> web.StreamResponse:
    """``GET /api/recordings/{id}/audio`` (also the DSAR case's candidate player): the grant,
    HTTP Range, and the audit row before the first byte."""
    who = serving.principal(request)
    action = Action.DOWNLOAD if request.query.get("download") in ("1", "true") else Action.PLAY
    request[serving.ENTRY].action = action.value
    g = await access.grant(serving.pool(request), who, action)
    rec = await access.get(serving.pool(request), g, serving.recording_id(request))
    with await open_audio(request, rec) as sound:
        return await _send_audio(request, rec, action, sound)


async def _send_audio(
    request: web.Request, rec: Recording, action: Action, sound: Audio
) -> web.StreamResponse:
    size = sound.size
    etag = f'"{rec.sha256}"'
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Content-Type": sound.content_type}
    if action is Action.DOWNLOAD:
        headers["Content-Disposition"] = f'attachment; filename="{rec.id}{EXTENSIONS[rec.audio_format]}"'
    # RFC 9110 section 13.1.5: a stale validator in If-Range means "send it all".
    if_range = request.headers.get("If-Range")
    try:
        rng = audio.parse_range(request.headers.get("Range"), size) if if_range in (None, etag) else None
    except audio.Unsatisfiable:
        raise ApiError(
            416, "range", "unsatisfiable range", headers={"Content-Range": f"bytes */{size}"}
        ) from None
    if rng is None:
        await serving.commit(request, 200, bytes=size)
        return await audio.stream(request, sound, 0, size, 200, headers)
    headers["Content-Range"] = rng.content_range(size)
    await serving.commit(request, 206, range=headers["Content-Range"])
    return await audio.stream(request, sound, rng.start, rng.length, 206, headers)
