"""A fake Asterisk Manager Interface that speaks the real wire protocol on 127.0.0.1.

For what a real Asterisk cannot do on demand (docs/testing.md#real-parts-first):
malformed or oversized frames, characters
split across TCP writes, answers that come late or never, dropped connections, and load beyond
Asterisk's capacity for benchmarks. Everything else belongs in the end-to-end tests.

    async with FakeAmi(username="callrec", secret="s") as ami:
        ami.on("MixMonitor", lambda action: {"Response": "Error", "Message": "No such channel"})
        client = AmiClient(AmiSettings("127.0.0.1", ami.port, "callrec", "s"))
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable, Mapping
from types import TracebackType

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
FULLY_BOOTED = (
    b"Event: FullyBooted\r\nPrivilege: system,all\r\n"
    b"Uptime: 5\r\nLastReload: 5\r\nStatus: Fully Booted\r\n\r\n"
)


class Close(enum.Enum):
    CLOSE = "close"


CLOSE = Close.CLOSE
"""Return this from a handler to close the client's connection instead of answering."""


class CloseConnection(Exception):
    """Raise this from a handler to close the client's connection instead of answering."""


Reply = Mapping[str, str] | Close | None
"""Response fields (Response defaults to Success, ActionID is echoed), CLOSE, or None: never answer."""
Handler = Callable[[dict[str, str]], Reply]


def encode_frame(fields: Mapping[str, str]) -> bytes:
    return "".join(f"{key}: {value}\r\n" for key, value in fields.items()).encode() + b"\r\n"


def parse_frame(frame: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in frame.decode(errors="replace").split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep:
            fields[key] = value
    return fields


class FakeAmi:
    """Records every action it receives (`actions`) and answers like Asterisk 22 by default."""

    def __init__(
        self,
        username: str = "callrec",
        secret: str = "s",
        *,
        response_delay: float = 0.0,
        fully_booted: bool = True,
    ) -> None:
        self.username = username
        self.secret = secret
        self.response_delay = response_delay
        """Seconds before each answer, unless the action's handler has its own delay."""
        self.fully_booted = fully_booted
        """Send the FullyBooted event after a login, as Asterisk does even with `Events: off`."""
        self.actions: list[dict[str, str]] = []
        self.connections = 0
        """Connections accepted so far."""
        self.port = 0
        self._handlers: dict[str, tuple[Handler, float | None]] = {}
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    async def __aenter__(self) -> FakeAmi:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        await self.drop_clients()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def on(self, action: str, handler: Handler, *, delay: float | None = None) -> None:
        """Answer `action` (case-insensitive, as in Asterisk) through `handler` from now on."""
        self._handlers[action.lower()] = (handler, delay)

    def off(self, action: str) -> None:
        """Back to the default answer for `action`."""
        self._handlers.pop(action.lower(), None)

    @property
    def clients(self) -> int:
        """Connections open right now."""
        return len(self._clients)

    async def drop_clients(self) -> None:
        """Close every client connection abruptly and wait until their handlers have ended."""
        for writer in list(self._clients):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are to every connected client."""
        for writer in list(self._clients):
            writer.write(data)
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once predicate() holds; it is checked after every connection and every action."""
        if predicate():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, waiter))
        try:
            await waiter
        finally:
            self._waiters = [w for w in self._waiters if w[1] is not waiter]

    async def wait_action(self, name: str, count: int = 1) -> dict[str, str]:
        """The `count`-th action called `name` received, once it has arrived."""
        matching: list[dict[str, str]] = []

        def arrived() -> bool:
            matching[:] = [a for a in self.actions if a.get("Action", "").lower() == name.lower()]
            return len(matching) >= count

        await self.wait_for(arrived)
        return matching[count - 1]

    def actions_named(self, name: str) -> list[dict[str, str]]:
        return [a for a in self.actions if a.get("Action", "").lower() == name.lower()]

    def _changed(self) -> None:
        for predicate, waiter in self._waiters:
            if not waiter.done() and predicate():
                waiter.set_result(None)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._clients.add(writer)
        self.connections += 1
        try:
            writer.write(BANNER)
            self._changed()
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._clients.discard(writer)
            writer.transport.abort()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self._tasks.discard(task)
            self._changed()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        logged_in = False
        while True:
            action = parse_frame((await reader.readuntil(b"\r\n\r\n"))[:-4])
            self.actions.append(action)
            self._changed()
            name = action.get("Action", "").lower()
            handler, delay = self._handlers.get(name, (None, None))
            reply: Reply
            if handler is not None:
                try:
                    reply = handler(action)
                except CloseConnection:
                    reply = CLOSE
            elif name == "login":
                ok = action.get("Username") == self.username and action.get("Secret") == self.secret
                reply = {"Response": "Success", "Message": "Authentication accepted"}
                if not ok:
                    reply = {"Response": "Error", "Message": "Authentication failed"}
            elif not logged_in:
                reply = {"Response": "Error", "Message": "Permission denied"}
            elif name == "ping":
                reply = {"Ping": "Pong", "Timestamp": "1700000000.000000"}
            else:
                reply = {}
            if reply is CLOSE:
                return
            if reply is None:
                continue
            fields = {"Response": reply.get("Response", "Success")}
            if "ActionID" in action:
                fields["ActionID"] = action["ActionID"]
            fields.update((k, v) for k, v in reply.items() if k != "Response")
            data = encode_frame(fields)
            if name == "login":
                if fields["Response"] != "Success":
                    # Asterisk answers a failed login, then hangs up.
                    writer.write(data)
                    await writer.drain()
                    return
                logged_in = True
                if self.fully_booted:
                    data += FULLY_BOOTED
            wait = self.response_delay if delay is None else delay
            if wait > 0:
                self._answer_later(writer, data, wait)
            else:
                writer.write(data)
                await writer.drain()

    def _answer_later(self, writer: asyncio.StreamWriter, data: bytes, delay: float) -> None:
        def answer() -> None:
            self._timers.discard(timer)
            if not writer.is_closing():
                writer.write(data)

        timer = asyncio.get_running_loop().call_later(delay, answer)
        self._timers.add(timer)
