"""Lean mode end to end: the real Asterisk 22 runs the shipped lean contexts
(``callrec-inbound-lean``, ``callrec-telesales-lean``, ``callrec-lean-answered``) against
``callrec run`` with ``[daemon] mode = "lean"``: no subscribeAll, the dialplan asks over AGI,
and callrec subscribes to the recorded channel only (docs/dialplan.md#lean-mode)."""

from __future__ import annotations

import base64
import json
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.conftest import Daemon, start_daemon, wait_no_channels, wait_rows
from tests.e2e.test_recording import assert_audio
from tests.harness.asterisk import Asterisk
from tests.harness.driver import Driver

pytestmark = pytest.mark.e2e


def lean_daemon(tmp_path: Path, asterisk: Asterisk, dsn: str, **kw: object) -> Daemon:
    d = start_daemon(
        tmp_path,
        asterisk,
        dsn,
        mode="lean",
        extra_config=f'\n[agi]\nlisten = "127.0.0.1:{asterisk.agi_port}"\n',
        **kw,  # type: ignore[arg-type]
    )
    d.wait_log('"agi listening"')
    return d


@pytest.fixture
def lean(tmp_path: Path, asterisk: Asterisk, db_dsn: str) -> Iterator[Daemon]:
    d = lean_daemon(tmp_path, asterisk, db_dsn)
    yield d
    wait_no_channels(asterisk, timeout=60)
    code = d.stop()
    assert code == 0, d.log()[-3000:]
    assert "Traceback" not in d.log(), d.log()[-3000:]


def log_lines(daemon: Daemon, event: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in daemon.log().splitlines() if f'"{event}"' in line]


def metric(daemon: Daemon, name: str) -> float:
    url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert m is not None, name
    return float(m.group(1))


def subscribed_channels(asterisk: Asterisk) -> list[str]:
    """What Asterisk itself holds for callrec's application: the channels it sends events of."""
    req = urllib.request.Request(f"{asterisk.ari_url}/ari/applications/callrec")
    auth = base64.b64encode(f"callrec:{asterisk.ari_password}".encode()).decode()
    req.add_header("Authorization", f"Basic {auth}")
    app = json.loads(urllib.request.urlopen(req, timeout=5).read())
    return list(app["channel_ids"])


def inbound(driver: Driver, service: str, number: str, talk: int) -> None:
    driver.originate(
        f"Local/{service}@test-trunk-lean",
        context="test-customer-talk",
        callerid='"Customer" <>',
        variables={"__TALK": str(talk), "__RAWCID": base64.b64encode(number.encode()).decode()},
    )


