"""The whole daemon (App) against the wire-level fakes and a real PostgreSQL: hostile input
from both Asterisk interfaces never crashes it or stops it recording other calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from callrec.app import App
from callrec.config import load
from callrec.ops import metrics
from tests.fakes.ami_server import FakeAmi
from tests.fakes.ari_server import FakeAri
from tests.fakes.pbx import FakePbx
from tests.harness.asterisk import free_port


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeAri, FakeAmi, FakePbx]]:
    async with FakeAri(password="p") as ari, FakeAmi(secret="s") as ami:
        yield ari, ami, FakePbx(ami)


@pytest.fixture
async def app(tmp_path: Path, fakes: tuple[FakeAri, FakeAmi, FakePbx], db_dsn: str) -> AsyncIterator[App]:
    ari, ami, _ = fakes
    cfg = tmp_path / "callrec.toml"
    cfg.write_text(f"""
[asterisk]
ari_url = "{ari.url}"
ari_username = "callrec"
ari_password = "p"
ami_port = {ami.port}
ami_username = "callrec"
ami_secret = "s"
recordings_dir = "{tmp_path / "rec"}"
[database]
dsn = "{db_dsn}"
[metrics]
listen = "127.0.0.1:{free_port()}"
[api]
enabled = false
[daemon]
state_dir = "{tmp_path / "state"}"
file_wait_timeout = 5
[registers.customer-service]
direction = "inbound"
retention = "1 month"
""")
    daemon = App(load(cfg))
    await asyncio.wait_for(daemon.startup(), 10)
    yield daemon
    daemon.stopping.set()
    await daemon.shutdown()


async def rows(dsn: str, n: int, timeout: float = 10) -> list[asyncpg.Record]:
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


async def test_a_call_on_the_fakes_gets_its_row(
    app: App, fakes: tuple[FakeAri, FakeAmi, FakePbx], db_dsn: str
) -> None:
    ari, _, pbx = fakes
    await ari.push_many(pbx.inbound_call())
    (row,) = await rows(db_dsn, 1)
    assert row["customer_number_masked"] == "+358401234***" and row["agent_name"] == "alice"
    assert pbx.mixmonitors == ["PJSIP/trunk-00000001"]


async def test_hostile_ari_and_ami_input_is_counted_and_survived(
    app: App, fakes: tuple[FakeAri, FakeAmi, FakePbx], db_dsn: str
) -> None:
    ari, ami, pbx = fakes
    before_ari = sum(
        counter("callrec_protocol_errors_total", source="ari", kind=k)
        for k in ("bad_json", "not_object", "no_type", "malformed_event")
    )
    before_ami = sum(
        counter("callrec_protocol_errors_total", source="ami", kind=k)
        for k in ("bad_line", "bad_utf8", "unexpected", "oversized")
    )
    call = pbx.inbound_call(number="+358 40 765 4321")
    hostile: list[object] = [
        "not json at all",
        "[1, 2, 3]",
        '{"no": "type"}',
        {"type": "ChannelVarset", "channel": {"id": 5}},
        {"type": "ChannelCreated", "channel": "nope"},
        {
            "type": "ChannelVarset",
            "channel": {"id": "x", "name": "n", "state": "Up"},
            "variable": "CALLREC_AGENT",
            "value": None,
        },
        {"type": "SomethingNew", "payload": {"deep": [1, 2, {"x": "\udcff"[:0]}]}},
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
        b"\xff\xfe\xfd",
    ]
    stream: list[object] = []
    for i, ev in enumerate(call):
        stream.append(ev)
        if i < len(hostile):
            stream.append(hostile[i])
    for item in stream:
        await ari.push(item)  # type: ignore[arg-type]
        if isinstance(item, dict) and item.get("type") == "ChannelVarset":
            # AMI garbage while the daemon is mid-call: a line without a colon, bad UTF-8,
            # an answer nobody asked for, and an oversized frame.
            await ami.send_raw(b"Garbage line without colon\r\n\r\n")
            await ami.send_raw(b"Response: Success\r\nActionID: 999999\r\nMessage: \xff\xfe\r\n\r\n")
    await ami.send_raw(b"Event: Foo\r\nData: " + b"x" * 200_000 + b"\r\n\r\n")
    (row,) = await rows(db_dsn, 1)
    assert row["customer_number_masked"] == "+358407654***"
    after_ari = sum(
        counter("callrec_protocol_errors_total", source="ari", kind=k)
        for k in ("bad_json", "not_object", "no_type", "malformed_event")
    )
    after_ami = sum(
        counter("callrec_protocol_errors_total", source="ami", kind=k)
        for k in ("bad_line", "bad_utf8", "unexpected", "oversized")
    )
    assert after_ari - before_ari >= 6
    assert after_ami - before_ami >= 3
    # And it still records the next call.
    await ari.push_many(pbx.inbound_call())
    assert len(await rows(db_dsn, 2)) == 2


async def test_unanswered_mixmonitor_is_never_resent(
    app: App, fakes: tuple[FakeAri, FakeAmi, FakePbx], db_dsn: str
) -> None:
    ari, ami, pbx = fakes
    ami.on("MixMonitor", lambda action: None)  # Asterisk never answers
    await ari.push_many(pbx.inbound_call())
    await ami.wait_action("MixMonitor")
    await asyncio.sleep(0.1)
    assert len(ami.actions_named("MixMonitor")) == 1
