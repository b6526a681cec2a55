"""AGI mode end to end: the real Asterisk 22 runs ``AGI(agi://...)`` against ``callrec run``.

The sample context ``callrec-inbound-agi`` (dialplan/extensions.conf) is used as shipped; the
harness only points its ``agi://127.0.0.1:4573/`` at this Asterisk's own port.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.conftest import Daemon, settings_of, start_daemon, wait_no_channels, wait_rows
from tests.e2e.test_recording import assert_audio
from tests.harness.asterisk import Asterisk
from tests.harness.driver import Driver

from callrec.archive.store import object_name

pytestmark = pytest.mark.e2e


@pytest.fixture
def agi_daemon(tmp_path: Path, asterisk: Asterisk, db_dsn: str) -> Iterator[Daemon]:
    d = start_daemon(
        tmp_path, asterisk, db_dsn, extra_config=f'\n[agi]\nlisten = "127.0.0.1:{asterisk.agi_port}"\n'
    )
    d.wait_log('"agi listening"')
    yield d
    code = d.stop()
    assert code == 0, d.log()[-3000:]
    assert "Traceback" not in d.log(), d.log()[-3000:]


def started(daemon: Daemon) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in daemon.log().splitlines() if '"recording started"' in line]
    return lines


def audio_files(daemon: Daemon) -> set[Path]:
    """Every recording's audio this daemon can see: WAVs and archive objects."""
    s = settings_of(daemon)
    return {p for p in s.asterisk.recordings_dir.rglob("*.wav")} | {
        p for p in s.storage.path.rglob("*") if p.is_file() and ".staging" not in p.parts
    }


def object_of(daemon: Daemon, row: dict[str, object]) -> Path:
    return settings_of(daemon).storage.path / object_name(uuid.UUID(str(row["id"])))


def test_sample_agi_context_records_the_call_once_through_agi(
    agi_daemon: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    before = audio_files(agi_daemon)
    driver.originate(
        "Local/0300@test-trunk-agi",
        context="test-customer-talk",
        callerid='"Customer" <>',
        variables={"__TALK": "4", "__RAWCID": base64.b64encode(b"+358 40 123 4567").decode()},
    )
    (row,) = wait_rows(db_dsn, 1)
    wait_no_channels(asterisk)
    assert (row["register_name"], row["direction"]) == ("customer-service", "inbound")
    assert row["service_number"] == "0300"
    assert row["customer_number_masked"] == "+358401234***"
    assert row["agent_name"] == "alice"
    assert_audio(agi_daemon, db_dsn, row)
    # Exactly one MixMonitor, and it went through AGI, not AMI.
    (line,) = started(agi_daemon)
    assert line["via"] == "agi" and line["call_id"] == row["call_id"]
    assert audio_files(agi_daemon) - before == {object_of(agi_daemon, row)}
    assert len(wait_rows(db_dsn, 2, timeout=1)) == 1


def test_agi_follows_the_register_rules(
    agi_daemon: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    before = audio_files(agi_daemon)
    for service, register in (("0401", "customer-service"), ("0402", ""), ("0403", "not-configured")):
        driver.originate(
            f"Local/{service}@test-agi-register",
            context="test-customer-talk",
            callerid='"Customer" <0401112222>',
            variables={"__TALK": "3", "__REG": register},
        )
    (row,) = wait_rows(db_dsn, 1)
    wait_no_channels(asterisk)
    assert row["service_number"] == "0401" and row["customer_number_masked"] == "0401112***"
    assert_audio(agi_daemon, db_dsn, row)
    assert [line["via"] for line in started(agi_daemon)] == ["agi"]
    assert audio_files(agi_daemon) - before == {object_of(agi_daemon, row)}
    assert '"unknown_register"' in agi_daemon.log()
    assert len(wait_rows(db_dsn, 2, timeout=1)) == 1


def test_without_the_agi_endpoint_the_call_goes_on_and_the_event_mode_records_it(
    daemon: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    # `daemon` has no [agi]: Asterisk's AGI() fails at once and the dialplan goes on.
    driver.originate(
        "Local/0300@test-trunk-agi",
        context="test-customer-talk",
        callerid='"Customer" <0409998877>',
        variables={"__TALK": "3"},
    )
    (row,) = wait_rows(db_dsn, 1)
    wait_no_channels(asterisk)
    assert row["customer_number_masked"] == "0409998***" and row["agent_name"] == "alice"
    assert_audio(daemon, db_dsn, row)
    assert [line["via"] for line in started(daemon)] == ["ami"]
