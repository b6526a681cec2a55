"""Asterisk Manager Interface client for actions (MixMonitor, StopMixMonitor), on asyncio streams.

Why not panoramisk (docs/architecture.md, "Dependencies"): it decoded each TCP read on its own,
so a UTF-8 character split across reads vanished; it never timed out an action; it re-sent
pending actions after a reconnect. Hence the three rules here: split frames on bytes before
decoding, give every action a deadline, and fail (never replay) whatever was pending when a
connection ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import structlog

from callrec.ops import metrics
from callrec.retry import Backoff

log = structlog.get_logger("callrec.ami")

FRAME_END = b"\r\n\r\n"
BANNER = b"Asterisk Call Manager/"
_RESERVED_KEYS = frozenset({"action", "actionid"})


class AmiError(Exception):
    """Asterisk answered the action with Response: Error."""

    def __init__(self, action: str, message: str) -> None:
        super().__init__(f"AMI {action} refused by Asterisk: {message}")
        self.action = action
        self.message = message


class AmiUnavailable(Exception):
    """Not connected, connection lost while waiting, or no answer within the timeout."""


class _LoginRefused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _NotAmi(Exception):
    """The peer's first line is not an AMI banner (wrong port?)."""


@dataclass(frozen=True)
class AmiSettings:
    """How to reach Asterisk's manager interface (a user in manager.conf)."""

    host: str
    """Address of Asterisk's AMI listener (manager.conf `bindaddr`)."""
    port: int
    """TCP port of the AMI listener (manager.conf `port`, usually 5038)."""
    username: str
    """The manager.conf section name of our user."""
    secret: str = field(repr=False)
    """That user's `secret`; never logged."""
    action_timeout: float = 5.0
    """Seconds to wait for an action's answer before giving up with AmiUnavailable."""
    connect_timeout: float = 5.0
    """Seconds allowed for TCP connect, banner and login together."""
    backoff_initial: float = 0.2
    """Upper bound of the first reconnect delay; it doubles per failed try (callrec.retry)."""
    backoff_max: float = 10.0
    """Cap of the reconnect delay."""
    max_frame_bytes: int = 65536
    """Frames longer than this are skipped, so a runaway peer cannot grow our memory."""
    keepalive_interval: float = 20.0
    """Seconds between Pings; an unanswered Ping means a dead peer (a host that vanished
    without closing the socket) and forces a reconnect."""


class ParsedFrame(NamedTuple):
    fields: dict[str, str]
    bad_lines: int
    bad_utf8: bool


def parse_frame(frame: bytes) -> ParsedFrame:
    """Decode one complete frame (already split on bytes, terminator removed)."""
    bad_utf8 = False
    try:
        text = frame.decode()
    except UnicodeDecodeError:
        bad_utf8 = True
        text = frame.decode(errors="replace")
    fields: dict[str, str] = {}
    bad_lines = 0
    for line in text.split("\r\n"):
        key, sep, value = line.partition(": ")
        if not sep or not key:
            bad_lines += bool(line)
            continue
        # Repeated keys (e.g. `Output:` of Command) are kept, one per line; "\n" is unambiguous
        # because a value on the wire can never contain it.
        fields[key] = f"{fields[key]}\n{value}" if key in fields else value
    return ParsedFrame(fields, bad_lines, bad_utf8)


