"""The DPO's data-subject search and export (docs/privacy.md#finding-a-data-subjects-calls)."""

from __future__ import annotations

import functools

from aiohttp import web

from callrec.access import policy as access
from callrec.access.policy import Action
from callrec.http import core
from callrec.http import middleware as serving
from callrec.web.site import _, page, reader


def add_routes(app: web.Application) -> None:
    add = functools.partial(serving.add_route, app)
    add("GET", "/dsar", _dsar_form, "page", html=True)
    add("POST", "/dsar", _dsar, "dsar_search", html=True)
    add("POST", "/export", _export, "export", html=True)


async def _dsar_form(request: web.Request) -> web.StreamResponse:
    who = serving.principal(request)
    await access.grant(serving.pool(request), who, Action.DSAR_SEARCH)
    title = _(request, "Data-subject request")
    return page(request, "dsar.html", title, at=None, window_minutes=30, result=None, case_reference="")


async def _dsar(request: web.Request) -> web.StreamResponse:
    who = serving.principal(request)
    settings = serving.settings(request)
    write = serving.audit_in_transaction(request)
    r = reader(request)

    async def read() -> core.Fields:
        form = await request.post()
        fields = dict(form)
        fields["at"] = r.read_local(str(form.get("at", "")))  # the time the caller gave, in the DPO's zone
        return fields

    found = await core.dsar_search(
        serving.pool(request),
        who,
        settings.number_hmac_key,
        read,
        per_hour=settings.dsar_searches_per_hour,
        audit=write,
    )
    return page(
        request,
        "dsar.html",
        _(request, "Data-subject request"),
        at=found.at,
        window_minutes=found.window_minutes,
        result=found.result,
        case_reference=found.audit["case_reference"],
    )


async def _export(request: web.Request) -> web.StreamResponse:
    async def read() -> core.Fields:
        form = await request.post()
        # One checkbox per recording, each named recording_id; the API takes a list.
        return {"recording_ids": form.getall("recording_id", [])} | {
            name: form.get(name) for name in ("recipient", "legal_basis", "case_reference")
        }

    exported = await core.export(request, serving.principal(request), read)
    return await core.send_export(request, exported)
