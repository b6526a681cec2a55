"""The few ARI REST calls callrec makes, on the events websocket's HTTP session: the channel
list and Asterisk's info (to reconcile after a connect) and the application's event filter."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import structlog
from yarl import URL

log = structlog.get_logger("callrec.ari")


class AriUnavailable(Exception):
    """Not connected, request failed at transport level, or timed out."""


class AriAuthError(AriUnavailable):
    """401: wrong username or password."""


class AriRest:
    """REST requests under ``base``/ari, each bounded by ``request_timeout``."""

    def __init__(self, base: URL, app: str, request_timeout: float, event_types: tuple[str, ...]) -> None:
        self._channels_url = base / "ari" / "channels"
        self._info_url = base / "ari" / "asterisk" / "info"
        self._filter_url = base / "ari" / "applications" / app / "eventFilter"
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._event_types = event_types
        self._filter_refusal_logged = False

    async def channels(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        """``GET /ari/channels``: every live channel, for reconciling after a (re)connect."""
        channels = await self._get_json(session, self._channels_url)
        if not isinstance(channels, list) or not all(isinstance(c, dict) for c in channels):
            raise AriUnavailable("GET /ari/channels answered something other than a list of objects")
        return channels

    async def asterisk_info(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        """``GET /ari/asterisk/info``: its ``status.startup_time`` tells a reconnect after an
        Asterisk restart (every channel cut) from one after a network blip."""
        info = await self._get_json(session, self._info_url)
        if not isinstance(info, dict):
            raise AriUnavailable("GET /ari/asterisk/info answered something other than an object")
        return info

    async def put_event_filter(self, session: aiohttp.ClientSession) -> None:
        """Ask for ``event_types`` only; a refusal is logged (once) and costs only CPU."""
        body = orjson.dumps({"allowed": [{"type": t} for t in self._event_types]})
        try:
            status, _ = await self._request(session, "PUT", self._filter_url, body)
        except AriUnavailable as exc:
            log.warning("ari event filter not set; receiving every event", reason=str(exc))
            return
        if status == 403:
            # A read_only ARI user may not change its application: works, only costs more CPU.
            if not self._filter_refusal_logged:
                log.warning(
                    "ari event filter refused; receiving every event",
                    hint="give the ARI user read_only = no in ari.conf to cut Asterisk's load",
                )
                self._filter_refusal_logged = True
        elif not 200 <= status < 300:
            log.warning("ari event filter not set; receiving every event", status=status)

    # JSON of any shape: the callers check it.
    async def _get_json(self, session: aiohttp.ClientSession, url: URL) -> Any:
        status, body = await self._request(session, "GET", url)
        if status == 401:
            raise AriAuthError(f"GET {url.path}: authentication refused")
        if status != 200:
            raise AriUnavailable(f"GET {url.path} answered HTTP {status}")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise AriUnavailable(f"GET {url.path} answered invalid JSON") from exc

    async def _request(
        self, session: aiohttp.ClientSession, method: str, url: URL, body: bytes | None = None
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            async with session.request(
                method, url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AriUnavailable(f"{method} {url.path}: {type(exc).__name__} {exc}".rstrip()) from exc
