"""Our own small ARI client: the events websocket plus the few REST calls callrec needs.

ari-py, aioari, asyncari and ari-client were rejected (docs/architecture.md, "Dependencies"):
broken on Python 3, no ``subscribeAll``, credentials in the URL, or a hang / busy loop after
Asterisk closes the socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Final, Literal, TypeAlias

import aiohttp
import orjson
import structlog
from aiohttp.http_websocket import WSMessageNoDecodeText
from yarl import URL

from callrec.asterisk.ari_rest import AriAuthError, AriRest, AriUnavailable
from callrec.asterisk.ari_subscriptions import subscribe_channel
from callrec.ops import metrics
from callrec.retry import Backoff

log = structlog.get_logger("callrec.ari")

# aiohttp's default, stated so that it is a decision: Asterisk's largest events (a channel snapshot
# with its channelvars) are a few KB. aiohttp answers a bigger message by closing the socket, and we
# then reconnect and reconcile like after any other loss.
MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024

# Handler failures are logged once per (event type, exception, place) and connection; a buggy handler
# would otherwise write a line for each of thousands of events per second. The cap bounds the memory a
# stream of odd event type names could take.
_MAX_LOGGED_HANDLER_ERRORS: Final = 100

_ERROR_KINDS: Final = (
    "bad_json",  # not JSON, or not UTF-8 (orjson checks both)
    "not_object",  # JSON, but not an object
    "no_type",  # an object without a string "type"
    "binary",  # a binary frame: ARI sends only text
    "handler_error",  # on_event raised
    "on_connect_error",  # on_connect raised
    "oversized",  # a message over MAX_MESSAGE_BYTES (the connection is dropped)
    "bad_frame",  # any other websocket protocol violation (the connection is dropped)
)

_Socket: TypeAlias = "aiohttp.ClientWebSocketResponse[Literal[False]]"


@dataclass(frozen=True)
class AriSettings:
    """How to reach ARI (``ari.conf`` + ``http.conf`` on the Asterisk side)."""

    url: str
    """Base URL of Asterisk's HTTP server, e.g. ``http://127.0.0.1:8088`` (without ``/ari``)."""
    username: str
    """ARI user from ari.conf."""
    password: str = field(repr=False)
    """Its password; sent only in the Authorization header, never logged."""
    app: str
    """Stasis application name the events websocket registers."""
    heartbeat: float = 10.0
    """Seconds between websocket pings; no pong within half of it counts as a lost connection."""
    request_timeout: float = 5.0
    """Seconds allowed for the websocket upgrade and for each REST request."""
    backoff_initial: float = 0.2
    """Ceiling of the first reconnect delay, in seconds."""
    backoff_max: float = 10.0
    """Largest reconnect delay, in seconds."""
    event_types: tuple[str, ...] = ()
    """If set, only these event types are asked for (eventFilter) after each connect."""
    skip_raw: Callable[[bytes], bool] | None = None
    """Events for which this is True are counted and dropped before decoding (the hot path)."""
    subscribe_all: bool = True
    """False in lean mode: events come only for the channels subscribed to one by one
    (asterisk/ari_subscriptions.py)."""


