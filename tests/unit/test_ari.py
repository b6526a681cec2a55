"""The ARI client against a wire-level fake of Asterisk's ARI."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest
import structlog.testing

from callrec import retry
from callrec.asterisk import ari as ari_module
from callrec.asterisk.ari import AriClient, AriSettings
from callrec.asterisk.ari_rest import AriAuthError, AriUnavailable
from callrec.ops import metrics
from callrec.retry import backoff_delay
from tests.fakes.ari_server import FakeAri

PASSWORD = "s3cret-pw"
NUMBER = "+358401234567"
TIMEOUT = 5.0  # only reached when a test fails


T = TypeVar("T")


async def within(aw: Awaitable[T]) -> T:
    """Await, failing the test instead of hanging it when the awaited thing never happens."""
    return await asyncio.wait_for(aw, TIMEOUT)


def settings(url: str, **overrides: Any) -> AriSettings:
    values: dict[str, Any] = {
        "url": url,
        "username": "callrec",
        "password": PASSWORD,
        "app": "callrec",
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "request_timeout": 1.0,
    }
    values.update(overrides)
    return AriSettings(**values)


def event(n: int, event_type: str = "ChannelVarset") -> dict[str, Any]:
    return {
        "type": event_type,
        "timestamp": "2026-11-22T10:00:00.000+0000",
        "application": "callrec",
        "channel": {"id": f"1700000000.{n}", "name": f"PJSIP/trunk-{n:08x}", "state": "Ring"},
        "n": n,
    }


def errors(kind: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "callrec_protocol_errors_total", {"source": "ari", "kind": kind}
    )
    return value or 0.0


def gauge() -> float | None:
    return metrics.REGISTRY.get_sample_value("callrec_connection_up", {"connection": "ari"})


class Consumer:
    """on_event / on_connect that record what happened, in order, and can be awaited."""

    def __init__(self) -> None:
        self.log: list[str | dict[str, Any]] = []
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.connects: asyncio.Queue[bool] = asyncio.Queue()
        self.connected_during_on_connect: list[bool] = []
        self.client: AriClient | None = None
        self.on_connect_hook: Callable[[], Awaitable[None]] | None = None

    def on_event(self, event: dict[str, Any]) -> None:
        self.log.append(event)
        self.events.put_nowait(event)

    async def on_connect(self) -> None:
        self.log.append("connect")
        if self.client is not None:
            self.connected_during_on_connect.append(self.client.connected)
        if self.on_connect_hook is not None:
            await self.on_connect_hook()
        self.connects.put_nowait(True)

    async def next_event(self) -> dict[str, Any]:
        return await within(self.events.get())

    async def next_connect(self) -> None:
        await within(self.connects.get())


@contextlib.asynccontextmanager
async def running(
    client: AriClient,
    consumer: Consumer,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> AsyncIterator[asyncio.Task[None]]:
    consumer.client = client
    task = asyncio.create_task(client.run(on_event or consumer.on_event, consumer.on_connect), name="ari-run")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await within(task)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAri]:
    async with FakeAri(username="callrec", password=PASSWORD, app="callrec") as server:
        yield server


# -- connecting -----------------------------------------------------------------------------------


async def test_connect_sends_app_subscribe_all_and_basic_auth_header(fake: FakeAri) -> None:
    consumer = Consumer()
    async with running(AriClient(settings(fake.url)), consumer):
        await consumer.next_connect()
    [attempt] = fake.connects
    assert attempt["status"] == 101
    assert attempt["query"] == {"app": "callrec", "subscribeAll": "true"}
    assert attempt["headers"]["Authorization"] == aiohttp.encode_basic_auth("callrec", PASSWORD)
    assert PASSWORD not in attempt["url"]
    assert "callrec:" not in attempt["url"]


def test_credentials_stay_out_of_urls_and_reprs() -> None:
    with pytest.raises(ValueError, match="credentials"):
        AriClient(settings("http://callrec:pw@127.0.0.1:8088"))
    assert PASSWORD not in repr(settings("http://127.0.0.1:8088"))


async def test_events_arrive_in_order_after_on_connect(fake: FakeAri) -> None:
    consumer = Consumer()
    client = AriClient(settings(fake.url))
    async with running(client, consumer):
        await within(client.wait_connected())
        await within(fake.wait_client())
        await fake.push_many(event(n) for n in range(200))
        received = [await consumer.next_event() for _ in range(200)]
    assert [e["n"] for e in received] == list(range(200))
    assert received[0] == event(0)
    assert consumer.log[0] == "connect"
    assert consumer.connected_during_on_connect == [True]


async def test_events_wait_for_on_connect_while_the_socket_is_drained(fake: FakeAri) -> None:
    # Asterisk drops a client whose socket stays full (websocket_write_timeout), so the socket must be
    # read during a slow on_connect; events must still reach on_event only after it, in order.
    consumer = Consumer()
    release = asyncio.Event()

    async def slow_reconcile() -> None:
        await release.wait()

    consumer.on_connect_hook = slow_reconcile
    padding = "x" * 4000
    count = 5000  # 20 MB: more than loopback socket buffers hold
    async with running(AriClient(settings(fake.url)), consumer):
        await within(fake.wait_client())
        await within(fake.push_many({**event(n), "pad": padding} for n in range(count)))
        assert consumer.log == ["connect"]
        release.set()
        received = [await consumer.next_event() for _ in range(count)]
    assert [e["n"] for e in received] == list(range(count))


# -- authentication, reconnects, backoff -----------------------------------------------------------


async def test_wrong_password_is_one_clear_line_and_retried(fake: FakeAri) -> None:
    fake.password = "the-right-one"
    consumer = Consumer()
    client = AriClient(settings(fake.url))
    with structlog.testing.capture_logs() as logs:
        async with running(client, consumer):
            await within(fake.wait_connects(4))
            assert not client.connected
            assert [c["status"] for c in fake.connects[:4]] == [401] * 4
            with pytest.raises(AriUnavailable):
                await client.channels()
            fake.password = PASSWORD  # the operator fixed ari.conf
            await consumer.next_connect()
            assert client.connected
    refused = [e for e in logs if e["event"] == "ari authentication refused"]
    assert len(refused) == 1
    assert refused[0]["username"] == "callrec"
    assert refused[0]["log_level"] == "error"
    assert all(PASSWORD not in repr(e) for e in logs)


@pytest.mark.parametrize("close_code", [None, 1001], ids=["tcp-abort", "close-frame"])
async def test_reconnects_after_drop_and_refusals(fake: FakeAri, close_code: int | None) -> None:
    consumer = Consumer()
    client = AriClient(settings(fake.url))
    reconnects_before = metrics.REGISTRY.get_sample_value("callrec_reconnects_total", {"connection": "ari"})
    async with running(client, consumer):
        await consumer.next_connect()
        assert client.connected
        assert gauge() == 1
        fake.refuse = True
        await fake.drop_clients(close_code)
        await within(fake.wait_connects(3))  # two refused reconnects: the client saw the loss
        assert [c["status"] for c in fake.connects[1:3]] == [503, 503]
        assert not client.connected
        assert gauge() == 0
        fake.refuse = False
        await consumer.next_connect()
        await within(client.wait_connected())
        assert client.connected
        assert gauge() == 1
        await within(fake.wait_client())
        await fake.push(event(1))
        assert (await consumer.next_event())["n"] == 1
    reconnects = metrics.REGISTRY.get_sample_value("callrec_reconnects_total", {"connection": "ari"})
    # One reconnect per connection that ended or was refused: every attempt but the last.
    assert (reconnects or 0) - (reconnects_before or 0) == len(fake.connects) - 1
    assert consumer.connected_during_on_connect == [True, True]


async def test_backoff_grows_while_refused_and_resets_after_connect(
    fake: FakeAri, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[int] = []

    def recording_backoff(attempt: int, initial: float, maximum: float, draw: float) -> float:
        attempts.append(attempt)
        return backoff_delay(attempt, initial, maximum, draw)

    monkeypatch.setattr(retry, "backoff_delay", recording_backoff)
    consumer = Consumer()
    fake.refuse = True
    async with running(AriClient(settings(fake.url)), consumer):
        await within(fake.wait_connects(4))
        fake.refuse = False
        await consumer.next_connect()
        refused_attempts = list(attempts)
        await fake.drop_clients()
        await consumer.next_connect()
    assert refused_attempts == [0, 1, 2, 3]
    assert attempts[4] == 0  # the first delay after a good connection starts over


# -- malformed input and failing handlers ----------------------------------------------------------

MALFORMED: list[tuple[str, str | bytes, bool]] = [
    ("bad_json", "this is not json", False),
    ("bad_json", b'{"type": "ChannelCreated", "x": "\xff\xfe"}', False),  # invalid UTF-8, text frame
    ("bad_json", "{" + "x" * 1_000_000, False),  # huge, under the size limit
    ("not_object", '[{"type": "ChannelCreated"}]', False),
    ("no_type", '{"channel": {"id": "1"}}', False),
    ("no_type", '{"type": 5}', False),
    ("binary", b'{"type": "ChannelCreated"}', True),
]


async def test_malformed_messages_are_skipped_counted_and_reading_goes_on(fake: FakeAri) -> None:
    consumer = Consumer()
    expected: dict[str, float] = {}
    for kind, _, _ in MALFORMED:
        expected[kind] = expected.get(kind, errors(kind)) + 1
    with structlog.testing.capture_logs() as logs:
        async with running(AriClient(settings(fake.url)), consumer):
            await consumer.next_connect()
            for _, message, binary in MALFORMED:
                await fake.push(message, binary=binary)
            await fake.push(event(7))
            assert (await consumer.next_event())["n"] == 7
            assert consumer.events.empty()
    assert {kind: errors(kind) for kind in expected} == expected
    assert len(fake.connects) == 1  # bad input skips a message, not the connection
    skipped = [e for e in logs if e["event"] == "ari message skipped"]
    assert sorted(e["kind"] for e in skipped) == sorted(expected)  # once per kind and connection
    assert all("x" * 100 not in repr(e) for e in logs)


async def test_oversized_message_drops_the_connection_and_reconnects(fake: FakeAri) -> None:
    consumer = Consumer()
    before = errors("oversized")
    async with running(AriClient(settings(fake.url)), consumer):
        await consumer.next_connect()
        await fake.push(
            '{"type": "ChannelVarset", "value": "' + "x" * (ari_module.MAX_MESSAGE_BYTES + 1) + '"}'
        )
        await consumer.next_connect()
        await within(fake.wait_client())
        await fake.push(event(2))
        assert (await consumer.next_event())["n"] == 2
    assert errors("oversized") == before + 1


async def test_on_event_raising_is_logged_without_payload_and_reading_goes_on(fake: FakeAri) -> None:
    consumer = Consumer()

    def on_event(e: dict[str, Any]) -> None:
        if e["type"] == "ChannelCreated":
            raise ValueError(f"cannot mask {e['channel']['caller']['number']}")
        consumer.on_event(e)

    before = errors("handler_error")
    poisoned = {**event(1, "ChannelCreated"), "channel": {"id": "1", "caller": {"number": NUMBER}}}
    with structlog.testing.capture_logs() as logs:
        async with running(AriClient(settings(fake.url)), consumer, on_event):
            await consumer.next_connect()
            await fake.push_many([poisoned, poisoned, event(2)])
            assert (await consumer.next_event())["n"] == 2
    assert errors("handler_error") == before + 2
    failed = [e for e in logs if e["event"] == "ari event handler failed"]
    assert len(failed) == 1  # the same failure again is only counted
    assert failed[0]["event_type"] == "ChannelCreated"
    assert failed[0]["error"] == "ValueError"
    assert "test_ari.py" in failed[0]["where"]
    assert all(NUMBER not in repr(e) for e in logs)
    # A traceback would quote the message (and rendered with locals, the whole event).
    assert not any("exc_info" in e or "exception" in e for e in failed)


async def test_on_connect_raising_is_not_fatal(fake: FakeAri) -> None:
    consumer = Consumer()

    async def broken() -> None:
        raise RuntimeError(f"reconcile failed for {NUMBER}")

    consumer.on_connect_hook = broken
    before = errors("on_connect_error")
    with structlog.testing.capture_logs() as logs:
        async with running(AriClient(settings(fake.url)), consumer):
            await within(fake.wait_client())
            await fake.push(event(3))
            assert (await consumer.next_event())["n"] == 3
    assert errors("on_connect_error") == before + 1
    assert [e["error"] for e in logs if e["event"] == "ari on_connect failed"] == ["RuntimeError"]
    assert all(NUMBER not in repr(e) for e in logs)


# -- REST -----------------------------------------------------------------------------------------


async def test_channels_returns_the_servers_list_and_maps_failures(fake: FakeAri) -> None:
    client = AriClient(settings(fake.url, request_timeout=0.2))
    with pytest.raises(AriUnavailable):
        await client.channels()  # not running
    fake.channels = [{"id": "1700000000.1", "name": "PJSIP/trunk-00000001", "state": "Up"}]
    consumer = Consumer()
    async with running(client, consumer):
        await consumer.next_connect()
        assert await client.channels() == fake.channels
        fake.rest_status = 500
        with pytest.raises(AriUnavailable, match="500"):
            await client.channels()
        fake.rest_status = None
        fake.rest_stall = True
        with pytest.raises(AriUnavailable, match="Timeout"):
            await within(client.channels())
        fake.rest_stall = False
        fake.password = "changed"
        with pytest.raises(AriAuthError):
            await client.channels()


async def test_asterisk_info_reports_the_startup_time(fake: FakeAri) -> None:
    client = AriClient(settings(fake.url))
    consumer = Consumer()
    async with running(client, consumer):
        await consumer.next_connect()
        assert (await client.asterisk_info())["status"]["startup_time"] == fake.startup_time
        fake.startup_time = "2026-11-22T11:00:00.000+0000"  # Asterisk restarted
        assert (await client.asterisk_info())["status"]["startup_time"] == fake.startup_time
        fake.rest_status = 503
        with pytest.raises(AriUnavailable, match="503"):
            await client.asterisk_info()


async def test_channels_raises_when_the_server_is_gone() -> None:
    consumer = Consumer()
    async with FakeAri(password=PASSWORD) as server:
        client = AriClient(settings(server.url))
        async with running(client, consumer):
            await consumer.next_connect()
            await server.close()
            with pytest.raises(AriUnavailable):
                await client.channels()


async def test_event_filter_is_put_after_each_connect(fake: FakeAri) -> None:
    types = ("ChannelStateChange", "ChannelVarset", "ChannelHangupRequest")
    consumer = Consumer()
    async with running(AriClient(settings(fake.url, event_types=types)), consumer):
        await consumer.next_connect()
        await fake.drop_clients()
        await consumer.next_connect()
    wanted = {"allowed": [{"type": t} for t in types]}
    assert fake.event_filters == [wanted, wanted]


async def test_event_filter_refusal_is_logged_once_and_not_fatal(fake: FakeAri) -> None:
    fake.event_filter_status = 403
    consumer = Consumer()
    client = AriClient(settings(fake.url, event_types=("ChannelVarset",)))
    with structlog.testing.capture_logs() as logs:
        async with running(client, consumer):
            await consumer.next_connect()
            await fake.drop_clients()
            await consumer.next_connect()
            assert client.connected
            await within(fake.wait_client())
            await fake.push(event(4))
            assert (await consumer.next_event())["n"] == 4
    assert len(fake.event_filters) == 2
    assert len([e for e in logs if e["event"] == "ari event filter refused; receiving every event"]) == 1


async def test_event_filter_not_sent_without_event_types(fake: FakeAri) -> None:
    consumer = Consumer()
    async with running(AriClient(settings(fake.url)), consumer):
        await consumer.next_connect()
    assert fake.event_filters == []


# -- lifecycle ------------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["reading", "on_connect", "backoff"])
async def test_cancel_closes_everything(fake: FakeAri, phase: str) -> None:
    consumer = Consumer()
    client = AriClient(settings(fake.url, backoff_initial=30.0, backoff_max=30.0))
    in_on_connect = asyncio.Event()

    async def stuck() -> None:
        in_on_connect.set()
        await asyncio.Event().wait()

    if phase == "on_connect":
        consumer.on_connect_hook = stuck
    if phase == "backoff":
        fake.refuse = True
    task = asyncio.create_task(client.run(consumer.on_event, consumer.on_connect))
    if phase == "reading":
        await consumer.next_connect()
    elif phase == "on_connect":
        await within(in_on_connect.wait())
    else:
        await within(fake.wait_connects(1))
    session = client._session
    assert session is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(task)
    assert session.closed
    assert not client.connected
    assert gauge() == 0
    await within(fake.wait_no_client())
    assert asyncio.all_tasks() == {asyncio.current_task()}  # no task of the client left behind
    gc.collect()  # an unclosed session would warn here, and filterwarnings=error fails the test


async def test_run_twice_at_once_is_refused(fake: FakeAri) -> None:
    consumer = Consumer()
    client = AriClient(settings(fake.url))
    async with running(client, consumer):
        await consumer.next_connect()
        with pytest.raises(RuntimeError, match="already running"):
            await client.run(consumer.on_event)