def encode_action(name: str, fields: Mapping[str, str], action_id: str) -> bytes:
    """The wire form of an action; ValueError for anything that could inject a header."""
    _check_value("Action", name)
    for key, value in fields.items():
        if not key or ":" in key or key.lower() in _RESERVED_KEYS:
            raise ValueError(f"AMI {name}: field name {key!r} is not allowed")
        _check_value(key, value)
    lines = [f"Action: {name}", *(f"{k}: {v}" for k, v in fields.items()), f"ActionID: {action_id}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _check_value(key: str, value: str) -> None:
    if "\r" in key or "\n" in key or "\r" in value or "\n" in value:
        # The value itself stays out of the message: it may hold a caller's number.
        raise ValueError(f"AMI field {key!r} contains CR or LF")


def _protocol_error(kind: str, count: int = 1) -> None:
    metrics.PROTOCOL_ERRORS.labels(source="ami", kind=kind).inc(count)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "closed by Asterisk"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


class AmiClient:
    """One AMI connection; `run()` keeps it up, `action()` may be called from any task."""

    def __init__(self, settings: AmiSettings) -> None:
        self._settings = settings
        self._writer: asyncio.StreamWriter | None = None
        self._logged_in = asyncio.Event()
        # None as a result means "connection lost": a plain value cannot end up as an exception
        # that nobody retrieves when the waiter was cancelled in the same loop iteration.
        self._pending: dict[str, asyncio.Future[dict[str, str] | None]] = {}
        self._last_id = 0
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_max)

    @property
    def connected(self) -> bool:
        """True while logged in."""
        return self._logged_in.is_set()

    async def wait_connected(self) -> None:
        """Return once logged in (at once if already)."""
        await self._logged_in.wait()

    async def run(self) -> None:
        """Connect, log in and read answers; reconnect forever with capped, jittered backoff.

        Only cancellation ends it: the socket is closed and pending actions fail with AmiUnavailable."""
        s = self._settings
        metrics.CONNECTION_UP.labels(connection="ami").set(0)
        while True:
            try:
                await self._session()
            except _LoginRefused as exc:
                retry_in = self._backoff.next_delay()
                log.warning(
                    "ami login refused",
                    host=s.host,
                    port=s.port,
                    username=s.username,
                    message=exc.message,
                    retry_in=retry_in,
                )
            except (OSError, TimeoutError, asyncio.IncompleteReadError, _NotAmi) as exc:
                retry_in = self._backoff.next_delay()
                log.warning(
                    "ami connection failed", host=s.host, port=s.port, error=_describe(exc), retry_in=retry_in
                )
            except Exception:
                retry_in = self._backoff.next_delay()
                log.exception("ami session failed", host=s.host, port=s.port, retry_in=retry_in)
            metrics.RECONNECTS.labels(connection="ami").inc()
            await self._backoff.wait(retry_in)

    async def _session(self) -> None:
        s = self._settings
        async with asyncio.timeout(s.connect_timeout):
            reader, writer = await asyncio.open_connection(s.host, s.port, limit=s.max_frame_bytes)
        try:
            async with asyncio.timeout(s.connect_timeout):
                await self._login(reader, writer)
            self._writer = writer
            self._logged_in.set()
            self._backoff.reset()
            metrics.CONNECTION_UP.labels(connection="ami").set(1)
            log.info("ami connected", host=s.host, port=s.port)
            pinger = asyncio.create_task(self._keepalive(writer), name="ami-keepalive")
            try:
                while True:
                    self._dispatch(await self._read_frame(reader))
            finally:
                pinger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pinger
        finally:
            self._writer = None
            self._logged_in.clear()
            metrics.CONNECTION_UP.labels(connection="ami").set(0)
            pending, self._pending = self._pending, {}
            for answer in pending.values():
                if not answer.done():
                    answer.set_result(None)
            # abort, not close: nothing still buffered matters once the pending actions have failed,
            # and close() would wait for a peer that may have stopped reading.
            writer.transport.abort()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _keepalive(self, writer: asyncio.StreamWriter) -> None:
        while True:
            await asyncio.sleep(self._settings.keepalive_interval)
            try:
                await self.action("Ping", {})
            except AmiUnavailable:
                log.warning("ami keepalive unanswered; reconnecting", host=self._settings.host)
                writer.transport.abort()  # the read loop ends and run() reconnects
                return
            except AmiError:
                pass  # an answer, even a refusal, proves the peer is alive

    async def _login(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s = self._settings
        try:
            banner = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError:
            banner = b""
        if not banner.startswith(BANNER):
            _protocol_error("bad_banner")
            raise _NotAmi("the peer did not greet with an AMI banner")
        action_id = self._next_id()
        login = {"Username": s.username, "Secret": s.secret, "Events": "off"}
        writer.write(encode_action("Login", login, action_id))
        await writer.drain()
        while True:
            fields = await self._read_frame(reader)
            if "Response" in fields and fields.get("ActionID") == action_id:
                break
            self._dispatch(fields)  # FullyBooted may come first
        if fields["Response"] != "Success":
            raise _LoginRefused(fields.get("Message", ""))

    async def _read_frame(self, reader: asyncio.StreamReader) -> dict[str, str]:
        while True:
            try:
                frame = await reader.readuntil(FRAME_END)
            except asyncio.LimitOverrunError as exc:
                await self._skip_oversized(reader, exc.consumed)
                continue
            parsed = parse_frame(frame[: -len(FRAME_END)])
            if parsed.bad_utf8:
                _protocol_error("bad_utf8")
            if parsed.bad_lines:
                _protocol_error("bad_line", parsed.bad_lines)
                log.debug("ami lines without a key skipped", count=parsed.bad_lines)
            if parsed.fields:
                return parsed.fields

    async def _skip_oversized(self, reader: asyncio.StreamReader, consumed: int) -> None:
        _protocol_error("oversized")
        log.warning("ami frame oversized, skipped", limit=self._settings.max_frame_bytes)
        # Resynchronise on the next terminator; `consumed` bytes are known not to contain its start.
        while True:
            await reader.readexactly(consumed)
            try:
                await reader.readuntil(FRAME_END)
                return
            except asyncio.LimitOverrunError as exc:
                consumed = exc.consumed

    def _dispatch(self, fields: dict[str, str]) -> None:
        if "Response" not in fields:
            # Even with `Events: off` Asterisk sends a few events (FullyBooted); none is needed here.
            if "Event" not in fields:
                _protocol_error("unexpected")
                log.warning("ami frame neither response nor event", keys=sorted(fields)[:10])
            return
        action_id = fields.get("ActionID", "")
        answer = self._pending.get(action_id)
        if answer is not None:
            if not answer.done():
                answer.set_result(fields)
        elif self._is_ours(action_id):
            log.debug("ami late answer dropped", action_id=action_id)
        else:
            _protocol_error("unexpected")
            log.warning("ami response for an unknown action id", action_id=action_id[:40])

    def _next_id(self) -> str:
        self._last_id += 1
        return str(self._last_id)

    def _is_ours(self, action_id: str) -> bool:
        # The length check keeps int() away from huge digit strings (ValueError past 4300 digits).
        return (
            action_id.isascii()
            and action_id.isdigit()
            and len(action_id) < 19
            and (0 < int(action_id) <= self._last_id)
        )

    # The per-action timeout is part of the agreed API; it defaults to the settings' action_timeout.
    async def action(
        self,
        name: str,
        fields: Mapping[str, str],
        *,
        timeout: float | None = None,
    ) -> dict[str, str]:
        """Send one action and return the fields of its answer.

        AmiUnavailable after a timeout does not mean Asterisk did nothing: it may have carried the
        action out and answered too late. Nothing is ever re-sent."""
        return await self.send(name, fields, timeout=timeout)

    def send(
        self, name: str, fields: Mapping[str, str], *, timeout: float | None = None
    ) -> Awaitable[dict[str, str]]:
        """Write the action now, before returning; the result awaits its answer, as ``action()``.

        Not connected, or a bad field: raised here, nothing written. The write is not followed
        by a drain: an action is a few hundred bytes, and a sender that must not wait a loop
        turn (a MixMonitor at the answer, docs/performance.md#head-loss) cannot wait for
        flow control either; a peer that stops reading is caught by the answer's deadline."""
        writer = self._writer
        if writer is None or not self._logged_in.is_set():
            encode_action(name, fields, "0")  # a bad field is a bug: say so even when disconnected
            raise AmiUnavailable(f"AMI {name}: not connected to Asterisk")
        action_id = self._next_id()
        frame = encode_action(name, fields, action_id)
        answer: asyncio.Future[dict[str, str] | None] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = answer
        try:
            writer.write(frame)
        except (OSError, RuntimeError) as exc:
            self._pending.pop(action_id, None)
            raise AmiUnavailable(f"AMI {name}: connection to Asterisk lost") from exc
        limit = self._settings.action_timeout if timeout is None else timeout
        return self._answer(name, action_id, answer, limit)

    async def _answer(
        self, name: str, action_id: str, answer: asyncio.Future[dict[str, str] | None], limit: float
    ) -> dict[str, str]:
        try:
            async with asyncio.timeout(limit):
                response = await answer
        except TimeoutError:
            raise AmiUnavailable(f"AMI {name}: no answer from Asterisk within {limit} s") from None
        finally:
            self._pending.pop(action_id, None)
        if response is None:
            raise AmiUnavailable(f"AMI {name}: connection to Asterisk lost before the answer")
        if response.get("Response") == "Error":
            raise AmiError(name, response.get("Message", ""))
        return response

    async def mix_monitor(self, channel: str, file: str, *, options: str = "", command: str = "") -> None:
        """Start recording `channel` to `file`; AmiError if Asterisk refuses (e.g. no such channel)."""
        await self.send_mix_monitor(channel, file, options=options, command=command)

    def send_mix_monitor(
        self, channel: str, file: str, *, options: str = "", command: str = ""
    ) -> Awaitable[dict[str, str]]:
        """``mix_monitor`` whose action is written before this returns (``send``)."""
        # Asterisk joins File, Options and Command with commas into MixMonitor's arguments, so a
        # comma in the file name would silently shift the options (docs/asterisk.md,
        # "Commas in AMI arguments").
        if "," in file:
            raise ValueError("MixMonitor file name must not contain a comma")
        candidates = {"Channel": channel, "File": file, "Options": options, "Command": command}
        return self.send("MixMonitor", {k: v for k, v in candidates.items() if v})

    async def stop_mix_monitor(self, channel: str) -> None:
        """Stop recording `channel`; Asterisk closes the file before it answers (docs/asterisk.md,
        "StopMixMonitor at hangup")."""
        await self.action("StopMixMonitor", {"Channel": channel})

    async def mix_monitor_mute(self, channel: str, muted: bool) -> None:
        """Mute (``muted``) or unmute both directions of the MixMonitor on ``channel``: the file
        gets silence of the same length, so its timeline stays true
        (docs/asterisk.md#mixmonitormute-keeps-the-timeline)."""
        await self.action(
            "MixMonitorMute", {"Channel": channel, "Direction": "both", "State": "1" if muted else "0"}
        )