class AriClient:
    """ARI events websocket (reconnecting forever) and REST calls on the same HTTP session."""

    def __init__(self, settings: AriSettings) -> None:
        base = URL(settings.url)
        if base.user is not None or base.password is not None:
            raise ValueError("ari url must not contain credentials; set username and password instead")
        if not settings.app or "/" in settings.app:
            raise ValueError("ari app must be a non-empty name without '/'")
        self._settings = settings
        self._url = base.with_query(None).with_fragment(None)
        self._events_url = self._url / "ari" / "events"
        self._rest = AriRest(self._url, settings.app, settings.request_timeout, settings.event_types)
        self._headers = {"Authorization": aiohttp.encode_basic_auth(settings.username, settings.password)}
        self._up = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._running = False
        self._last_failure: str | None = None
        self._logged: set[object] = set()  # what was already logged on this connection
        self._gauge = metrics.CONNECTION_UP.labels(connection="ari")
        self._reconnects = metrics.RECONNECTS.labels(connection="ari")
        self._events = metrics.ARI_EVENTS  # a plain int per event (metrics.HotCounter)
        self._errors = {k: metrics.PROTOCOL_ERRORS.labels(source="ari", kind=k) for k in _ERROR_KINDS}

    @property
    def connected(self) -> bool:
        """True while the events websocket is open."""
        return self._up.is_set()

    async def wait_connected(self) -> None:
        """Return once the events websocket is open (at once if it is)."""
        await self._up.wait()

    async def run(
        self,
        on_event: Callable[[dict[str, Any]], None],
        on_connect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Keep the events websocket open until cancelled, calling ``on_event`` for each event.

        ``on_connect`` is awaited after each (re)connect, before any event of that connection is
        passed on: Asterisk keeps no events for a disconnected client, so it is the place to reconcile
        with :meth:`channels`. Events arriving meanwhile are held (the socket is still read, so
        Asterisk's ``websocket_write_timeout`` does not drop us) and delivered after it.
        """
        if self._running:
            raise RuntimeError("AriClient.run() is already running")
        self._running = True
        s = self._settings
        # Only cancellation ends the loop, so the backoff needs no stop event.
        backoff = Backoff(s.backoff_initial, s.backoff_max)
        try:
            # No session-wide total timeout: it would also bound the websocket's lifetime. The
            # upgrade and each REST request get their own request_timeout instead.
            async with aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=None)
            ) as session:
                self._session = session
                while True:
                    if await self._connect_and_read(session, on_event, on_connect):
                        backoff.reset()
                    await backoff.wait()
                    self._reconnects.inc()
        finally:
            self._session = None
            self._running = False
            self._mark_down()

    async def channels(self) -> list[dict[str, Any]]:
        """``GET /ari/channels``: every live channel, for reconciling after a (re)connect."""
        return await self._rest.channels(self._connected_session())

    async def asterisk_info(self) -> dict[str, Any]:
        """``GET /ari/asterisk/info``: its ``status.startup_time`` tells a reconnect after an
        Asterisk restart (every channel cut) from one after a network blip."""
        return await self._rest.asterisk_info(self._connected_session())

    async def subscribe_channel(self, channel_id: str) -> bool:
        """Lean mode: events of this one channel from now on; False if it no longer exists."""
        s = self._settings
        return await subscribe_channel(
            self._connected_session(), self._url, s.app, channel_id, s.request_timeout
        )

    def _connected_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or not self._up.is_set():
            raise AriUnavailable("ari is not connected")
        return session

    # -- connection ---------------------------------------------------------------------------

    async def _connect_and_read(
        self,
        session: aiohttp.ClientSession,
        on_event: Callable[[dict[str, Any]], None],
        on_connect: Callable[[], Awaitable[None]] | None,
    ) -> bool:
        """One connection's life. False if it could not be opened."""
        try:
            ws = await self._open(session)
        except AriAuthError:
            if self._last_failure != "auth":
                log.error(
                    "ari authentication refused",
                    username=self._settings.username,
                    url=str(self._url),
                    hint="check the ARI username and password (ari.conf); retrying",
                )
            self._last_failure = "auth"
            return False
        except AriUnavailable as exc:
            # Same reason again: the gauge already says we are down; one line per change is enough.
            if self._last_failure != str(exc):
                log.warning("ari connect failed", url=str(self._url), reason=str(exc), retrying=True)
            self._last_failure = str(exc)
            return False
        try:
            self._last_failure = None
            self._logged.clear()
            self._up.set()
            self._gauge.set(1)
            log.info("ari connected", url=str(self._url), app=self._settings.app)
            held = await self._prepare(session, ws, on_connect)
            reason = await self._read(ws, held, on_event)
            log.warning("ari connection lost", reason=reason, retrying=True)
        finally:
            self._mark_down()
            await ws.close()
        return True

    async def _open(self, session: aiohttp.ClientSession) -> _Socket:
        s = self._settings
        try:
            async with asyncio.timeout(s.request_timeout):
                return await session.ws_connect(
                    self._events_url,
                    params={"app": s.app, "subscribeAll": "true" if s.subscribe_all else "false"},
                    heartbeat=s.heartbeat,
                    timeout=aiohttp.ClientWSTimeout(ws_close=s.request_timeout),
                    max_msg_size=MAX_MESSAGE_BYTES,
                    # Raw bytes go straight to orjson, which checks UTF-8 itself: one copy less per
                    # event, and bad UTF-8 skips one message instead of closing the socket.
                    decode_text=False,
                )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                raise AriAuthError("websocket upgrade: authentication refused") from exc
            raise AriUnavailable(f"websocket upgrade answered HTTP {exc.status}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise AriUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise AriUnavailable(f"no websocket upgrade within {s.request_timeout} s") from exc

    def _mark_down(self) -> None:
        self._up.clear()
        self._gauge.set(0)

    async def _prepare(
        self,
        session: aiohttp.ClientSession,
        ws: _Socket,
        on_connect: Callable[[], Awaitable[None]] | None,
    ) -> list[WSMessageNoDecodeText]:
        """Set the event filter and await on_connect while holding the events that arrive."""
        if on_connect is None and not self._settings.event_types:
            return []
        held: list[WSMessageNoDecodeText] = []
        holder = asyncio.create_task(_hold(ws, held), name="ari-hold-events")
        try:
            if self._settings.event_types:
                await self._rest.put_event_filter(session)
            if on_connect is not None:
                try:
                    await on_connect()
                except Exception as exc:
                    self._errors["on_connect_error"].inc()
                    log.error("ari on_connect failed", **_describe(exc))
        finally:
            holder.cancel()
            # wait() rather than await: the holder's CancelledError must not look like ours.
            await asyncio.wait([holder])
        if not holder.cancelled():
            holder.result()  # re-raises anything unexpected
        return held

    # -- events (hot path) --------------------------------------------------------------------

    async def _read(
        self, ws: _Socket, held: list[WSMessageNoDecodeText], on_event: Callable[[dict[str, Any]], None]
    ) -> str:
        """Deliver events until the connection ends; return why it ended."""
        text, binary = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY
        for msg in held:
            if msg.type is text:
                self._deliver(msg.data, on_event)
            elif msg.type is binary:
                self._skip("binary")
            else:
                return self._end_reason(ws, msg)
        receive = ws.receive
        while True:
            msg = await receive()
            if msg.type is text:
                self._deliver(msg.data, on_event)
            elif msg.type is binary:
                self._skip("binary")
            else:  # CLOSE, CLOSING, CLOSED or ERROR: with autoping, aiohttp returns nothing else
                return self._end_reason(ws, msg)

    def _deliver(self, data: bytes, on_event: Callable[[dict[str, Any]], None]) -> None:
        skip = self._settings.skip_raw
        if skip is not None and skip(data):
            self._events.value += 1
            return
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._skip("bad_json")
            return
        if not isinstance(event, dict):
            self._skip("not_object")
            return
        event_type = event.get("type")
        if not isinstance(event_type, str):
            self._skip("no_type")
            return
        self._events.value += 1
        try:
            on_event(event)
        except Exception as exc:
            self._handler_failed(event_type, exc)

    def _skip(self, kind: str) -> None:
        self._errors[kind].inc()
        if kind not in self._logged:
            self._logged.add(kind)
            # Never the message itself: it may hold phone numbers.
            log.warning(
                "ari message skipped", kind=kind, note="further ones on this connection are only counted"
            )

    def _handler_failed(self, event_type: str, exc: Exception) -> None:
        self._errors["handler_error"].inc()
        details = _describe(exc)
        key = (event_type, details["error"], details["where"])
        if key not in self._logged and len(self._logged) < _MAX_LOGGED_HANDLER_ERRORS:
            self._logged.add(key)
            log.error("ari event handler failed", event_type=event_type[:64], **details)

    def _end_reason(self, ws: _Socket, msg: WSMessageNoDecodeText) -> str:
        if msg.type is aiohttp.WSMsgType.ERROR:
            err = msg.data
            if isinstance(err, aiohttp.WebSocketError):
                too_big = err.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
                self._skip("oversized" if too_big else "bad_frame")
                return f"websocket protocol error {err.code}"  # its text may quote the payload
            return f"{type(err).__name__}: {err}"
        return f"closed with code {ws.close_code}"


async def _hold(ws: _Socket, held: list[WSMessageNoDecodeText]) -> None:
    """Read ahead while on_connect runs, so Asterisk's writes never block on us."""
    while True:
        msg = await ws.receive()  # cancelling this loses nothing: aiohttp keeps unread messages
        held.append(msg)
        if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            return


def _describe(exc: BaseException) -> dict[str, str]:
    """Exception type and where it was raised, without its message or a traceback: both may quote
    the event (phone numbers), and rendered tracebacks may show local variables."""
    tb = exc.__traceback__
    where = "?"
    if tb is not None:
        while tb.tb_next is not None:
            tb = tb.tb_next
        code = tb.tb_frame.f_code
        where = f"{PurePath(code.co_filename).name}:{tb.tb_lineno} in {code.co_name}"
    return {"error": type(exc).__qualname__, "where": where}
