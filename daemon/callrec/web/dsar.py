"""The DPO's data-subject requests as cases (docs/web.md#data-subject-requests): the list of
cases at /dsar (open first, nearest deadline first), a new case, and a case's status and
deadline. The case's own page, its searches, plays and exports are in web/dsar_case.py.

Every request about a case names it in its audit row (``detail.case_id``), and every change
is written in the transaction of that row (http/middleware.py ``audit_in_transaction``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from datetime import date
from typing import Any

from aiohttp import web

from callrec.access import cases
from callrec.access import policy as access
from callrec.access.policy import Action
from callrec.db.pool import Db
from callrec.http import middleware as serving
from callrec.web import dsar_case, holds
from callrec.web.dsar_case import case_of, plain
from callrec.web.site import N_, _, page, reader

CASE = r"/dsar/{case:[0-9]{1,18}}"


def add_routes(app: web.Application) -> None:
    add = functools.partial(serving.add_route, app)
    add("GET", "/dsar", _cases, "dsar_cases", html=True)
    add("GET", "/dsar/new", _new, "page", html=True)
    add("POST", "/dsar", _open, "dsar_case_open", html=True)
    add("POST", CASE + "/status", _status, "dsar_case_status", html=True)
    add("POST", CASE + "/extend", _extend, "dsar_case_extend", html=True)
    dsar_case.add_routes(app, CASE)
    holds.add_routes(app)  # the DPO's buttons on a recording's page


async def _cases(request: web.Request) -> web.StreamResponse:
    db = serving.pool(request)
    await access.grant(db, serving.principal(request), Action.DSAR_SEARCH)
    found = await cases.listing(db)
    request[serving.ENTRY].detail["count"] = len(found)
    title = _(request, "Data-subject requests")
    return page(request, "dsar_cases.html", title, cases=found, **dsar_case.dates(request))


def _new_page(
    request: web.Request, form: Mapping[str, str], error: str = "", status: int = 200
) -> web.Response:
    title = _(request, "New data-subject request")
    return page(request, "dsar_new.html", title, form=form, error=error, status=status)


async def _new(request: web.Request) -> web.StreamResponse:
    await access.grant(serving.pool(request), serving.principal(request), Action.DSAR_SEARCH)
    today = reader(request).now().date().isoformat()
    return _new_page(request, {"kind": "data_subject", "received_on": today, "requester": ""})


_PLAIN = {
    "requester": N_("Say who made the request, in one line (a phone number in it is masked)."),
    "received_on": N_("The date the request was received must be a date, not in the future."),
    "kind": N_("Pick the kind of request."),
    "note": N_("Say why the request is refused, in one line."),
    "reason": N_("Say why the answer needs more time, in one line."),
}


def _received_on(value: str, today: date) -> date:
    try:
        received = date.fromisoformat(value.strip())
    except ValueError:
        raise cases.BadCase("received_on: a date") from None
    if not date(1900, 1, 1) <= received <= today:
        raise cases.BadCase("received_on: not in the future")
    return received


async def _open(request: web.Request) -> web.StreamResponse:
    who = serving.principal(request)
    db = serving.pool(request)
    await access.grant(db, who, Action.DSAR_SEARCH)
    form = {k: str(v) for k, v in (await request.post()).items() if k in ("kind", "requester", "received_on")}
    try:
        kind = form.get("kind", "")
        if kind not in cases.KINDS:
            raise cases.BadCase("kind: data_subject or police")
        requester = cases.text(form.get("requester"), "requester")
        assert requester is not None
        received = _received_on(form.get("received_on", ""), reader(request).now().date())
    except cases.BadCase as exc:
        return _new_page(request, form, plain(request, exc, _PLAIN), status=400)
    write = serving.audit_in_transaction(request, 303)
    async with db.acquire() as conn, conn.transaction():
        case = await cases.open_case(
            conn,
            kind="police" if kind == "police" else "data_subject",
            requester=requester,
            received_on=received,
            opened_by=who.user_id,
        )
        detail = {"case_id": case.id, "kind": case.kind, "requester": requester, "received_on": received}
        await write(conn, detail | {"due_on": case.due_on})
    return web.Response(status=303, headers={"Location": f"/dsar/{case.id}"})


async def _status(request: web.Request) -> web.StreamResponse:
    """Answered, refused (with the reason) or open again."""
    case = await case_of(request)
    form = await request.post()
    status, note = str(form.get("status", "")), form.get("note")
    try:
        if status not in cases.STATUSES:
            raise cases.BadCase("status: open, answered or refused")
        text = cases.text(note, "note", required=status == "refused")
    except cases.BadCase as exc:
        return await dsar_case.case_page(request, case, error=plain(request, exc, _PLAIN), status=400)
    chosen: cases.Status = "open" if status == "open" else "answered" if status == "answered" else "refused"
    await _change(
        request,
        case,
        {"status": status, "note": text},
        lambda db: cases.set_status(db, case.id, chosen, text),
    )
    return web.Response(status=303, headers={"Location": f"/dsar/{case.id}"})


async def _extend(request: web.Request) -> web.StreamResponse:
    """GDPR Art. 12(3): two further months, the requester told why."""
    case = await case_of(request)
    form = await request.post()
    if case.status != "open":
        error = _(request, "The case is closed: reopen it first.")
        return await dsar_case.case_page(request, case, error=error, status=409)
    try:
        reason = cases.text(form.get("reason"), "reason")
    except cases.BadCase as exc:
        return await dsar_case.case_page(request, case, error=plain(request, exc, _PLAIN), status=400)
    assert reason is not None
    await _change(request, case, {"extension_reason": reason}, lambda db: cases.extend(db, case.id, reason))
    return web.Response(status=303, headers={"Location": f"/dsar/{case.id}"})


async def _change(
    request: web.Request, case: cases.Case, detail: Mapping[str, Any], run: Callable[[Db], Awaitable[None]]
) -> None:
    """``run`` on the case and its audit row in one transaction."""
    write = serving.audit_in_transaction(request, 303)
    async with serving.pool(request).acquire() as conn, conn.transaction():
        await run(conn)
        await write(conn, detail)
