"""Recording end to end: real Asterisk 22 loading dialplan/, real PostgreSQL, the real daemon.

Calls are placed with AMI Originate on Local channels and carry real audio (tt-monkeys).
"""

from __future__ import annotations

import array
import hashlib
import signal
import subprocess
import uuid
import wave
from datetime import timedelta
from pathlib import Path

import pytest
from tests.e2e.conftest import (
    Daemon,
    archived_audio,
    settings_of,
    start_daemon,
    wait_archived,
    wait_no_channels,
    wait_rows,
)
from tests.harness.asterisk import Asterisk
from tests.harness.audio import decoded_pcm
from tests.harness.driver import Driver
from tests.harness.postgres import pg_bindir

from callrec.archive.store import object_name
from callrec.privacy import mask_number

pytestmark = pytest.mark.e2e


def assert_audio(daemon: Daemon, dsn: str, row: dict[str, object]) -> None:
    """The recording ends archived and sealed: no WAV left, an object that is not Ogg and not
    readable without the key, and, decrypted, Opus audio of the call's length that is not
    silence."""
    s = settings_of(daemon)
    row = wait_archived(dsn, row)
    assert row["encrypted"] is True and row["audio_format"] == "opus"
    wav = s.asterisk.recordings_dir / str(row["file_path"])
    assert not wav.exists() and not (wav.parent / (wav.name + ".done")).exists()
    stored = (s.storage.path / object_name(uuid.UUID(str(row["id"])))).read_bytes()
    assert b"OggS" not in stored and b"OpusHead" not in stored
    data = archived_audio(dsn, s, row["id"])
    assert data[:4] == b"OggS" and len(data) == row["file_size"]
    assert hashlib.sha256(data).hexdigest() == row["sha256"]
    samples = decoded_pcm(data)
    loud = sum(1 for x in samples if abs(x) > 500)
    assert loud > len(samples) * 0.05, "the recording is (nearly) silent"
    assert abs(len(samples) / 8000 - float(row["duration_seconds"])) < 1.5  # type: ignore[arg-type]


def assert_wav(asterisk: Asterisk, row: dict[str, object]) -> None:
    """MixMonitor's WAV as the row describes it (before the archive step has it)."""
    path = asterisk.recordings_dir / str(row["file_path"])
    data = path.read_bytes()
    assert len(data) == row["file_size"]
    assert hashlib.sha256(data).hexdigest() == row["sha256"]
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2
        samples = array.array("h", w.readframes(w.getnframes()))
        seconds = w.getnframes() / w.getframerate()
    loud = sum(1 for s in samples if abs(s) > 500)
    assert loud > len(samples) * 0.05, "the recording is (nearly) silent"
    # The audio covers the recorded time (MixMonitor writes silence for quiet stretches).
    assert abs(seconds - float(row["duration_seconds"])) < 1.0  # type: ignore[arg-type]
    assert not (path.parent / (path.name + ".done")).exists(), "marker left behind"


