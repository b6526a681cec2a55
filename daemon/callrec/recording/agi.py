"""AGI mode: a FastAGI endpoint that starts MixMonitor while the call waits, so nothing is lost.

The event mode starts MixMonitor from outside the call once ARI reports the answer, and loses
the audio of that round trip (bench/README.md). In AGI mode the dialplan asks instead, at
the point of answer, and goes on only once recording runs:

    same => n,Set(__CALLREC_REGISTER=customer-service)
    same => n,AGI(agi://127.0.0.1:4573/record)
    same => n,Answer()

FastAGI (res_agi): Asterisk connects, sends the channel's ``agi_*`` environment as
``name: value`` lines and a blank line, then runs our commands one line at a time, answering
each with one line ``200 result=N [(data)]`` (``5xx`` for errors; a line ``HANGUP`` may come
in between when the channel hangs up). The AGI application returns, and the dialplan goes on,
when we close the connection. Verified on Asterisk 22.10: ``EXEC MixMonitor`` answers
``200 result=0`` once the audiohook is attached, ``-2`` if the application is missing.

The register rules are the event mode's (``CallTracker.claim``); MixMonitor runs through AGI
on the channel itself, with no AMI hop; stop, file and row then go the usual way. Commands are
sent one at a time, never pipelined: res_agi waits for the socket to be readable before each
line it reads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from typing import Final

import structlog

from callrec.asterisk.ari_events import CONTRACT_VARS, VAR_AGENT, ChannelSnapshot
from callrec.recording.lean import Lean, claim_and_record
from callrec.recording.mixmonitor import AttachUnavailable, StartRefused
from callrec.recording.recorder import Recorder
from callrec.recording.tracker import CallTracker, local_twin

log = structlog.get_logger("callrec.agi")

SCRIPT: Final = "record"
"""The request path at the answer: ``agi://host:port/record``."""
ANSWERED: Final = "answered"
"""Lean mode: the far end answered (Dial's ``U()``, Queue's gosub; recording/lean.py)."""
_ENV_LINES: Final = 128
_READ_LIMIT: Final = 65536
"""Bytes the whole environment (a 1,024-digit caller ID included) or one answer may take."""
_REQUEST_TIMEOUT: Final = 10.0
"""Seconds one request may take; past it the call goes on (unrecorded unless the event mode
catches it). Far above the milliseconds it takes, so only a stuck daemon ever hits it."""

# Every value comes back base64-encoded: a value from the dialplan (a caller ID) may hold a
# newline or anything else that would break the one-line answers. The base64 alphabet has no
# comma, so one GET FULL VARIABLE brings them all in one round trip.
_FIELDS: Final = (
    "CHANNEL(state)",
    "CHANNEL(linkedid)",
    "CALLERID(num)",
    *sorted(CONTRACT_VARS),
)
# A Local channel's name as Asterisk makes it from a dialplan extension; anything else (a
# comma, a brace, a space) is never put into a command.
_SAFE_NAME: Final = re.compile(r"^Local/[A-Za-z0-9_.@+-]{1,200};[12]$")


def _other_agent_fields(name: str) -> tuple[str, ...]:
    """Lean mode, ``answered`` on a channel without CALLREC_AGENT: where else the agent is. The
    agent context set it on the other half of this Local channel (inbound: Dial's ``U()`` and
    Queue's gosub run on ``;1``), or on the call's first channel, the agent's phone (outbound;
    MASTER_CHANNEL is the channel named by the linkedid)."""
    twin = local_twin(name)
    master = f"${{MASTER_CHANNEL({VAR_AGENT})}}"
    if twin is not None and _SAFE_NAME.match(twin):
        return (f"${{IMPORT({twin},{VAR_AGENT})}}", master)
    return (master,)


class _AgiError(Exception):
    """Asterisk answered a command with something other than ``200``."""


