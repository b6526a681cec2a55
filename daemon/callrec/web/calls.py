"""Finding a call and listening to it: the list at / and a recording's own page.

The list opens on the last seven days, pages through its matches with their total, sorts by
any column and filters by every field a person remembers of a call (docs/web.md#finding-a-call).
Its state is all in the URL (GET), so Back and a bookmark bring the same list again. The
times typed are read in the reader's zone (web/render.py), then searched through the same
core as the API (http/core.py): the same reach, the same audit row.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from callrec.access import policy as access
from callrec.access.people import Principal, agents_in_reach, shown_names
from callrec.access.policy import Action
from callrec.http import core
from callrec.http import middleware as serving
from callrec.http.middleware import BadParam, recording_id
from callrec.recording.facts import Recording
from callrec.web import holds, live, render
from callrec.web.site import N_, _, page, reader

PAGE_SIZE = 25
RANGES = {"today": 0, "7d": 7, "30d": 30}
"""Quick ranges: days before today's midnight in the reader's zone."""
_FIELDS = (
    "range", "from", "to", "register", "agent", "service_number", "direction",
    "min_minutes", "max_minutes", "number", "on_hold", "sort",
)  # fmt: skip


def add_routes(app: web.Application) -> None:
    add = functools.partial(serving.add_route, app)
    add("GET", "/", _index, "page", public=True, html=True)
    add("GET", "/recordings/{id}", _recording, "view", html=True)


@dataclass(frozen=True, slots=True)
class Listing:
    """One page of the list, with what its links need."""

    form: Mapping[str, str]
    """The fields as the person typed them (kept on the page, also after an error)."""
    recordings: list[Recording]
    total: int
    page: int
    pages: int
    sort: str

    def first(self) -> int:
        return 0 if not self.total else (self.page - 1) * PAGE_SIZE + 1

    def last(self) -> int:
        return min(self.page * PAGE_SIZE, self.total)

    def url(self, **changes: Any) -> str:
        """This list with ``changes`` (a page, a sort); a change of sort starts at page 1."""
        values = {k: v for k, v in self.form.items() if v} | {"sort": self.sort}
        if "sort" in changes:
            values.pop("page", None)
        values |= {k: str(v) for k, v in changes.items()}
        return "/?" + urlencode(values)

    def sort_url(self, column: str) -> str:
        """Ascending first, descending when already ascending (the start: newest first)."""
        if column == "started":
            return self.url(sort="started" if self.sort == "-started" else "-started")
        return self.url(sort="-" + column if self.sort == column else column)

    def sorted_by(self, column: str) -> str:
        """aria-sort of the column's header."""
        if self.sort.removeprefix("-") != column:
            return "none"
        return "descending" if self.sort.startswith("-") else "ascending"


def _minutes(form: Mapping[str, str], name: str) -> str:
    text = form.get(name, "").strip().replace(",", ".")
    if not text:
        return ""
    try:
        return str(float(text) * 60)
    except ValueError:
        raise BadParam(f"{name}: expected a number of minutes") from None


def _query(r: render.Reader, form: Mapping[str, str]) -> dict[str, str]:
    """The page's fields as http/core.py's search reads them."""
    query = {
        name: form.get(name, "").strip()
        for name in ("register", "agent", "service_number", "direction", "number", "on_hold", "sort")
    }
    query["from"], query["to"] = r.read_local(form.get("from", "")), r.read_local(form.get("to", ""))
    query["min_seconds"], query["max_seconds"] = _minutes(form, "min_minutes"), _minutes(form, "max_minutes")
    return query