def test_inbound_call_bridged_to_agent(
    daemon: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    driver.inbound("0300", "+358 40 123 4567", talk=4)
    (row,) = wait_rows(db_dsn, 1)
    assert row["register_name"] == "customer-service"
    assert row["direction"] == "inbound"
    assert row["service_number"] == "0300"
    assert row["customer_number_masked"] == "+358401234***"
    assert row["agent_name"] == "alice"
    assert row["legal_hold"] is False
    # Talk time is 4 s from the answer; the notice (a beep) plays before the call is marked.
    assert abs(float(row["duration_seconds"]) - 4.0) < 1.5  # type: ignore[arg-type]
    span = (row["ended_at"] - row["started_at"]).total_seconds()  # type: ignore[operator]
    assert abs(span - float(row["duration_seconds"])) < 0.001  # type: ignore[arg-type]
    assert row["retain_until"] - row["ended_at"] >= timedelta(days=180)  # type: ignore[operator]
    path = str(row["file_path"])
    # The name gives the register and the node, never the number (docs/dialplan.md#file-names).
    assert path.endswith(f"/{row['id']}.customer-service.{settings_of(daemon).node}.wav")
    assert not path.startswith("/")
    assert_audio(daemon, db_dsn, row)
    assert '"recording stored"' in daemon.log()


def test_outbound_rings_before_answer_and_ringing_is_not_recorded(
    daemon: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    driver.outbound("0401234567", agent="bob", ring=3, talk=4)
    (row,) = wait_rows(db_dsn, 1)
    assert row["register_name"] == "telesales" and row["direction"] == "outbound"
    assert row["customer_number_masked"] == "0401234***"
    assert row["agent_name"] == "bob"
    assert row["service_number"] == "0201234567"
    # 3 s of ringing are not in it: the recording is the 4 s of talk.
    assert abs(float(row["duration_seconds"]) - 4.0) < 1.5  # type: ignore[arg-type]
    assert_audio(daemon, db_dsn, row)


def test_unrecorded_line_leaves_no_row_and_no_file(
    daemon: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    storage = settings_of(daemon).storage.path
    before = {p for p in storage.rglob("*") if p.is_file()}
    wavs = {p for p in asterisk.recordings_dir.rglob("*") if p.is_file()}
    # An internal call (no CALLREC_REGISTER) beside a recorded one, at the same time.
    driver.originate("Local/alice@callrec-internal", context="test-customer-talk", variables={"__TALK": "3"})
    driver.inbound("0301", "0401112222", talk=3)
    rows = wait_rows(db_dsn, 1)
    wait_no_channels(asterisk)
    rows = wait_rows(db_dsn, 2, timeout=1)
    assert [r["service_number"] for r in rows] == ["0301"]
    wait_archived(db_dsn, rows[0])
    after = {p for p in storage.rglob("*") if p.is_file()}
    assert after - before == {storage / object_name(uuid.UUID(str(rows[0]["id"])))}
    assert {p for p in asterisk.recordings_dir.rglob("*") if p.is_file()} - wavs == set(), "a WAV was left"


HOSTILE = {
    "0310": "anonymous",
    "0311": "123",
    "0312": "+358 (40) 765-4321",
    "0313": '040,555",1234',
    "0314": "\"'; DROP TABLE recordings; --0409998877",
    "0315": "../../../etc/passwd0405556666",
    "0316": "9" * 1024,
    "0317": "",
}


def test_strange_caller_ids_several_calls_at_once(
    daemon: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    for service, number in HOSTILE.items():
        driver.inbound(service, number, talk=3)
    rows = wait_rows(db_dsn, len(HOSTILE), timeout=60)
    by_service = {r["service_number"]: r for r in rows}
    assert set(by_service) == set(HOSTILE), "every call has exactly one row"
    assert len(rows) == len(HOSTILE)
    for service, number in HOSTILE.items():
        row = by_service[service]
        assert row["customer_number_masked"] == mask_number(number), service
        assert_audio(daemon, db_dsn, row)
    wait_no_channels(asterisk)

    # The full numbers are nowhere: not in the database, the log, or a file name.
    dump = subprocess.run(
        [str(pg_bindir() / "pg_dump"), "--data-only", db_dsn], capture_output=True, check=True
    ).stdout.decode()
    log = daemon.log()
    storage = settings_of(daemon).storage.path
    names = "\n".join(str(p) for d in (asterisk.recordings_dir, storage) for p in d.rglob("*"))
    for number in HOSTILE.values():
        digits = "".join(c for c in number if c.isdigit())
        if len(digits) <= 3:
            continue
        for haystack, what in ((dump, "pg_dump"), (log, "daemon log"), (names, "file names")):
            assert digits not in haystack.replace(" ", ""), f"{what} holds a full number"
            assert number not in haystack, f"{what} holds a full number"


def test_row_files_live_under_recordings_dir(
    daemon: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    driver.inbound("0320", "0401234567", talk=2)
    (row,) = wait_rows(db_dsn, 1)
    resolved = (asterisk.recordings_dir / str(row["file_path"])).resolve()
    assert resolved.is_relative_to(asterisk.recordings_dir.resolve())
    assert Path(str(row["file_path"])).parts[0] == f"{row['started_at']:%Y}"


def test_sigterm_drains_calls_being_recorded(
    tmp_path: Path, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    d = start_daemon(tmp_path, asterisk, db_dsn)
    driver.inbound("0330", "0401234567", talk=4)
    d.wait_log('"recording started"')
    d.proc.send_signal(signal.SIGTERM)
    # The daemon keeps watching until the call ends, writes the row, then exits cleanly.
    assert d.proc.wait(timeout=30) == 0
    (row,) = wait_rows(db_dsn, 1, timeout=0)
    assert abs(float(row["duration_seconds"]) - 4.0) < 1.5  # type: ignore[arg-type]
    assert '"draining recordings"' in d.log() and '"callrec stopped"' in d.log()
    if row["archived_at"] is None:  # the drain waits for rows, not for the archive step
        assert_wav(asterisk, row)
