"""Fault injection on the real Asterisk and PostgreSQL: nothing lost, nothing duplicated.

Each test prints one JSON line with its figures (calls, faults, rows lost, duplicates,
time to reconnect), which docs/architecture.md#fault-injection-results quotes.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from tests.e2e.conftest import (
    audio_kind,
    settings_of,
    start_daemon,
    wait_audio_flowing,
    wait_no_channels,
    wait_rows,
)
from tests.harness.asterisk import Asterisk
from tests.harness.driver import Driver
from tests.harness.postgres import Cluster

pytestmark = pytest.mark.e2e


def figure(capsys: pytest.CaptureFixture[str], **values: object) -> None:
    with capsys.disabled():
        print("\n" + json.dumps({"figure": "fault_injection", **values}))


def place(driver: Driver, first: int, count: int, talk: int) -> list[str]:
    services = [f"{first + i:04d}" for i in range(count)]
    for service in services:
        driver.inbound(service, f"+35840{service}777", talk=talk)
    return services


def check_rows(rows: list[dict[str, object]], services: list[str]) -> tuple[int, int]:
    got = [str(r["service_number"]) for r in rows if r["service_number"] in services]
    lost = len(set(services) - set(got))
    duplicates = len(got) - len(set(got))
    return lost, duplicates


def count_logged(log: str, event: str) -> int:
    return sum(1 for line in log.splitlines() if f'"event": "{event}"' in line)


def wait_count(get_log: object, event: str, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while count_logged(get_log(), event) < n:  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{event!r} logged fewer than {n} times"
        time.sleep(0.1)


def test_kill_9_while_20_calls_record(
    tmp_path: Path, driver: Driver, asterisk: Asterisk, db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    first = start_daemon(tmp_path / "run1", asterisk, db_dsn, state_dir=state)
    services = place(driver, 500, 20, talk=8)
    wait_count(first.log, "recording started", 20)
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait()
    t0 = time.monotonic()
    second = start_daemon(tmp_path / "run2", asterisk, db_dsn, state_dir=state, quiet=False)
    ready = time.monotonic() - t0
    try:
        rows = wait_rows(db_dsn, 20, timeout=60)
        wait_no_channels(asterisk)
        rows = wait_rows(db_dsn, 21, timeout=1)
    finally:
        assert second.stop() == 0
    lost, duplicates = check_rows(rows, services)
    # Each row's audio: its WAV, or its archive object once the archive step has it.
    wavs = [r for r in rows if audio_kind(settings_of(second), r) is not None]
    figure(
        capsys,
        fault="kill -9 daemon",
        calls=20,
        rows=len(rows),
        lost=lost,
        duplicates=duplicates,
        adopted=count_logged(second.log(), "recording adopted"),
        restart_to_ready_s=round(ready, 2),
    )
    seen = [(r["service_number"], r["recovered"], r["file_path"]) for r in rows]
    assert (lost, duplicates, len(rows)) == (0, 0, 20), seen
    assert len(wavs) == 20
    assert count_logged(second.log(), "recording adopted") == 20
    assert count_logged(second.log(), "recording started") == 0, "an adopted call was recorded twice"
    assert not any(r["recovered"] or r["interrupted"] for r in rows)


def test_postgresql_down_30s_while_20_calls_end(
    tmp_path: Path,
    driver: Driver,
    asterisk: Asterisk,
    db_dsn: str,
    pg_cluster: Cluster,
    capsys: pytest.CaptureFixture[str],
) -> None:
    daemon = start_daemon(tmp_path, asterisk, db_dsn)
    try:
        services = place(driver, 600, 20, talk=4)
        wait_count(daemon.log, "recording started", 20)
        pg_cluster.stop()
        t_down = time.monotonic()
        wait_no_channels(asterisk)
        wait_count(daemon.log, "recording finished", 20)
        time.sleep(max(0.0, 30 - (time.monotonic() - t_down)))
        pg_cluster.resume()
        t_up = time.monotonic()
        rows = wait_rows(db_dsn, 20, timeout=60)
        catch_up = time.monotonic() - t_up
        rows = wait_rows(db_dsn, 21, timeout=1)
        journaled = count_logged(daemon.log(), "database unavailable; rows kept in the journal")
    finally:
        assert daemon.stop() == 0
    lost, duplicates = check_rows(rows, services)
    figure(
        capsys,
        fault="postgresql stopped 30 s",
        calls=20,
        rows=len(rows),
        lost=lost,
        duplicates=duplicates,
        rows_written_after_outage_s=round(catch_up, 2),
    )
    assert (lost, duplicates, len(rows)) == (0, 0, 20)
    assert journaled >= 1


def test_asterisk_restart_in_the_middle_of_10_calls(
    tmp_path: Path, driver: Driver, asterisk: Asterisk, db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = start_daemon(tmp_path, asterisk, db_dsn)
    before = set(asterisk.recordings_dir.rglob("*.wav"))
    try:
        cut = place(driver, 700, 10, talk=30)
        wait_count(daemon.log, "recording started", 10)
        # Killed before MixMonitor opened a file, a call has no audio to keep (seen under load).
        wait_audio_flowing(asterisk, 10, before)
        driver.close()
        asterisk.stop(kill=True)
        asterisk.start()
        t_up = time.monotonic()
        wait_count(daemon.log, "reconciled with asterisk", 2)
        reconnect = time.monotonic() - t_up
        after = Driver(asterisk.ami_port, "callrec-test-driver", asterisk.ami_secret)
        try:
            # New calls are recorded once the daemon is back (AMI reconnects on its own backoff).
            wait_count(daemon.log, "ami connected", 2)
            reconnect = max(reconnect, time.monotonic() - t_up)
            fresh = place(after, 710, 10, talk=3)
            rows = wait_rows(db_dsn, 20, timeout=60)
            wait_no_channels(asterisk)
        finally:
            after.close()
        rows = wait_rows(db_dsn, 21, timeout=1)
    finally:
        assert daemon.stop() == 0
    lost_cut, dup_cut = check_rows(rows, cut)
    lost_new, dup_new = check_rows(rows, fresh)
    interrupted = [r for r in rows if r["service_number"] in cut]
    figure(
        capsys,
        fault="asterisk kill -9 + start",
        calls=20,
        cut=10,
        rows=len(rows),
        lost=lost_cut + lost_new,
        duplicates=dup_cut + dup_new,
        reconnect_s=round(reconnect, 2),
    )
    assert (lost_cut, dup_cut, lost_new, dup_new, len(rows)) == (0, 0, 0, 0, 20)
    assert all(r["interrupted"] for r in interrupted)
    assert not any(r["interrupted"] for r in rows if r["service_number"] in fresh)


def test_sigterm_during_10_calls(
    tmp_path: Path, driver: Driver, asterisk: Asterisk, db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    first = start_daemon(tmp_path / "run1", asterisk, db_dsn, state_dir=state, drain_timeout=2)
    services = place(driver, 800, 10, talk=10)
    wait_count(first.log, "recording started", 10)
    t0 = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=20) == 0
    exit_s = time.monotonic() - t0
    second = start_daemon(tmp_path / "run2", asterisk, db_dsn, state_dir=state, quiet=False)
    try:
        rows = wait_rows(db_dsn, 10, timeout=60)
        wait_no_channels(asterisk)
        rows = wait_rows(db_dsn, 11, timeout=1)
    finally:
        assert second.stop() == 0
    lost, duplicates = check_rows(rows, services)
    figure(
        capsys,
        fault="SIGTERM (drain 2 s)",
        calls=10,
        rows=len(rows),
        lost=lost,
        duplicates=duplicates,
        exit_s=round(exit_s, 2),
    )
    assert (lost, duplicates, len(rows)) == (0, 0, 10)
    assert exit_s < 2 + 8, "exit within the drain timeout (plus the outbox flush)"
