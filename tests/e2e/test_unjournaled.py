"""Event mode sends MixMonitor without waiting for the journal's fsync. A kill -9 between the
two leaves a recording running that the journal never saw; the next start must adopt it from
MixMonitor's own MIXMONITOR_FILENAME (ari.conf channelvars), never record the call twice.

The state after such a kill is made exactly, rather than hoped for with a timed kill: no daemon
runs, the call is up with its register, and MixMonitor runs on it with a file callrec named."""

from __future__ import annotations

import json
import time
import uuid
import wave
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.e2e.conftest import settings_of, start_daemon, wait_no_channels, wait_rows
from tests.e2e.test_light_on_pbx import ari_get
from tests.e2e.test_recording import assert_wav
from tests.harness.asterisk import Asterisk
from tests.harness.driver import Driver

pytestmark = pytest.mark.e2e


def recorded_leg(asterisk: Asterisk, timeout: float = 20) -> dict[str, object]:
    """The customer's channel once the sample dialplan has marked it (after the notice)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ch in ari_get(asterisk, "/channels"):  # type: ignore[union-attr]
            cvars = ch.get("channelvars", {})
            marked = cvars.get("CALLREC_REGISTER") == "customer-service"
            if marked and str(ch["name"]).startswith("Local/0300@test-trunk-") and ch["name"][-2:] == ";2":
                return dict(ch)
        time.sleep(0.1)
    raise TimeoutError("no marked channel")


def test_recording_without_journal_entry_is_adopted_from_mixmonitor_filename(
    tmp_path: Path, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    wait_no_channels(asterisk, timeout=60)
    driver.inbound("0300", "0405556666", talk=8)
    leg = recorded_leg(asterisk)
    rid = uuid.uuid4()
    rel = f"{datetime.now(UTC):%Y/%m/%d}/{rid}.wav"
    (asterisk.recordings_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    file = str(asterisk.recordings_dir / rel)
    answer = driver.action("MixMonitor", {"Channel": str(leg["name"]), "File": file})
    assert answer.get("Response") == "Success", answer
    # The daemon comes up once MixMonitor has written 3 s: the row's start must be the file's.
    deadline = time.monotonic() + 20
    while not (Path(file).exists() and Path(file).stat().st_size > 44 + 3 * 16000):
        assert time.monotonic() < deadline, "MixMonitor wrote no audio"
        time.sleep(0.05)
    daemon = start_daemon(tmp_path, asterisk, db_dsn, quiet=False, archive=False)
    try:
        (row,) = wait_rows(db_dsn, 1)
        wait_no_channels(asterisk)
        assert len(wait_rows(db_dsn, 2, timeout=1)) == 1
        assert row["id"] == rid and row["file_path"] == rel
        assert row["register_name"] == "customer-service" and row["customer_number_masked"] == "0405556***"
        assert row["recovered"] is False  # the end was seen
        with wave.open(file) as w:  # the archive step is off: MixMonitor's WAV stays
            seconds = w.getnframes() / w.getframerate()
        assert abs(float(row["duration_seconds"]) - seconds) < 0.5  # type: ignore[arg-type]
        log = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
        assert [e for e in log if e.get("event") == "recording started"] == []
        assert any(e.get("event") == "recording found on its channel without a journal entry" for e in log)
        assert_wav(asterisk, row)
        assert settings_of(daemon).asterisk.recordings_dir == asterisk.recordings_dir
    finally:
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()
