"""One data-subject request's page (docs/web.md#data-subject-requests): its search form, the
candidate calls of a search, their inline players, the export with its receipt, the history.

A search is a POST that redirects (303) to the case's own URL with the stored search's id, so
Back and a reload show the same results and never resubmit a form. Candidates are never
ticked in advance and show every field that tells two calls apart; each plays inline through
a URL of the case (``/dsar/{case}/recordings/{id}/audio``), which notes that the DPO listened
and then serves the audio exactly as the API does. Only a call some search of the case found
plays or exports from it.
"""

from __future__ import annotations

import contextlib
import functools
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import babel.dates
from aiohttp import web

from callrec.access import cases, dsar, exports
from callrec.access import policy as access
from callrec.access.policy import Action
from callrec.db.pool import Db
from callrec.http import core
from callrec.http import middleware as serving
from callrec.http.middleware import ApiError, BadParam
from callrec.recording.facts import Recording
from callrec.web.site import N_, _, page, reader


def add_routes(app: web.Application, case: str) -> None:
    add = functools.partial(serving.add_route, app)
    add("GET", case, _case, "dsar_case", html=True)
    add("POST", case + "/search", _search, "dsar_search", html=True)
    add("GET", case + "/recordings/{id}/audio", _listen, "play", html=True)
    add("POST", case + "/export", _export, "export", html=True)
    add("GET", case + "/exports/{export:[0-9]{1,18}}", _receipt, "dsar_receipt", html=True)


def case_id(request: web.Request) -> int:
    """The case of the URL, named in the request's audit row."""
    number = int(request.match_info["case"])
    request[serving.ENTRY].detail["case_id"] = number
    return number


async def case_of(request: web.Request) -> cases.Case:
    """The URL's case, after the DPO's grant; 404 when there is none."""
    db = serving.pool(request)
    await access.grant(db, serving.principal(request), Action.DSAR_SEARCH)
    number = case_id(request)
    try:
        return await cases.get(db, number)
    except cases.CaseNotFound:
        raise ApiError(404, "not_found", f"no case {number}") from None


def plain(request: web.Request, exc: Exception, words: Mapping[str, str]) -> str:
    """A field's error in plain words, in the reader's language (the field names the message)."""
    field = str(exc).partition(":")[0]
    return _(request, words.get(field, _OTHER))


_OTHER = N_("One of the fields could not be used: check it and try again.")


def dates(request: web.Request) -> dict[str, Any]:
    """Today and a day's format in the reader's zone and language: the deadline's days left."""
    r = reader(request)
    return {
        "today": r.now().date(),
        "day_of": lambda d: babel.dates.format_date(d, "medium", locale=r.locale),
    }


@dataclass(frozen=True, slots=True)
class Candidate:
    """A call a search found, as the DPO sees it to tell it from another."""

    found: cases.Found
    recording: Recording | None
    """``None``: erased since the search."""
    listened: tuple[datetime, datetime, str] | None


async def _recordings(db: Db, g: access.Grant, ids: list[uuid.UUID]) -> dict[uuid.UUID, Recording]:
    try:
        return {r.id: r for r in await access.get_many(db, g, ids)}
    except access.NotVisible:  # one was erased since: the others still show
        found = {}
        for rid in ids:
            with contextlib.suppress(access.NotVisible):
                found[rid] = await access.get(db, g, rid)
        return found


def _form_of(case: cases.Case) -> dict[str, str]:
    """The export's fields as a new page shows them: nothing ticked; for a data subject the
    employees' identity left out (GDPR Art. 15(4)) and Art. 15 as the basis."""
    if case.kind == "police":
        return {"recipient": "", "legal_basis": "", "withhold": ""}
    return {"recipient": case.requester, "legal_basis": "GDPR Art. 15", "withhold": "1"}


