"""Lean mode's per-channel subscriptions: over the events websocket where Asterisk takes REST
requests there (asterisk/ari_subscriptions.py), over HTTP otherwise, against the wire-level fake.
The real Asterisk 22 path is the lean e2e suite's."""

from __future__ import annotations

import asyncio

import pytest

from callrec.asterisk.ari import AriClient
from callrec.asterisk.ari_rest import AriUnavailable
from callrec.asterisk.ari_subscriptions import LEAN_EVENT_TYPES, rest_over_websocket
from tests.fakes.ari_server import FakeAri
from tests.unit.test_ari import PASSWORD, Consumer, event, running, settings, within


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("22.10.1+dfsg+~cs6.17.60671434-1", True),  # Debian sid's, as Asterisk reports it
        ("22.4.0", True),
        ("22.3.9", False),
        ("21.9.0", True),
        ("21.8.2", False),
        ("20.14.1", True),
        ("20.13.0", False),
        ("23.0.0", True),
        ("18.26.0", False),
        ("GIT-master-abc123", False),
        ("", False),
    ],
)
def test_which_asterisk_takes_rest_over_the_websocket(version: str, expected: bool) -> None:
    assert rest_over_websocket(version) is expected


async def connected(fake: FakeAri, **overrides: object) -> tuple[AriClient, Consumer]:
    client = AriClient(
        settings(fake.url, **({"subscribe_all": False, "event_types": LEAN_EVENT_TYPES} | overrides))
    )
    consumer = Consumer()

    async def reconcile() -> None:  # as the daemon's on_connect does (app.py)
        await client.asterisk_info()

    consumer.on_connect_hook = reconcile
    return client, consumer


async def test_a_subscription_goes_over_the_websocket_where_asterisk_can() -> None:
    async with FakeAri(password=PASSWORD) as fake:
        fake.known_channels = {"1700000000.1"}
        client, consumer = await connected(fake)
        async with running(client, consumer):
            await consumer.next_connect()
            await fake.push(event(0))  # the read loop runs once this arrives
            await consumer.next_event()
            assert await within(client.subscribe_channel("1700000000.1")) is True
            assert await within(client.subscribe_channel("1700000000.2")) is False  # 422: gone
            await fake.push(event(3, "ChannelDestroyed"))
            assert (await consumer.next_event())["n"] == 3
        assert fake.subscriptions == [("websocket", "1700000000.1"), ("websocket", "1700000000.2")]
        # The answers were taken by the client, never handed on as events.
        assert [e["type"] for e in consumer.log if isinstance(e, dict)] == [
            "ChannelVarset",
            "ChannelDestroyed",
        ]


@pytest.mark.parametrize(
    ("version", "event_types"),
    [("22.3.0", LEAN_EVENT_TYPES), ("22.10.0", ("ChannelHangupRequest", "ChannelDestroyed"))],
    ids=["asterisk-too-old", "filter-would-drop-the-answer"],
)
async def test_a_subscription_goes_over_http_otherwise(version: str, event_types: tuple[str, ...]) -> None:
    async with FakeAri(password=PASSWORD) as fake:
        fake.version, fake.known_channels = version, {"1700000000.1"}
        client, consumer = await connected(fake, event_types=event_types)
        async with running(client, consumer):
            await consumer.next_connect()
            await fake.push(event(0))
            await consumer.next_event()
            assert await within(client.subscribe_channel("1700000000.1")) is True
            assert await within(client.subscribe_channel("1700000000.2")) is False
        assert fake.subscriptions == [("http", "1700000000.1"), ("http", "1700000000.2")]


async def test_while_events_are_held_for_the_reconciliation_it_is_http() -> None:
    async with FakeAri(password=PASSWORD) as fake:
        fake.known_channels = {"1700000000.1"}
        client, consumer = await connected(fake)
        answers: list[bool] = []

        async def reconcile_and_resubscribe() -> None:  # lean.resubscribe runs inside on_connect
            await client.asterisk_info()
            answers.append(await client.subscribe_channel("1700000000.1"))

        consumer.on_connect_hook = reconcile_and_resubscribe
        async with running(client, consumer):
            await consumer.next_connect()
        assert answers == [True] and fake.subscriptions == [("http", "1700000000.1")]


async def test_a_lost_connection_fails_the_waiting_subscription_at_once() -> None:
    async with FakeAri(password=PASSWORD) as fake:
        fake.ws_rest_silent = True
        client, consumer = await connected(fake, request_timeout=60.0)  # the drop, not this, ends it
        async with running(client, consumer):
            await consumer.next_connect()
            await fake.push(event(0))
            await consumer.next_event()
            waiting = asyncio.create_task(client.subscribe_channel("1700000000.1"))
            await within(fake.wait_subscriptions(1))
            await fake.drop_clients()
            with pytest.raises(AriUnavailable, match="lost"):
                await within(waiting)


async def test_an_unanswered_subscription_times_out_as_unavailable() -> None:
    async with FakeAri(password=PASSWORD) as fake:
        fake.ws_rest_silent = True
        client, consumer = await connected(fake, request_timeout=0.2)
        async with running(client, consumer):
            await consumer.next_connect()
            await fake.push(event(0))
            await consumer.next_event()
            with pytest.raises(AriUnavailable, match="TimeoutError"):
                await within(client.subscribe_channel("1700000000.1"))
            fake.ws_rest_silent = False  # the next one is answered: nothing was left in a bad state
            assert await within(client.subscribe_channel("1700000000.1")) is False