def test_inbound_is_recorded_once_through_agi_watching_only_the_recorded_channel(
    lean: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    inbound(driver, "0300", "+358 40 123 4567", talk=4)
    lean.wait_log('"recording started"')
    # While the call is up Asterisk sends callrec the events of one channel: the recorded one.
    (recorded,) = subscribed_channels(asterisk)
    (row,) = wait_rows(db_dsn, 1)
    wait_no_channels(asterisk)
    assert (row["register_name"], row["direction"]) == ("customer-service", "inbound")
    assert row["service_number"] == "0300" and row["customer_number_masked"] == "+358401234***"
    assert row["agent_name"] == "alice"  # from the agent leg's AGI request at its answer
    assert abs(float(row["duration_seconds"]) - 4.0) < 1.5  # type: ignore[arg-type]
    assert_audio(lean, db_dsn, row)
    (line,) = log_lines(lean, "recording started")
    assert line["via"] == "agi" and line["channel"] == recorded
    assert subscribed_channels(asterisk) == []
    # The event mode's stream is ~68 events per call; here the recorded channel's hangup and end.
    assert metric(lean, "callrec_ari_events_total") <= 3
    assert metric(lean, "callrec_tracker_channels") == 0
    assert len(wait_rows(db_dsn, 2, timeout=1)) == 1


def test_queue_call_is_recorded_once_with_the_agent_who_answered(
    lean: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    inbound(driver, "0200", "0401112222", talk=4)
    (row,) = wait_rows(db_dsn, 1)
    wait_no_channels(asterisk)
    assert row["service_number"] == "0200" and row["customer_number_masked"] == "0401112***"
    assert row["agent_name"] in ("alice", "bob")
    assert_audio(lean, db_dsn, row)
    assert len(log_lines(lean, "recording started")) == 1
    assert len(wait_rows(db_dsn, 2, timeout=1)) == 1


def test_outbound_recording_starts_at_the_customer_answer(
    lean: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    driver.originate(
        "Local/0401234567@callrec-telesales-lean",
        context="test-agent-talk",
        callerid='"bob" <1001>',
        variables={"__RING": "3", "__TALK": "4"},
    )
    (row,) = wait_rows(db_dsn, 1)
    wait_no_channels(asterisk)
    assert (row["register_name"], row["direction"]) == ("telesales", "outbound")
    assert row["customer_number_masked"] == "0401234***" and row["agent_name"] == "bob"
    assert row["service_number"] == "0201234567"
    # 3 s of ringing are not in it: the recording is the 4 s of talk.
    assert abs(float(row["duration_seconds"]) - 4.0) < 1.5  # type: ignore[arg-type]
    assert_audio(lean, db_dsn, row)
    assert [line["via"] for line in log_lines(lean, "recording started")] == ["agi"]


def test_unrecorded_calls_go_on_and_leave_nothing_followed(
    lean: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    # An internal call (no AGI at all), and AGI requests callrec cannot record: no register,
    # a register that is not configured.
    driver.originate("Local/alice@callrec-internal", context="test-customer-talk", variables={"__TALK": "2"})
    for service, register in (("0402", ""), ("0403", "not-configured")):
        driver.originate(
            f"Local/{service}@test-agi-register",
            context="test-customer-talk",
            callerid='"Customer" <0401112222>',
            variables={"__TALK": "2", "__REG": register},
        )
    lean.wait_log('"agi request for a call that is not recorded; the call went on"')
    wait_no_channels(asterisk)
    assert wait_rows(db_dsn, 1, timeout=2) == []
    assert log_lines(lean, "recording started") == []
    assert '"unknown_register"' in lean.log()
    assert metric(lean, "callrec_tracker_channels") == 0
    assert subscribed_channels(asterisk) == []


def test_kill_9_mid_call_is_adopted_and_recorded_once(
    tmp_path: Path, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    state = tmp_path / "state"
    first = lean_daemon(tmp_path / "run1", asterisk, db_dsn, state_dir=state)
    inbound(driver, "0300", "0409998877", talk=8)
    first.wait_log('"recording started"')
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=10)
    second = lean_daemon(tmp_path / "run2", asterisk, db_dsn, state_dir=state, quiet=False)
    try:
        second.wait_log('"recording adopted"')
        (row,) = wait_rows(db_dsn, 1)
        wait_no_channels(asterisk)
        assert len(wait_rows(db_dsn, 2, timeout=1)) == 1
        assert row["agent_name"] == "alice" or row["agent_name"] is None
        # The end was seen (the channel was watched again), so the row is not "recovered".
        assert row["recovered"] is False and row["interrupted"] is False
        assert log_lines(second, "recording started") == []
        assert_audio(second, db_dsn, row)
    finally:
        assert second.stop() == 0
    assert "Traceback" not in second.log()


def test_sigterm_drains_the_call_in_progress(
    tmp_path: Path, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    d = lean_daemon(tmp_path, asterisk, db_dsn, drain_timeout=30)
    inbound(driver, "0300", "0401112222", talk=4)
    d.wait_log('"recording started"')
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=40) == 0
    (row,) = wait_rows(db_dsn, 1, timeout=5)
    assert row["agent_name"] == "alice" and row["recovered"] is False
    assert '"draining recordings"' in d.log() and "Traceback" not in d.log()


def test_asterisk_restart_ends_the_calls_as_interrupted_and_recording_goes_on(
    tmp_path: Path, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    d = lean_daemon(tmp_path, asterisk, db_dsn)
    try:
        for i in range(3):
            inbound(driver, f"05{i:02d}", "0401112222", talk=30)
        wait_count(d, "recording started", 3)
        driver.close()
        asterisk.stop(kill=True)
        asterisk.start()
        wait_count(d, "reconciled with asterisk", 2)
        rows = wait_rows(db_dsn, 3, timeout=60)
        assert all(r["interrupted"] for r in rows) and len(rows) == 3
        # After the restart the AGI requests are served again and the call is watched again.
        after = Driver(asterisk.ami_port, "callrec-test-driver", asterisk.ami_secret)
        try:
            wait_count(d, "ami connected", 2)
            inbound(after, "0510", "0403334444", talk=3)
            rows = wait_rows(db_dsn, 4, timeout=60)
            wait_no_channels(asterisk)
        finally:
            after.close()
        (fresh,) = [r for r in rows if r["service_number"] == "0510"]
        assert fresh["interrupted"] is False and fresh["agent_name"] == "alice"
        assert len(wait_rows(db_dsn, 5, timeout=1)) == 4
    finally:
        assert d.stop() == 0
    assert "Traceback" not in d.log()


def wait_count(daemon: Daemon, event: str, n: int, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while len(log_lines(daemon, event)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{event!r} logged fewer than {n} times:\n{daemon.log()[-3000:]}")
        time.sleep(0.1)
