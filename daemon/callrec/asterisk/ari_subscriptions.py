"""Lean mode: ARI events for the recorded channels only, one subscription per recording.

In the event mode the events websocket is opened with ``subscribeAll=true`` and Asterisk turns
every channel event of the PBX into JSON for callrec, about 68 per call after the filter
(docs/performance.md). In lean mode it is opened with ``subscribeAll=false``: the application
then gets nothing until it subscribes to an event source. Once the dialplan has asked for a
recording over AGI (recording/lean.py), callrec subscribes to that one channel
(``POST /ari/applications/{app}/subscription?eventSource=channel:{id}``) and learns of its
hangup and its end from the same events, through the same tracker, as the event mode.

The subscription is made while the AGI session still holds the channel in the dialplan, so the
channel exists when Asterisk takes the subscription and its ``ChannelDestroyed`` cannot have
been sent before. Asterisk answers 404/422 for a channel it does not know (any more).

It is an HTTP POST on the kept-alive session: the same request as a ``RESTRequest`` on the
events websocket (Asterisk 22.4+) was measured to cost Asterisk more than it saves callrec
(docs/asterisk.md#rest-over-the-events-websocket-costs-asterisk-more-than-http).
"""

from __future__ import annotations

import aiohttp
from yarl import URL

from callrec.asterisk.ari_rest import AriAuthError, AriUnavailable

LEAN_EVENT_TYPES = ("ChannelHangupRequest", "ChannelDestroyed")
"""All lean mode needs of the recorded channel: its hangup (StopMixMonitor) and its end (the
row). Without this eventFilter the recorded channel alone brought 26 events per call (its
variables, states, bridges), each one JSON that Asterisk builds and sends."""


async def subscribe_channel(
    session: aiohttp.ClientSession, base: URL, app: str, channel_id: str, timeout: float
) -> bool:
    """Subscribe ``app`` to ``channel_id``'s events; False if Asterisk has no such channel."""
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
    if status == 401:
        raise AriAuthError(f"POST {url.path}: authentication refused")
    if status in (404, 422):
        return False
    if not 200 <= status < 300:
        raise AriUnavailable(f"POST {url.path} answered HTTP {status}")
    return True