class AgiServer:
    """Serves FastAGI requests on ``listen`` until cancelled."""

    def __init__(
        self, listen: tuple[str, int], tracker: CallTracker, recorder: Recorder, lean: Lean | None = None
    ) -> None:
        self._listen = listen
        self._tracker = tracker
        self._recorder = recorder
        self._lean = lean
        self._sessions: set[asyncio.Task[None]] = set()
        self._ready = asyncio.Event()

    async def wait_listening(self) -> None:
        await self._ready.wait()

    async def run(self) -> None:
        host, port = self._listen
        server = await asyncio.start_server(self._accept, host, port, limit=_READ_LIMIT)
        log.info("agi listening", host=host, port=port)
        self._ready.set()
        try:
            async with server:
                await server.serve_forever()
        finally:
            for task in list(self._sessions):
                task.cancel()
            await asyncio.gather(*self._sessions, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        session = _Session(reader, writer)
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                await session.serve(self._tracker, self._recorder, self._lean)
        except TimeoutError:
            log.error("agi request took too long; the call went on", timeout=_REQUEST_TIMEOUT)
        except Exception as exc:
            # One bad session must never take the server down. No message: it may quote the peer.
            log.warning("agi session failed", error=type(exc).__name__)
        finally:
            self._sessions.discard(task)
            # Closing is the answer: the AGI application returns and the dialplan goes on.
            session.open = False
            writer.close()


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.open = True

    async def serve(self, tracker: CallTracker, recorder: Recorder, lean: Lean | None = None) -> None:
        env = await self._environment()
        script = env.get("agi_network_script", "").strip("/").partition("?")[0]
        channel_id, name = env.get("agi_uniqueid", ""), env.get("agi_channel", "")
        served = script == SCRIPT or (script == ANSWERED and lean is not None)
        if not served or not channel_id or not name:
            log.warning("agi request not understood; ignored", script=script[:40])
            return
        if script == ANSWERED:
            assert lean is not None
            # The other agent fields ride on the same GET FULL VARIABLE: one round trip.
            snap, found = await self._snapshot(channel_id, name, also=_other_agent_fields(name))
            agent = next((a for a in found if a), "")
            await lean.answered(snap, env.get("agi_arg_1", ""), self._mixmonitor, agent)
            return
        snap, _ = await self._snapshot(channel_id, name)
        recording = await claim_and_record(tracker, recorder, snap, self._mixmonitor)
        if lean is not None:
            await lean.settle(snap, recording)
        log.debug("agi request served", channel=channel_id, recording=recording)

    async def _environment(self) -> dict[str, str]:
        # res_agi writes ``name: value\n`` lines and one empty line: read in one go, not a
        # read per line (two sessions of ~25 lines per lean call; docs/performance.md).
        raw = await self._reader.readuntil(b"\n\n")
        lines = raw.decode(errors="replace").split("\n")[:-2]
        if len(lines) > _ENV_LINES:
            raise _AgiError("agi environment too long")
        env: dict[str, str] = {}
        for line in lines:
            key, _, value = line.rstrip("\r").partition(": ")
            env[key] = value
        return env

    async def _snapshot(
        self, channel_id: str, name: str, also: tuple[str, ...] = ()
    ) -> tuple[ChannelSnapshot, list[str]]:
        """The channel's state, linkedid, caller and contract variables, and the values of the
        expressions ``also``, in one GET FULL VARIABLE."""
        exprs = [f"${{{f}}}" for f in _FIELDS] + list(also)
        data = await self._command("GET FULL VARIABLE " + ",".join(f"${{BASE64_ENCODE({e})}}" for e in exprs))
        parts = data.split(",")
        if len(parts) != len(exprs):
            raise _AgiError("unexpected answer to GET FULL VARIABLE")
        try:
            decoded = [base64.b64decode(p, validate=True).decode(errors="replace") for p in parts]
        except binascii.Error:
            raise _AgiError("answer to GET FULL VARIABLE is not base64") from None
        values = dict(zip(_FIELDS, decoded, strict=False))
        # Inherited variables (__CALLREC_REGISTER) are read by their plain names.
        contract = {var: values[var] for var in CONTRACT_VARS if values[var]}
        snap = ChannelSnapshot(
            id=channel_id,
            name=name,
            state=values["CHANNEL(state)"] or "Unknown",
            linkedid=values["CHANNEL(linkedid)"] or None,
            caller_number=values["CALLERID(num)"] or None,
            vars=contract,
        )
        return snap, decoded[len(_FIELDS) :]

    async def _mixmonitor(self, file: str, command: str) -> None:
        """The recorder's ``Attach``: MixMonitor on this very channel."""
        if not self.open:
            raise AttachUnavailable("agi session already closed")
        # The recorder chose the path (no comma, quote or space: config.py and calls.py).
        data = f"{file},,{command}" if command else file
        try:
            result = await self._command(f'EXEC MixMonitor "{data}"', result_only=True)
        except _AgiError as exc:
            raise StartRefused(str(exc)) from None
        if result != "0":
            raise StartRefused(f"EXEC MixMonitor answered result={result}")

    async def _command(self, line: str, *, result_only: bool = False) -> str:
        """Send one command; the value in parentheses (or the bare result) of ``200 result=``."""
        self._writer.write(line.encode() + b"\n")
        await self._writer.drain()
        while True:
            try:
                raw = await self._reader.readuntil(b"\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                self.open = False
                raise
            answer = raw.decode(errors="replace").rstrip("\r\n")
            if answer != "HANGUP":  # the channel hung up meanwhile; the answer still follows
                break
        code, _, rest = answer.partition(" ")
        if code != "200" or not rest.startswith("result="):
            raise _AgiError(f"agi answered {code[:3]}")
        result, _, data = rest[len("result=") :].partition(" ")
        if result_only:
            return result
        return data[1:-1] if data.startswith("(") and data.endswith(")") else ""
