"""Lean mode: ARI events for the recorded channels only, one subscription per recording.

In the event mode the events websocket is opened with ``subscribeAll=true`` and Asterisk turns
every channel event of the PBX into JSON for callrec, about 68 per call after the filter
(docs/performance.md). In lean mode it is opened with ``subscribeAll=false``: the application
then gets nothing until it subscribes to an event source. Once the dialplan has asked for a
recording over AGI (recording/lean.py), callrec subscribes to that one channel
(``POST applications/{app}/subscription?eventSource=channel:{id}``) and learns of its hangup
and its end from the same events, through the same tracker, as the event mode.

The subscription is made while the AGI session still holds the channel in the dialplan, so the
channel exists when Asterisk takes the subscription and its ``ChannelDestroyed`` cannot have
been sent before. Asterisk answers 404/422 for a channel it does not know (any more).

Where Asterisk can (20.14, 21.9, 22.4 and later: docs/asterisk.md#rest-over-the-events-websocket),
the request goes as a ``RESTRequest`` message on the events websocket itself and its answer
comes back as a ``RESTResponse`` among the events: no HTTP request for Asterisk to parse and
authenticate, and none for aiohttp to build, once per recorded call. Otherwise, and while the
events of a new connection are still held for the reconciliation, it is a plain HTTP POST.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Final, Literal, TypeAlias

import aiohttp
import orjson
from yarl import URL

from callrec.asterisk.ari_rest import AriAuthError, AriUnavailable

REST_RESPONSE: Final = "RESTResponse"
LEAN_EVENT_TYPES = ("ChannelHangupRequest", "ChannelDestroyed", REST_RESPONSE)
"""All lean mode needs of the recorded channel: its hangup (StopMixMonitor) and its end (the
row). Without this eventFilter the recorded channel alone brought 26 events per call (its
variables, states, bridges), each one JSON that Asterisk builds and sends. The filter applies to
``RESTResponse`` too (verified on 22.10): left out, every answer over the websocket is dropped."""

_Socket: TypeAlias = "aiohttp.ClientWebSocketResponse[Literal[False]]"
_VERSION: Final = re.compile(r"^(\d+)\.(\d+)")
# The first release of each branch with REST over the websocket (Asterisk's ChangeLogs).
_FIRST_WITH_WS_REST: Final = {20: 14, 21: 9, 22: 4}


def rest_over_websocket(version: str) -> bool:
    """Whether an Asterisk of this ``system.version`` takes REST requests on the websocket."""
    m = _VERSION.match(version)
    if m is None:
        return False
    major, minor = int(m[1]), int(m[2])
    return major > 22 or minor >= _FIRST_WITH_WS_REST.get(major, 1_000)


def _answer(status: int, what: str) -> bool:
    if status == 401:
        raise AriAuthError(f"{what}: authentication refused")
    if status in (404, 422):
        return False
    if not 200 <= status < 300:
        raise AriUnavailable(f"{what} answered HTTP {status}")
    return True


async def subscribe_channel(
    session: aiohttp.ClientSession, base: URL, app: str, channel_id: str, timeout: float
) -> bool:
    """Over HTTP: subscribe ``app`` to ``channel_id``'s events; False if Asterisk has no such channel."""
    url = base / "ari" / "applications" / app / "subscription"
    url = url.with_query(eventSource=f"channel:{channel_id}")
    try:
        async with session.post(
            url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
        ) as resp:
            status = resp.status
            await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise AriUnavailable(f"POST {url.path}: {type(exc).__name__}") from exc
    return _answer(status, f"POST {url.path}")


class WebsocketRest:
    """Subscriptions as ``RESTRequest`` messages on the events websocket, answered by
    ``RESTResponse`` messages that the read loop hands to :meth:`take`."""

    def __init__(self, app: str) -> None:
        self._path = f"applications/{app}/subscription"
        self._ws: _Socket | None = None
        self._pending: dict[str, asyncio.Future[int]] = {}
        self._next = 0

    @property
    def ready(self) -> bool:
        return self._ws is not None

    def attach(self, ws: _Socket) -> None:
        """The read loop runs on ``ws``: answers will reach :meth:`take`."""
        self._ws = ws

    def detach(self) -> None:
        """The connection is gone, and with it every answer still to come."""
        self._ws = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(AriUnavailable("ari connection lost before the answer"))
        self._pending.clear()

    async def subscribe_channel(self, channel_id: str, timeout: float) -> bool:
        ws = self._ws
        if ws is None:
            raise AriUnavailable("ari websocket not reading")
        self._next += 1
        request_id = str(self._next)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        request = {
            "type": "RESTRequest",
            "request_id": request_id,
            "method": "POST",
            "uri": f"{self._path}?eventSource=channel:{channel_id}",
        }
        try:
            await ws.send_str(orjson.dumps(request).decode())
            async with asyncio.timeout(timeout):
                status = await future
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
            raise AriUnavailable(f"POST {self._path} over the websocket: {type(exc).__name__}") from exc
        finally:
            self._pending.pop(request_id, None)
        return _answer(status, f"POST {self._path}")

    def take(self, message: dict[str, Any]) -> None:
        """A ``RESTResponse``: the answer to one of ours (any other is ignored)."""
        future = self._pending.get(str(message.get("request_id")))
        status = message.get("status_code")
        if future is not None and not future.done():
            future.set_result(status if isinstance(status, int) else 0)