async def _index(request: web.Request) -> web.StreamResponse:
    who = request[serving.PRINCIPAL]
    if who is None:
        from callrec.web.signin import sign_in_page

        return sign_in_page(request)
    request[serving.ENTRY].action = Action.SEARCH.value
    form = {name: request.query.get(name, "") for name in _FIELDS}
    if not any(form.values()):
        form["range"] = "7d"  # on arrival: the last seven days
    r = reader(request)
    if form["range"] in RANGES:
        # A quick range fills the fields, so the next search from this form keeps it.
        form["from"], form["to"] = r.local_input(render.days_ago(r, RANGES[form["range"]])), ""
    try:
        number = int(request.query.get("page") or 1)
    except ValueError:
        number = 1
    number = max(1, min(number, 400_000))
    db = serving.pool(request)
    agents = await _agent_choices(db, who)
    try:
        query = _query(r, form) | {"limit": str(PAGE_SIZE), "offset": str((number - 1) * PAGE_SIZE)}
        found = await core.search(db, who, query)
    except BadParam as exc:
        # The form stays as typed, with the one field to fix named in plain words.
        return _list_page(request, who, form, None, agents, error=_plain(request, str(exc)), status=400)
    request[serving.ENTRY].detail.update(found.audit)
    pages = max(1, math.ceil(found.total / PAGE_SIZE))
    listing = Listing(form, found.recordings, found.total, number, pages, found.sort)
    return _list_page(request, who, form, listing, agents)


_PLAIN = {
    "from": N_("The start time is not a date and time we can read."),
    "to": N_("The end time is not a date and time we can read."),
    "number": N_("A number fragment holds only digits, + and *."),
    "min_minutes": N_("The shortest duration must be a number of minutes."),
    "max_minutes": N_("The longest duration must be a number of minutes."),
    "direction": N_("Pick a direction from the list."),
}


def _plain(request: web.Request, message: str) -> str:
    """A field's error in plain words, in the reader's language."""
    field = message.partition(":")[0]
    return _(request, _PLAIN.get(field, _OTHER))


_OTHER = N_("One of the fields could not be used: check it and search again.")


async def _agent_choices(db: Any, who: Principal) -> list[tuple[str, str]]:
    """The agents a person may pick (by shown name) when searching: a supervisor their team,
    the DPO everyone; an agent and the admin none."""
    if who.role not in ("supervisor", "dpo"):
        return []
    g = await access.grant(db, who, Action.SEARCH)
    return await agents_in_reach(db, g.agent_ids)


def _list_page(
    request: web.Request,
    who: Principal,
    form: Mapping[str, str],
    listing: Listing | None,
    agents: list[tuple[str, str]],
    *,
    error: str = "",
    status: int = 200,
) -> web.Response:
    settings = serving.settings(request)
    lang = reader(request).language
    registers = {name: reg.title(lang) for name, reg in sorted(settings.registers.items())}
    return page(
        request,
        "calls.html",
        _(request, "Recordings"),
        status=status,
        form=form,
        listing=listing,
        agents=agents,
        registers=registers,
        ranges=RANGES,
        full=access.VIEWS[who.role] == "full",
        may_play=access.allowed(who.role, Action.PLAY),
        live=live.own_call(request),
        error=error,
    )


async def _recording(request: web.Request) -> web.StreamResponse:
    who = serving.principal(request)
    rec = await core.view(serving.pool(request), who, recording_id(request))
    settings = serving.settings(request)
    reg = settings.registers.get(rec.register_name)
    title = reg.title(reader(request).language) if reg else rec.register_name
    names = await shown_names(serving.pool(request), [a["agent"] for a in rec.agents])
    return page(
        request,
        "recording.html",
        _(request, "Recording"),
        rec=rec,
        register_title=title,
        agent_names=names,
        full=access.VIEWS[who.role] == "full",
        may_play=access.allowed(who.role, Action.PLAY),
        back=_back(request),
        **await holds.actions(request, who, rec),  # the DPO's hold, release, erase (web/holds.py)
    )


def _back(request: web.Request) -> str:
    """The list the person came from, when it was ours (the Referer is not sent: no-referrer)."""
    back = request.query.get("back", "/")
    return back if back.startswith("/?") or back == "/" else "/"
