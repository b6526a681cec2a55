"""A fake of Asterisk's ARI that speaks the real wire protocol (HTTP + websocket) on 127.0.0.1.

For what a real Asterisk cannot do on demand (docs/testing.md#real-parts-first):
malformed frames, dropped sockets, refused
connects, failing REST calls, and event rates beyond Asterisk's capacity for benchmarks.

    async with FakeAri(username="callrec", password="p", app="callrec") as ari:
        client = AriClient(AriSettings(ari.url, "callrec", "p", "callrec"))
        ...
        await ari.wait_client()
        await ari.push({"type": "ChannelCreated", "channel": {...}})
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import orjson
from aiohttp import WSMsgType, encode_basic_auth, web

Event = dict[str, Any] | str | bytes
"""A dict is sent as JSON; str and bytes are sent as they are (bytes need not be valid UTF-8)."""


class FakeAri:
    """ARI on a free port: ``/ari/events`` (websocket), ``GET /ari/channels``,
    ``GET /ari/asterisk/info`` and ``PUT /ari/applications/{app}/eventFilter``, with Basic
    authentication like Asterisk."""

    def __init__(self, username: str = "callrec", password: str = "p", app: str = "callrec") -> None:
        self.username = username
        self.password = password
        """Checked on every request, so a test may change it while a client is connected."""
        self.app = app
        self.url = ""
        """``http://127.0.0.1:PORT``, set on entering the context."""
        self.connects: list[dict[str, Any]] = []
        """Every websocket connect attempt: ``query``, ``headers``, ``url`` and the ``status`` answered."""
        self.channels: list[dict[str, Any]] = []
        """Served by ``GET /ari/channels``."""
        self.startup_time = "2026-11-22T10:00:00.000+0000"
        """``status.startup_time`` in ``GET /ari/asterisk/info``; change it to play an Asterisk restart."""
        self.event_filters: list[Any] = []
        """Bodies of every eventFilter PUT, including refused ones."""
        self.event_filter_status = 200
        """Answer to eventFilter PUTs; 403 is what a read_only ARI user gets."""
        self.refuse = False
        """While True, websocket connects are answered 503."""
        self.rest_status: int | None = None
        """If set, every REST request (after authentication) is answered with this status."""
        self.rest_stall = False
        """While True, REST requests get no answer until the server closes (to test timeouts)."""
        self._apps: set[str] = set()
        self._clients: dict[web.WebSocketResponse, web.BaseRequest] = {}
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeAri:
        app = web.Application()
        app.router.add_get("/ari/events", self._events)
        app.router.add_get("/ari/channels", self._channels)
        app.router.add_get("/ari/asterisk/info", self._asterisk_info)
        app.router.add_put("/ari/applications/{app}/eventFilter", self._event_filter)
        # A short shutdown_timeout: a stalled handler must not hold a test for aiohttp's 60 s.
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop serving (Asterisk gone); entering the context again is not supported."""
        self._closing.set()
        await self.drop_clients()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- controls for tests and benchmarks ------------------------------------------------------

    @property
    def client_count(self) -> int:
        return len(self._clients)

    async def push(self, event: Event, *, binary: bool = False) -> None:
        """Send one message to every connected client (a binary frame if ``binary``)."""
        await self.push_many((event,), binary=binary)

    async def push_many(self, events: Iterable[Event], *, binary: bool = False) -> None:
        """Send many messages to every connected client, encoding each once."""
        frames = [_encode(event) for event in events]
        opcode = WSMsgType.BINARY if binary else WSMsgType.TEXT
        for ws in list(self._clients):
            try:
                for frame in frames:
                    await ws.send_frame(frame, opcode)
            except ConnectionError:  # that client went away meanwhile: like Asterisk, carry on
                continue

    async def drop_clients(self, code: int | None = None) -> None:
        """Close every websocket: abruptly (TCP abort, like a crash) or, with ``code``, with a close frame."""
        clients, self._clients = self._clients, {}
        for ws, request in clients.items():
            if code is None:
                if request.transport is not None:
                    request.transport.abort()
            else:
                await ws.close(code=code)
        await self._notify()

    async def wait_client(self) -> None:
        """Return once at least one websocket client is connected."""
        await self._wait_for(lambda: bool(self._clients))

    async def wait_no_client(self) -> None:
        """Return once no websocket client is connected."""
        await self._wait_for(lambda: not self._clients)

    async def wait_connects(self, count: int) -> None:
        """Return once ``count`` websocket connects were attempted in all (accepted or not)."""
        await self._wait_for(lambda: len(self.connects) >= count)

    # -- the wire -------------------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        attempt: dict[str, Any] = {
            "query": dict(request.query),
            "headers": dict(request.headers),
            "url": str(request.url),
            "status": 101,
        }
        self.connects.append(attempt)
        refusal = self._refusal(request)
        if refusal is None and self.refuse:
            refusal = _error(503, "Service Unavailable")
        if refusal is None and not request.query.get("app"):
            refusal = _error(400, "Missing parameter app")
        if refusal is not None:
            attempt["status"] = refusal.status
            await self._notify()
            return refusal
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._apps.add(request.query["app"])
        self._clients[ws] = request
        await self._notify()
        try:
            async for _ in ws:  # clients send nothing; this only answers pings and the close
                pass
        finally:
            if self._clients.pop(ws, None) is not None:
                await self._notify()
        return ws

    async def _channels(self, request: web.Request) -> web.StreamResponse:
        refusal = await self._rest_refusal(request)
        if refusal is not None:
            return refusal
        return web.Response(body=orjson.dumps(self.channels), content_type="application/json")

    async def _asterisk_info(self, request: web.Request) -> web.StreamResponse:
        refusal = await self._rest_refusal(request)
        if refusal is not None:
            return refusal
        info = {
            "system": {"version": "22.10.0", "entity_id": "fa:ke:00:00:00:01"},
            "status": {"startup_time": self.startup_time, "last_reload_time": self.startup_time},
        }
        return web.Response(body=orjson.dumps(info), content_type="application/json")

    async def _event_filter(self, request: web.Request) -> web.StreamResponse:
        refusal = await self._rest_refusal(request)
        if refusal is not None:
            return refusal
        body = orjson.loads(await request.read())
        self.event_filters.append(body)
        app = request.match_info["app"]
        if app not in self._apps:
            return _error(404, "Application not found")
        if self.event_filter_status != 200:
            return _error(self.event_filter_status, "Forbidden")
        allowed = body.get("allowed", []) if isinstance(body, dict) else []
        return web.Response(
            body=orjson.dumps({"name": app, "events_allowed": allowed, "events_disallowed": []}),
            content_type="application/json",
        )

    def _refusal(self, request: web.BaseRequest) -> web.Response | None:
        if request.headers.get("Authorization") == encode_basic_auth(self.username, self.password):
            return None
        response = _error(401, "Authentication required")
        response.headers["WWW-Authenticate"] = 'Basic realm="Asterisk REST Interface"'
        return response

    async def _rest_refusal(self, request: web.BaseRequest) -> web.Response | None:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        if self.rest_stall:
            await self._closing.wait()
        if self.rest_status is not None:
            return _error(self.rest_status, "Fake failure")
        return None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait_for(self, predicate: Callable[[], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(predicate)


def _encode(event: Event) -> bytes:
    if isinstance(event, bytes):
        return event
    if isinstance(event, str):
        return event.encode()
    return orjson.dumps(event)


def _error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps({"message": message}), content_type="application/json"
    )
