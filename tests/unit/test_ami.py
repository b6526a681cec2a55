"""The AMI client against a fake Asterisk that speaks the real wire protocol (tests/fakes)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from callrec.asterisk.ami import (
    AmiClient,
    AmiError,
    AmiSettings,
    AmiUnavailable,
    encode_action,
    parse_frame,
)
from callrec.ops import metrics
from tests.fakes.ami_server import CLOSE, FakeAmi, encode_frame

SECRET = "s3cret-never-logged"


def make_settings(port: int, **overrides: Any) -> AmiSettings:
    values: dict[str, Any] = {
        "action_timeout": 1.0,
        "connect_timeout": 1.0,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
    }
    values.update(overrides)
    return AmiSettings("127.0.0.1", port, "callrec", values.pop("secret", SECRET), **values)


@contextlib.asynccontextmanager
async def running(fake: FakeAmi, *, connect: bool = True, **overrides: Any) -> AsyncIterator[AmiClient]:
    client = AmiClient(make_settings(fake.port, **overrides))
    task = asyncio.create_task(client.run(), name="ami-under-test")
    try:
        if connect:
            async with asyncio.timeout(2):
                await client.wait_connected()
        yield client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture(autouse=True)
def default_structlog() -> Iterator[None]:
    # Another test may have configured logging at info; the late-answer check needs debug records.
    saved = structlog.get_config()
    structlog.reset_defaults()
    yield
    structlog.configure(**saved)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmi]:
    async with FakeAmi(username="callrec", secret=SECRET) as ami:
        yield ami


def protocol_errors(kind: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "callrec_protocol_errors_total", {"source": "ami", "kind": kind}
    )
    return value or 0.0


def all_protocol_errors() -> dict[str, float]:
    return {
        kind: protocol_errors(kind)
        for kind in ("oversized", "bad_line", "bad_utf8", "unexpected", "bad_banner")
    }


def reconnects() -> float:
    return metrics.REGISTRY.get_sample_value("callrec_reconnects_total", {"connection": "ami"}) or 0.0


async def within(seconds: float, awaitable: Any) -> Any:
    async with asyncio.timeout(seconds):
        return await awaitable


# --- login -------------------------------------------------------------------------------------


async def test_login_sends_credentials_with_events_off(fake: FakeAmi) -> None:
    async with running(fake) as client:
        assert client.connected
        login = fake.actions[0]
        assert login == {
            "Action": "Login",
            "Username": "callrec",
            "Secret": SECRET,
            "Events": "off",
            "ActionID": login["ActionID"],
        }
        assert metrics.REGISTRY.get_sample_value("callrec_connection_up", {"connection": "ami"}) == 1
        # The FullyBooted event that followed the login was ignored, not mistaken for an answer.
        assert (await client.action("Ping", {}))["Ping"] == "Pong"


async def test_wrong_secret_is_logged_without_the_secret_and_retried(fake: FakeAmi) -> None:
    fake.secret = "the-right-one"
    with capture_logs() as logs:
        async with running(fake, connect=False) as client:
            await within(2, fake.wait_for(lambda: fake.connections >= 3))
            assert not client.connected
            # Asterisk may come back with the right config: the client must still be trying.
            fake.secret = SECRET
            await within(2, client.wait_connected())
    refused = [e for e in logs if e["event"] == "ami login refused"]
    # Once per refused login: every connection but the last, which logged in.
    assert len(refused) == fake.connections - 1
    assert refused[0]["username"] == "callrec"
    assert refused[0]["message"] == "Authentication failed"
    assert refused[0]["log_level"] == "warning"
    assert SECRET not in repr(logs)
    assert SECRET not in repr(make_settings(fake.port))


async def test_action_before_connecting_is_unavailable() -> None:
    client = AmiClient(make_settings(1))
    assert not client.connected
    with pytest.raises(AmiUnavailable):
        await client.action("Ping", {})


# --- actions -----------------------------------------------------------------------------------


async def test_mix_monitor_fields_on_the_wire(fake: FakeAmi) -> None:
    async with running(fake) as client:
        await client.mix_monitor(
            "PJSIP/alice-00000001", "/var/spool/rec/x.wav", options="b", command="/usr/bin/true"
        )
        await client.mix_monitor("PJSIP/bob-00000002", "/var/spool/rec/y.wav")
        await client.stop_mix_monitor("PJSIP/alice-00000001")
    full, minimal, stop = fake.actions_named("MixMonitor") + fake.actions_named("StopMixMonitor")
    assert list(full.items()) == [
        ("Action", "MixMonitor"),
        ("Channel", "PJSIP/alice-00000001"),
        ("File", "/var/spool/rec/x.wav"),
        ("Options", "b"),
        ("Command", "/usr/bin/true"),
        ("ActionID", full["ActionID"]),
    ]
    assert list(minimal) == ["Action", "Channel", "File", "ActionID"]
    assert list(stop.items()) == [
        ("Action", "StopMixMonitor"),
        ("Channel", "PJSIP/alice-00000001"),
        ("ActionID", stop["ActionID"]),
    ]
    ids = [a["ActionID"] for a in fake.actions]
    assert len(set(ids)) == len(ids)


async def test_send_writes_the_action_before_its_answer_is_awaited(fake: FakeAmi) -> None:
    async with running(fake) as client:
        answer = client.send_mix_monitor("PJSIP/alice-00000001", "/rec/early.wav")
        # Nothing runs the returned awaitable yet: Asterisk has the action all the same.
        action = await within(2, fake.wait_action("MixMonitor", 1))
        assert action["File"] == "/rec/early.wav"
        assert (await answer)["Response"] == "Success"
        with pytest.raises(ValueError):
            client.send_mix_monitor("PJSIP/alice-00000001", "/rec/a,b.wav")
    assert len(fake.actions_named("MixMonitor")) == 1


async def test_success_returns_the_response_fields(fake: FakeAmi) -> None:
    async with running(fake) as client:
        response = await client.action("Ping", {})
    assert response["Response"] == "Success"
    assert response["Ping"] == "Pong"


async def test_error_response_raises_ami_error_with_asterisk_message(fake: FakeAmi) -> None:
    fake.on("MixMonitor", lambda action: {"Response": "Error", "Message": "No such channel"})
    async with running(fake) as client:
        with pytest.raises(AmiError) as raised:
            await client.mix_monitor("PJSIP/gone-00000003", "/rec/z.wav")
        assert raised.value.action == "MixMonitor"
        assert raised.value.message == "No such channel"
        assert client.connected


async def test_answers_are_matched_by_action_id_not_by_order(fake: FakeAmi) -> None:
    fake.on("Getvar", lambda action: None)
    async with running(fake) as client:
        first = asyncio.create_task(client.action("Getvar", {"Variable": "A"}))
        second = asyncio.create_task(client.action("Getvar", {"Variable": "B"}))
        await within(2, fake.wait_action("Getvar", 2))
        id_a, id_b = (a["ActionID"] for a in fake.actions_named("Getvar"))
        await fake.send_raw(
            encode_frame({"Response": "Success", "ActionID": id_b, "Value": "b"})
            + encode_frame({"Response": "Success", "ActionID": id_a, "Value": "a"})
        )
        assert (await first)["Value"] == "a"
        assert (await second)["Value"] == "b"


async def test_utf8_character_split_across_tcp_writes_survives(fake: FakeAmi) -> None:
    fake.on("Getvar", lambda action: None)
    async with running(fake) as client:
        pending = asyncio.create_task(client.action("Getvar", {"Variable": "CALLERID(name)"}))
        action_id = (await within(2, fake.wait_action("Getvar")))["ActionID"]
        frame = f"Response: Success\r\nActionID: {action_id}\r\nMessage: José\r\n\r\n".encode()
        cut = frame.index("é".encode()) + 1  # between the two bytes of é
        await fake.send_raw(frame[:cut])
        # A real pause, so the halves reach the client in separate reads (this is what the test is about).
        await asyncio.sleep(0.05)
        await fake.send_raw(frame[cut:])
        assert (await within(2, pending))["Message"] == "José"


# --- timeouts, drops, reconnects ---------------------------------------------------------------


async def test_unanswered_action_times_out_and_a_late_answer_is_dropped(fake: FakeAmi) -> None:
    fake.on("StopMixMonitor", lambda action: None)
    async with running(fake, action_timeout=0.2) as client:
        unexpected_before = protocol_errors("unexpected")
        started = time.monotonic()
        with pytest.raises(AmiUnavailable):
            await client.stop_mix_monitor("PJSIP/alice-00000001")
        assert 0.2 <= time.monotonic() - started < 1.0
        late_id = fake.actions_named("StopMixMonitor")[0]["ActionID"]
        with capture_logs() as logs:
            await fake.send_raw(encode_frame({"Response": "Success", "ActionID": late_id}))
            # The answer to this Ping follows the late one on the same stream, so it was read first.
            assert (await client.action("Ping", {}))["Ping"] == "Pong"
        assert any(e["event"] == "ami late answer dropped" for e in logs)
        assert protocol_errors("unexpected") == unexpected_before
        assert client.connected
        assert fake.connections == 1


async def test_per_call_timeout_overrides_the_default(fake: FakeAmi) -> None:
    fake.on("Getvar", lambda action: None)
    async with running(fake, action_timeout=30.0) as client:
        started = time.monotonic()
        with pytest.raises(AmiUnavailable):
            await client.action("Getvar", {"Variable": "X"}, timeout=0.1)
        assert time.monotonic() - started < 1.0


async def test_connection_drop_fails_pending_actions_and_never_resends_them(fake: FakeAmi) -> None:
    fake.on("MixMonitor", lambda action: None)
    # A long action timeout, so only the drop itself can fail the pending actions in time.
    async with running(fake, action_timeout=30.0) as client:
        pending = [asyncio.create_task(client.mix_monitor(f"PJSIP/c-{n}", f"/rec/{n}.wav")) for n in range(3)]
        await within(2, fake.wait_action("MixMonitor", 3))
        await fake.drop_clients()
        results = await within(2, asyncio.gather(*pending, return_exceptions=True))
        assert all(isinstance(r, AmiUnavailable) for r in results), results
        fake.off("MixMonitor")
        await within(2, client.wait_connected())
        assert fake.connections == 2
        await client.mix_monitor("PJSIP/c-new", "/rec/new.wav")
        await client.action("Ping", {})
    assert [a["Channel"] for a in fake.actions_named("MixMonitor")] == [
        "PJSIP/c-0",
        "PJSIP/c-1",
        "PJSIP/c-2",
        "PJSIP/c-new",
    ]


async def test_reconnects_with_capped_growing_backoff_that_resets_after_login(
    fake: FakeAmi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(random, "random", lambda: 1.0)  # jitter at its top: delays become exact
    fake.on("Login", lambda action: CLOSE)
    reconnects_before = reconnects()
    with capture_logs() as logs:
        async with running(fake, connect=False, backoff_initial=0.01, backoff_max=0.04) as client:
            started = time.monotonic()
            await within(3, fake.wait_for(lambda: fake.connections >= 7))
            elapsed = time.monotonic() - started
            assert not client.connected
            fake.off("Login")
            await within(2, client.wait_connected())
            logged_in_on = fake.connections
            await fake.drop_clients()
            await within(2, fake.wait_for(lambda: fake.connections > logged_in_on))
    delays = [e["retry_in"] for e in logs if "retry_in" in e]
    assert delays[:6] == pytest.approx([0.01, 0.02, 0.04, 0.04, 0.04, 0.04])
    assert max(delays) <= 0.04
    assert elapsed >= sum(delays[:6]) * 0.9
    connected_at = next(i for i, e in enumerate(logs) if e["event"] == "ami connected")
    after = [e for e in logs[connected_at:] if "retry_in" in e]
    assert after[0]["retry_in"] == pytest.approx(0.01)
    assert reconnects() - reconnects_before >= 7


# --- malformed input ---------------------------------------------------------------------------

LIMIT = 1024


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        ("bad_line", b"Event: Newchannel\r\nthis line has no colon\r\nChannel: x\r\n\r\n"),
        ("oversized", b"Event: Big\r\nData: " + b"x" * (LIMIT + 10) + b"\r\n\r\n"),
        ("oversized", b"Event: Big\r\nData: " + b"x" * (LIMIT * 7) + b"\r\n\r\n"),
        ("bad_utf8", b"Event: Newchannel\r\nCallerIDName: \xff\xfe\xc3\r\n\r\n"),
        ("unexpected", b"Response: Success\r\nActionID: not-ours\r\n\r\n"),
        ("unexpected", b"Response: Success\r\nActionID: 999999\r\n\r\n"),
        ("unexpected", b"Response: Success\r\nMessage: no action id\r\n\r\n"),
        ("unexpected", b"Neither: response nor event\r\n\r\n"),
    ],
)
async def test_malformed_input_is_counted_and_skipped(fake: FakeAmi, kind: str, raw: bytes) -> None:
    async with running(fake, max_frame_bytes=LIMIT) as client:
        before = protocol_errors(kind)
        await fake.send_raw(raw)
        assert (await client.action("Ping", {}))["Ping"] == "Pong"
        assert protocol_errors(kind) == before + 1
        assert client.connected
        assert fake.connections == 1


async def test_unsolicited_events_are_ignored_without_counting(fake: FakeAmi) -> None:
    async with running(fake) as client:
        before = all_protocol_errors()
        await fake.send_raw(encode_frame({"Event": "Hangup", "Channel": "PJSIP/a-1", "ActionID": "1"}))
        assert (await client.action("Ping", {}))["Ping"] == "Pong"
        assert all_protocol_errors() == before


async def test_invalid_utf8_in_an_answer_is_replaced_not_fatal(fake: FakeAmi) -> None:
    fake.on("Getvar", lambda action: None)
    async with running(fake) as client:
        pending = asyncio.create_task(client.action("Getvar", {"Variable": "X"}))
        action_id = (await within(2, fake.wait_action("Getvar")))["ActionID"]
        await fake.send_raw(
            b"Response: Success\r\nActionID: " + action_id.encode() + b"\r\nValue: a\xffb\r\n\r\n"
        )
        assert (await within(2, pending))["Value"] == "a\ufffdb"


# --- header injection --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("Setvar", {"Variable": "X", "Value": "1\r\nAction: Hangup\r\nChannel: PJSIP/a-1"}),
        ("Setvar", {"Variable": "X", "Value": "1\n"}),
        ("Setvar", {"Variable": "X", "Value": "1\r"}),
        ("Setvar", {"Vari\r\nable": "X"}),
        ("Setvar", {"Variable: X\r\nFoo": "X"}),
        ("Setvar", {"ActionID": "42"}),
        ("Setvar\r\nAction: Hangup", {}),
    ],
)
async def test_cr_or_lf_is_rejected_before_anything_is_sent(
    fake: FakeAmi, name: str, fields: dict[str, str]
) -> None:
    async with running(fake) as client:
        sent_before = len(fake.actions)
        with pytest.raises(ValueError):
            await client.action(name, fields)
        await client.action("Ping", {})
        assert [a["Action"] for a in fake.actions[sent_before:]] == ["Ping"]


async def test_mix_monitor_rejects_comma_and_newline_before_sending(fake: FakeAmi) -> None:
    async with running(fake) as client:
        with pytest.raises(ValueError):
            await client.mix_monitor("PJSIP/a-1", "/rec/a,b.wav")
        with pytest.raises(ValueError):
            await client.mix_monitor("PJSIP/a-1\r\nAction: Hangup", "/rec/a.wav")
        assert fake.actions_named("MixMonitor") == []


# Surrogates cannot be encoded at all; CR/LF (and a colon in a key) are rejected by design.
_KEYS = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n:"), min_size=1)
_VALUES = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"))


@given(
    st.dictionaries(
        _KEYS.filter(lambda k: k.lower() not in ("action", "actionid")),
        _VALUES,
        max_size=5,
    )
)
def test_encoded_fields_parse_back_unchanged(fields: dict[str, str]) -> None:
    frame = encode_action("UserEvent", fields, "7")
    assert frame.endswith(b"\r\n\r\n")
    parsed = parse_frame(frame[:-4])
    assert parsed.fields == {"Action": "UserEvent", **fields, "ActionID": "7"}
    assert parsed.bad_lines == 0


# --- shutdown ----------------------------------------------------------------------------------


async def test_cancelling_run_closes_the_socket_and_fails_pending_actions(fake: FakeAmi) -> None:
    fake.on("StopMixMonitor", lambda action: None)
    client = AmiClient(make_settings(fake.port, action_timeout=30.0))
    task = asyncio.create_task(client.run())
    await within(2, client.wait_connected())
    pending = asyncio.create_task(client.stop_mix_monitor("PJSIP/a-1"))
    await within(2, fake.wait_action("StopMixMonitor"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(AmiUnavailable):
        await within(1, pending)
    assert not client.connected
    assert metrics.REGISTRY.get_sample_value("callrec_connection_up", {"connection": "ami"}) == 0
    await within(2, fake.wait_for(lambda: fake.clients == 0))


async def test_unanswered_keepalive_forces_a_reconnect(fake: FakeAmi) -> None:
    # A peer that stopped answering without closing the socket (a vanished host).
    fake.on("Ping", lambda action: None)
    async with running(fake, keepalive_interval=0.05, action_timeout=0.1) as client:
        await fake.wait_for(lambda: fake.connections >= 2)
        await client.wait_connected()
    assert len(fake.actions_named("Ping")) >= 1


async def test_answered_keepalive_keeps_the_connection(fake: FakeAmi) -> None:
    async with running(fake, keepalive_interval=0.02) as client:
        await fake.wait_for(lambda: len(fake.actions_named("Ping")) >= 5)
        assert client.connected
    assert fake.connections == 1