async def case_page(
    request: web.Request,
    case: cases.Case,
    *,
    search_id: int | None = None,
    error: str = "",
    search_form: Mapping[str, str] | None = None,
    export_form: Mapping[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    """The case as it stands; ``error`` and the forms as typed when a step was refused."""
    db = serving.pool(request)
    g = await access.grant(db, serving.principal(request), Action.DSAR_SEARCH)
    searches = await cases.searches(db, case.id)
    shown = next((s for s in searches if s.id == search_id), searches[0] if searches else None)
    candidates: list[Candidate] = []
    if shown is not None:
        heard = await cases.listened(db, case.id)
        recs = await _recordings(db, g, [c.recording_id for c in shown.candidates])
        candidates = [
            Candidate(c, recs.get(c.recording_id), heard.get(c.recording_id)) for c in shown.candidates
        ]
    settings = serving.settings(request)
    lang = reader(request).language
    registers = {name: reg.title(lang) for name, reg in settings.registers.items()}
    return page(
        request,
        "dsar_case.html",
        _(request, "Request %(reference)s") % {"reference": case.reference},
        status=status,
        case=case,
        **dates(request),
        searches=searches,
        shown=shown,
        candidates=candidates,
        registers=registers,
        receipts=await cases.receipts(db, case.id),
        trail=await cases.trail(db, case.id),
        error=error,
        search_form=search_form or {"at": "", "window_minutes": "30"},
        export_form=export_form or _form_of(case),
        ticked=set(export_form.get("ids", ())) if export_form else set(),
    )


async def _case(request: web.Request) -> web.StreamResponse:
    case = await case_of(request)
    return await case_page(request, case, search_id=_number(request.query.get("search", "")))


def _number(text: str) -> int | None:
    """A stored search's id from the URL or the form; anything else shows the latest."""
    return int(text) if re.fullmatch("[0-9]{1,18}", text) else None


_PLAIN = {
    "number": N_("Give the caller's full phone number, as the caller ID shows it (5 digits at least)."),
    "at": N_("The time of the call is not a date and time we can read."),
    "window_minutes": N_("The ± minutes must be a whole number from 0 to 10080 (a week)."),
    "recording_ids": N_("Tick at least one call to export."),
    "candidate": N_("Only the calls found for this request can be exported from it."),
    "recipient": N_("Say who receives the export, in one line."),
    "legal_basis": N_("Give the legal basis of the disclosure, in one line."),
    "employee_identity": N_("The employees' identity is either left out or included."),
}


async def _search(request: web.Request) -> web.StreamResponse:
    who = serving.principal(request)
    case = await case_of(request)
    settings = serving.settings(request)
    r = reader(request)
    form = {k: str(v) for k, v in (await request.post()).items() if k in ("number", "at", "window_minutes")}
    if case.status != "open":
        return await case_page(
            request, case, error=_(request, "The case is closed: reopen it to search."), status=409
        )

    async def read() -> core.Fields:
        # The time the caller gave, in the DPO's zone; the case's reference for the audit row.
        return form | {"at": r.read_local(form.get("at", "")), "case_reference": case.reference}

    stored: list[int] = []

    async def record(conn: Db, result: dsar.Result, at: datetime, window: int, hashed: str | None) -> None:
        stored.append(await cases.add_search(conn, case.id, who.user_id, result, at, window, hashed))

    try:
        await core.dsar_search(
            serving.pool(request),
            who,
            settings.number_hmac_key,
            read,
            per_hour=settings.dsar_searches_per_hour,
            audit=serving.audit_in_transaction(request, 303),
            record=record,
        )
    except (BadParam, dsar.BadRequest) as exc:
        return await case_page(request, case, error=plain(request, exc, _PLAIN), search_form=form, status=400)
    except dsar.TooMany as exc:
        message = _(
            request,
            "You have run the most data-subject searches allowed in an hour."
            " Try again in %(minutes)s minutes.",
        )
        minutes = max(1, round(exc.retry_after / 60))
        return await case_page(
            request, case, error=message % {"minutes": minutes}, search_form=form, status=429
        )
    return web.Response(status=303, headers={"Location": f"/dsar/{case.id}?search={stored[0]}#results"})


async def _listen(request: web.Request) -> web.StreamResponse:
    """A candidate's inline player: noted as listened in the case, then served as the API serves
    audio (the same grant, range handling and audit row, with the case named in it)."""
    who = serving.principal(request)
    case = await case_of(request)
    rid = serving.recording_id(request)
    db = serving.pool(request)
    if not await cases.is_candidate(db, case.id, rid):
        raise access.NotVisible(f"recording {rid} is not a candidate of case {case.id}")
    await access.get(db, await access.grant(db, who, Action.PLAY), rid)
    await cases.note_listen(db, case.id, rid, who.user_id)
    return await core.serve_audio(request)


async def _export(request: web.Request) -> web.StreamResponse:
    who = serving.principal(request)
    case = await case_of(request)
    form = await request.post()
    ids = [str(v) for v in form.getall("recording_id", [])]
    typed = {
        "recipient": str(form.get("recipient", "")),
        "legal_basis": str(form.get("legal_basis", "")),
        "withhold": "1" if form.get("withhold_employees") else "",
        "ids": ids,
    }
    if case.status != "open":
        return await case_page(
            request, case, error=_(request, "The case is closed: reopen it to export."), status=409
        )
    db = serving.pool(request)
    try:
        for value in ids:
            try:
                rid = uuid.UUID(value)
            except ValueError:
                raise exports.BadExport("candidate: not a call found for this case") from None
            if not await cases.is_candidate(db, case.id, rid):
                raise exports.BadExport("candidate: not a call found for this case")

        async def read() -> core.Fields:
            employees = "withheld" if typed["withhold"] else "included"
            return {
                "recording_ids": ids,
                "recipient": typed["recipient"],
                "legal_basis": typed["legal_basis"],
                "case_reference": case.reference,
                "employee_identity": employees,
            }

        exported = await core.export(request, who, read)
    except (BadParam, exports.BadExport) as exc:
        return await case_page(
            request,
            case,
            search_id=_number(str(form.get("search", ""))),
            error=plain(request, exc, _PLAIN),
            export_form=typed,
            status=400,
        )

    async def receipt(conn: Db, done: core.Exported) -> None:
        number = await cases.add_export(
            conn,
            case.id,
            who.user_id,
            exported_at=done.exported_at,
            recipient=done.disclosure.recipient,
            legal_basis=done.disclosure.legal_basis,
            employee_identity=done.employee_identity,
            recording_ids=done.recording_ids,
            bundle_sha256=done.bundle.sha256,
            bundle_bytes=done.bundle.size,
        )
        request[serving.ENTRY].detail["receipt"] = number

    return await core.send_export(request, exported, receipt)


async def _receipt(request: web.Request) -> web.StreamResponse:
    case = await case_of(request)
    number = int(request.match_info["export"])
    request[serving.ENTRY].detail["receipt"] = number
    try:
        got = await cases.receipt(serving.pool(request), case.id, number)
    except cases.CaseNotFound:
        raise ApiError(404, "not_found", f"no export {number} in case {case.id}") from None
    title = _(request, "Receipt of the export")
    return page(request, "dsar_receipt.html", title, case=case, receipt=got, **dates(request))
