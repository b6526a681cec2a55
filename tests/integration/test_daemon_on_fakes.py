"""The whole daemon (App) against the wire-level fakes and a real PostgreSQL: hostile input
from both Asterisk interfaces never crashes it or stops it recording other calls."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import pytest
from structlog.testing import capture_logs

from callrec.app import App
from callrec.asterisk.ami import AmiClient, AmiSettings
from callrec.config import load
from callrec.ops import metrics
from tests.fakes.ami_server import FakeAmi
from tests.fakes.ari_server import FakeAri
from tests.fakes.pbx import FakePbx, daemon_config

REGISTER = "customer-service"
TIMEOUT = 10.0  # only reached when a test fails


class StartApp(Protocol):
    def __call__(
        self, *, file_wait_timeout: float = 5, ami_action_timeout: float | None = None
    ) -> Awaitable[App]: ...


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeAri, FakeAmi, FakePbx]]:
    async with FakeAri(password="p") as ari, FakeAmi(secret="s") as ami:
        yield ari, ami, FakePbx(ami)


@pytest.fixture
async def start_app(
    tmp_path: Path, fakes: tuple[FakeAri, FakeAmi, FakePbx], db_dsn: str
) -> AsyncIterator[StartApp]:
    ari, ami, _ = fakes
    started: list[App] = []

    async def start(*, file_wait_timeout: float = 5, ami_action_timeout: float | None = None) -> App:
        cfg = tmp_path / "callrec.toml"
        cfg.write_text(daemon_config(ari, ami, tmp_path, db_dsn, file_wait_timeout=file_wait_timeout))
        daemon = App(load(cfg))
        if ami_action_timeout is not None:
            # The config has no key for the AMI action timeout (5 s): the client App builds,
            # with a shorter one. Before startup(), so the recorder gets this client.
            ast = daemon.settings.asterisk
            daemon.ami = AmiClient(
                AmiSettings(
                    ast.ami_host,
                    ast.ami_port,
                    ast.ami_username,
                    ast.ami_secret,
                    action_timeout=ami_action_timeout,
                )
            )
        await asyncio.wait_for(daemon.startup(), TIMEOUT)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stopping.set()
        await daemon.shutdown()


@pytest.fixture
async def app(start_app: StartApp) -> App:
    return await start_app()


async def rows(dsn: str, n: int, timeout: float = TIMEOUT) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while True:
            got = await conn.fetch("SELECT * FROM recordings ORDER BY created_at")
            if len(got) >= n or time.monotonic() > deadline:
                return got
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


def counter(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Return once condition() holds; fail the test (not hang it) if it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_a_call_on_the_fakes_gets_its_row(
    app: App, fakes: tuple[FakeAri, FakeAmi, FakePbx], db_dsn: str
) -> None:
    ari, _, pbx = fakes
    await ari.push_many(pbx.inbound_call())
    (row,) = await rows(db_dsn, 1)
    assert row["customer_number_masked"] == "+358401234***" and row["agent_name"] == "alice"
    assert pbx.mixmonitors == ["PJSIP/trunk-00000001"]


async def test_once_started_what_startup_made_leaves_the_collectors_scans(start_app: StartApp) -> None:
    # A full collection of the ~65,000 objects the daemon's modules make holds the loop ~70 ms
    # here (bench/primitives.py gc_pause); frozen, they are never scanned again.
    gc.unfreeze()
    try:
        await start_app()
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()  # this test process's objects are not the daemon's to keep


ARI_KINDS = ("bad_json", "not_object", "no_type", "binary", "malformed_event", "handler_error")
AMI_KINDS = ("bad_line", "bad_utf8", "unexpected", "oversized")


def protocol_errors(source: str, kinds: tuple[str, ...]) -> dict[str, float]:
    return {k: counter("callrec_protocol_errors_total", source=source, kind=k) for k in kinds}


def nested(depth: int) -> str:
    """Valid JSON nested deeper than any parser's recursion limit (orjson's is 1024)."""
    return '{"type":"SomethingNew","payload":' + "[" * depth + "]" * depth + "}"


async def test_hostile_ari_and_ami_input_is_counted_and_survived(
    app: App, fakes: tuple[FakeAri, FakeAmi, FakePbx], db_dsn: str
) -> None:
    ari, ami, pbx = fakes
    ari_before = protocol_errors("ari", ARI_KINDS)
    ami_before = protocol_errors("ami", AMI_KINDS)
    reconnects_before = {c: counter("callrec_reconnects_total", connection=c) for c in ("ari", "ami")}
    call = pbx.inbound_call(number="+358 40 765 4321")
    agent_channel = call[6]["channel"]  # the leg the dialplan sets CALLREC_AGENT on
    # (what is sent, as a binary frame?, the protocol error it must be counted as or None)
    hostile: list[tuple[Any, bool, str | None]] = [
        ("not json at all", False, "bad_json"),
        ("[1, 2, 3]", False, "not_object"),
        ('{"no": "type"}', False, "no_type"),
        ({"type": "ChannelVarset", "channel": {"id": 5}}, False, "malformed_event"),
        ({"type": "ChannelCreated", "channel": "nope"}, False, "malformed_event"),
        (
            {
                "type": "ChannelVarset",
                "channel": {"id": "x", "name": "n", "state": "Up"},
                "variable": "CALLREC_AGENT",
                "value": None,
            },
            False,
            "malformed_event",
        ),
        # A lone surrogate cannot be encoded as UTF-8, so Asterisk's JSON could only carry it
        # escaped. Decoded, it would make the row unwritable (PostgreSQL refuses it).
        ('{"type":"SomethingNew","payload":{"deep":[1,2,{"x":"\\udcff"}]}}', False, "bad_json"),
        (
            '{"type":"ChannelVarset","variable":"CALLREC_AGENT","value":"al\\ud800ice","channel":'
            f'{{"id":"{agent_channel["id"]}","name":"{agent_channel["name"]}","state":"Up"}}}}',
            False,
            "bad_json",
        ),
        (nested(100_000), False, "bad_json"),
        (
            {
                "type": "ChannelVarset",
                "channel": {
                    "id": "z",
                    "name": "Local/a;1",
                    "state": "Up",
                    "channelvars": {"CHANNEL(linkedid)": "L9"},
                },
                "variable": "CALLREC_AGENT",
                "value": "\x00\x01\u202e'; DROP TABLE recordings;--" * 50,
            },
            False,
            None,  # well-formed: a channel of no register, ignored
        ),
        (b"\xff\xfe\xfd", False, "bad_json"),  # invalid UTF-8 in a text frame
        ({"type": "ChannelCreated", "channel": call[0]["channel"]}, True, "binary"),
    ]
    assert len(hostile) <= len(call)
    stream: list[tuple[Any, bool]] = []
    for i, ev in enumerate(call):
        stream.append((ev, False))
        if i < len(hostile):
            stream.append(hostile[i][:2])
    ami_bursts = 0
    for item, binary in stream:
        await ari.push(item, binary=binary)
        if isinstance(item, dict) and item.get("type") == "ChannelVarset" and not binary:
            # AMI garbage while the daemon is mid-call: a line without a colon, bad UTF-8 in
            # an answer nobody asked for.
            await ami.send_raw(b"Garbage line without colon\r\n\r\n")
            await ami.send_raw(b"Response: Success\r\nActionID: 999999\r\nMessage: \xff\xfe\r\n\r\n")
            ami_bursts += 1
    assert ami_bursts == 7  # the call's four ChannelVarsets and the three hostile ones
    await ami.send_raw(b"Event: Foo\r\nData: " + b"x" * 200_000 + b"\r\n\r\n")  # over 64 KiB
    # The AMI stream is read in order: once this last stray answer is counted, all of the
    # above has been read.
    await ami.send_raw(b"Response: Success\r\nActionID: 424242\r\n\r\n")
    ami_expected = {
        "bad_line": ami_bursts,
        "bad_utf8": ami_bursts,
        "unexpected": ami_bursts + 1,
        "oversized": 1,
    }
    await until(
        lambda: (
            counter("callrec_protocol_errors_total", source="ami", kind="unexpected")
            == ami_before["unexpected"] + ami_expected["unexpected"]
        ),
        "the last stray AMI answer to be counted",
    )
    (row,) = await rows(db_dsn, 1)
    assert row["customer_number_masked"] == "+358407654***"
    assert row["agent_name"] == "alice"  # neither the surrogate nor the injection got in
    # And it still records the next call, on the same connections.
    await ari.push_many(pbx.inbound_call())
    assert len(await rows(db_dsn, 2)) == 2
    # The websocket is read in order: the second call's row means every hostile frame was
    # handled, so these counts are final.
    ari_expected = dict.fromkeys(ARI_KINDS, 0)
    for _, _, kind in hostile:
        if kind is not None:
            ari_expected[kind] += 1
    ari_after = protocol_errors("ari", ARI_KINDS)
    ami_after = protocol_errors("ami", AMI_KINDS)
    assert {k: ari_after[k] - ari_before[k] for k in ARI_KINDS} == ari_expected
    assert {k: ami_after[k] - ami_before[k] for k in AMI_KINDS} == ami_expected
    assert {c: counter("callrec_reconnects_total", connection=c) for c in ("ari", "ami")} == reconnects_before
    assert ami.connections == 1 and len(ari.connects) == 1
    assert not app.stopping.is_set()  # no owned task died


async def test_unanswered_mixmonitor_is_never_resent(
    start_app: StartApp, fakes: tuple[FakeAri, FakeAmi, FakePbx]
) -> None:
    ari, ami, pbx = fakes
    action_timeout = 0.3
    daemon = await start_app(ami_action_timeout=action_timeout, file_wait_timeout=0.3)
    ami.on("MixMonitor", lambda action: None)  # Asterisk never answers
    started = counter("callrec_recordings_started_total", register=REGISTER)
    no_file = counter("callrec_recordings_failed_total", register=REGISTER, reason="no_file")
    with capture_logs() as logs:
        sent_at = time.monotonic()
        await ari.push_many(pbx.inbound_call())
        first = await asyncio.wait_for(ami.wait_action("MixMonitor"), TIMEOUT)
        # Past the action timeout the recorder takes the action as maybe run ("the file will
        # tell"), then, with no file after file_wait_timeout, gives the recording up: once that
        # is counted and the recording is gone, nothing can send for it any more.
        recorder = daemon.recorder
        assert recorder is not None
        await until(
            lambda: (
                counter("callrec_recordings_failed_total", register=REGISTER, reason="no_file") == no_file + 1
                and recorder.active == 0
            ),
            "the recording to end without a file",
        )
    assert time.monotonic() - sent_at >= action_timeout
    assert [e["event"] for e in logs if e["event"].startswith("mixmonitor")] == [
        "mixmonitor answer lost; the file will tell",  # the action timeout fired, once
        "mixmonitor wrote no file",
    ]
    assert counter("callrec_recordings_started_total", register=REGISTER) == started + 1
    assert ami.actions_named("MixMonitor") == [first]
    assert first["Channel"] == "PJSIP/trunk-00000001"
