"""Event mode sends MixMonitor without waiting for the journal's fsync. A kill -9 between the
two leaves a recording running that the journal never saw; the next start must adopt it from
MixMonitor's own MIXMONITOR_FILENAME (ari.conf channelvars), never record the call twice.

The state after such a kill is made exactly, rather than hoped for with a timed kill: no daemon
runs, the call is up with its register, and MixMonitor runs on it with a file callrec named.

When the call also ends before the next start, or the journal itself is lost, only the file is
left: the start-up scan gives it a ``recovered`` row from its name (recording/strays.py), and
never takes the file of a call that is still up."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
import wave
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.e2e.conftest import Daemon, settings_of, start_daemon, wait_no_channels, wait_rows
from tests.e2e.test_light_on_pbx import ari_get
from tests.e2e.test_recording import assert_audio, assert_wav
from tests.harness.asterisk import Asterisk
from tests.harness.driver import Driver

from callrec.recording import layout

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


def events(daemon: Daemon, name: str) -> list[dict[str, object]]:
    return [e for e in map(json.loads, filter(None, daemon.log().splitlines())) if e.get("event") == name]


RECOVERED = "recording recovered from a file without journal entry or row"
LOOKED_AT = "files without journal entry or row looked at"


def test_journal_lost_and_call_ended_while_down_leaves_one_recovered_row(
    tmp_path: Path, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    state = tmp_path / "state"
    first = start_daemon(tmp_path / "run1", asterisk, db_dsn, state_dir=state)
    driver.inbound("0300", "0405556666", talk=6)
    first.wait_log('"recording started"')
    os.kill(first.pid, signal.SIGKILL)
    first.proc.wait()
    for part in state.glob("journal.sqlite3*"):  # the disk of state_dir lost with it
        part.unlink()
    wait_no_channels(asterisk)  # the call ends while no daemon runs
    (file,) = [p for p in asterisk.recordings_dir.rglob(f"*.customer-service.{settings_of(first).node}.wav")]
    second = start_daemon(tmp_path / "run2", asterisk, db_dsn, state_dir=state, quiet=False)
    try:
        (row,) = wait_rows(db_dsn, 1)
        assert row["file_path"] == file.relative_to(asterisk.recordings_dir).as_posix()
        assert (row["recovered"], row["interrupted"], row["register_name"]) == (
            True,
            False,
            "customer-service",
        )
        unknown = ("call_id", "service_number", "customer_number_masked", "agent_name")
        assert [row[c] for c in unknown] == [None] * 4
        assert 4 < float(row["duration_seconds"]) < 9  # type: ignore[arg-type]
        assert_audio(second, db_dsn, row)  # then archived like any other recording
        (said,) = events(second, RECOVERED)
        assert said["recording_id"] == str(row["id"]) and said["register"] == "customer-service"
        # Written moments before the start, the file may wait out file_wait_timeout first.
        assert sum(int(e["recovered"]) for e in events(second, LOOKED_AT)) == 1  # type: ignore[call-overload]
        assert len(wait_rows(db_dsn, 2, timeout=1)) == 1
    finally:
        assert second.stop() == 0
    for log in (first.log(), second.log()):
        assert "0405556666" not in log and "Traceback" not in log


def test_the_file_of_a_call_still_up_is_not_taken_until_the_call_ends(
    tmp_path: Path, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    wait_no_channels(asterisk, timeout=60)
    # A call callrec does not follow (no register), with MixMonitor writing a file named for
    # this daemon's node: the state a lost journal leaves while the call goes on.
    driver.originate("Local/alice@callrec-internal", context="test-customer-talk", variables={"__TALK": "12"})
    leg = next_channel(asterisk, "Local/alice@callrec-internal-", ";1")
    rid = uuid.uuid4()
    node = f"e2e-{rid.hex[:8]}"
    rel = layout.file_path(rid, time.time(), "customer-service", node)
    path = asterisk.recordings_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    answer = driver.action("MixMonitor", {"Channel": str(leg["name"]), "File": str(path)})
    assert answer.get("Response") == "Success", answer
    daemon = start_daemon(tmp_path, asterisk, db_dsn, quiet=False, node=node)
    try:
        daemon.wait_log(f'"{LOOKED_AT}"')
        (first,) = events(daemon, LOOKED_AT)
        assert (first["recovered"], first["live"]) == (0, 1)
        assert channels_up(asterisk) and wait_rows(db_dsn, 1, timeout=0) == []
        wait_no_channels(asterisk)
        (row,) = wait_rows(db_dsn, 1)
        assert (row["id"], row["file_path"], row["recovered"]) == (rid, rel, True)
        assert_audio(daemon, db_dsn, row)
        assert len(events(daemon, RECOVERED)) == 1
    finally:
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


def next_channel(asterisk: Asterisk, prefix: str, suffix: str, timeout: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ch in ari_get(asterisk, "/channels"):  # type: ignore[union-attr]
            if (
                str(ch["name"]).startswith(prefix)
                and str(ch["name"]).endswith(suffix)
                and ch["state"] == "Up"
            ):
                return dict(ch)
        time.sleep(0.1)
    raise TimeoutError(f"no channel {prefix}*{suffix} up")


def channels_up(asterisk: Asterisk) -> bool:
    return "0 active channels" not in asterisk.cli_output("core show channels count")
