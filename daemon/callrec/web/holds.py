"""The DPO's hold, release and erase buttons on a recording's page (docs/web.md#data-subject-requests,
docs/retention.md#legal-hold-and-erasure).

Each is a form with a required reason (a hold also an optional end), a POST that redirects
(303) back to the recording, and the same functions as the API and the command line
(retention/holds.py): the change and its audit row commit together. A refusal shows the
recording's page again with the reason as typed and the error in plain words.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from callrec.access import policy as access
from callrec.access.people import Principal
from callrec.access.policy import Action
from callrec.http import middleware as serving
from callrec.http.middleware import BadParam, recording_id, time_param
from callrec.privacy import redact
from callrec.recording.facts import Recording
from callrec.retention import holds
from callrec.web.site import N_, _, page, reader

_FORM = web.RequestKey("hold_form", dict)
"""A refused form as typed, for the page shown again (``actions``)."""


def add_routes(app: web.Application) -> None:
    add = functools.partial(serving.add_route, app)
    add("POST", "/recordings/{id}/hold", _hold, "hold", html=True)
    add("POST", "/recordings/{id}/release", _release, "release", html=True)
    add("POST", "/recordings/{id}/erase", _erase, "erase", html=True)
    add("GET", "/recordings/{id}/erased", _erased, "page", html=True)


async def actions(request: web.Request, who: Principal, rec: Recording) -> dict[str, Any]:
    """What the recording's page shows of holds for this person: for the DPO the hold's
    reason, by whom, since and until, and the three forms; for anyone else nothing."""
    if not access.allowed(who.role, Action.HOLD):
        return {"actions": None}
    row = await serving.pool(request).fetchrow(
        "SELECT r.hold_reason, coalesce(u.display_name, r.hold_by) AS hold_by, r.hold_at, r.hold_until"
        " FROM recordings r LEFT JOIN users u ON u.name = r.hold_by WHERE r.id = $1",
        rec.id,
    )
    typed: Mapping[str, str] = request.get(_FORM) or {}
    return {"actions": {"hold": dict(row) if row is not None and rec.legal_hold else None, "form": typed}}


_PLAIN = {
    "reason": N_("Give the reason, in one line."),
    "until": N_("The end of the hold must be a date and time in the future."),
    "confirm": N_("Tick the box to confirm that the recording is destroyed for good."),
    "on_hold": N_("The recording is on legal hold: release it before erasing it."),
}


async def _again(request: web.Request, form: Mapping[str, str], what: str) -> web.StreamResponse:
    """The recording's page again, the form as typed and ``what`` went wrong in plain words."""
    from callrec.web import calls  # calls.py renders the recording's page and imports this module

    request[_FORM] = dict(form) | {"error": _(request, _PLAIN[what])}
    resp = await calls._recording(request)
    resp.set_status(409 if what == "on_hold" else 400)
    return resp


async def _form(request: web.Request, action: Action) -> tuple[uuid.UUID, dict[str, str]]:
    """The DPO's grant and the recording in reach, then the form (``action`` names it)."""
    db = serving.pool(request)
    g = await access.grant(db, serving.principal(request), action)
    rid = recording_id(request)
    await access.get(db, g, rid)
    form = {k: str(v) for k, v in (await request.post()).items() if k in ("reason", "until", "confirm")}
    return rid, form | {"action": action.value}


def _back(rid: uuid.UUID) -> web.Response:
    return web.Response(status=303, headers={"Location": f"/recordings/{rid}"})


def _reason(request: web.Request, form: Mapping[str, str]) -> str | None:
    reason = " ".join(form.get("reason", "").split())
    if not reason or len(reason) > 300:
        return None
    request[serving.ENTRY].detail["reason"] = redact(reason)
    return reason


async def _hold(request: web.Request) -> web.StreamResponse:
    rid, form = await _form(request, Action.HOLD)
    reason = _reason(request, form)
    if reason is None:
        return await _again(request, form, "reason")
    try:
        until = time_param(reader(request).read_local(form.get("until", "")), "until")
        request[serving.ENTRY].detail["until"] = until
        await holds.hold(
            serving.pool(request),
            rid,
            reason=reason,
            by=serving.principal(request).name,
            until=until,
            audit=serving.audit_in_transaction(request, 303),
        )
    except (BadParam, ValueError) as exc:
        return await _again(request, form, "reason" if str(exc).startswith("reason") else "until")
    return _back(rid)


async def _release(request: web.Request) -> web.StreamResponse:
    rid, form = await _form(request, Action.RELEASE)
    if _reason(request, form) is None:
        return await _again(request, form, "reason")
    write = serving.audit_in_transaction(request, 303)
    await holds.release(serving.pool(request), rid, by=serving.principal(request).name, audit=write)
    return _back(rid)


async def _erase(request: web.Request) -> web.StreamResponse:
    rid, form = await _form(request, Action.ERASE)
    reason = _reason(request, form)
    if reason is None:
        return await _again(request, form, "reason")
    if form.get("confirm") != "1":
        return await _again(request, form, "confirm")
    archive = serving.archive(request)
    try:
        await holds.erase(
            serving.pool(request),
            serving.settings(request),
            rid,
            reason=reason,
            by=serving.principal(request).name,
            store=archive.store if archive is not None else None,
            audit=serving.audit_in_transaction(request, 303),
        )
    except holds.RecordingOnHold:
        return await _again(request, form, "on_hold")
    return web.Response(status=303, headers={"Location": f"/recordings/{rid}/erased"})


async def _erased(request: web.Request) -> web.StreamResponse:
    await access.grant(serving.pool(request), serving.principal(request), Action.ERASE)
    return page(request, "erased.html", _(request, "Recording erased"), rid=recording_id(request))
