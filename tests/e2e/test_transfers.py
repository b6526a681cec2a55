"""A call recorded whole through transfers: real Asterisk 22 loading dialplan/ (features.conf,
callrec-transfer), real PostgreSQL, the daemon as a process.

Each script of tests/harness/calls.py transfers a call the way an agent's phone (DTMF) or a
PBX application (AMI) does; the row must be one, cover the customer's whole call, and list
every agent. The same scripts gave the pure tracker its transcripts (tests/unit/test_tracker.py).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from tests.e2e.conftest import Daemon, run_daemon, wait_no_channels, wait_rows
from tests.e2e.test_recording import assert_wav
from tests.harness.asterisk import REPO, Asterisk
from tests.harness.calls import SCENARIOS, Expected
from tests.harness.driver import Driver

pytestmark = pytest.mark.e2e


@pytest.fixture
def daemon(tmp_path: Path, asterisk: Asterisk, db_dsn: str) -> Iterator[Daemon]:
    """These tests read MixMonitor's WAV sample by sample (durations, silent spans): the
    archive step, which replaces it with Opus, stays off (tests/e2e/test_recording.py checks it)."""
    yield from run_daemon(tmp_path, asterisk, db_dsn, archive=False)


def assert_whole_call(asterisk: Asterisk, row: dict[str, object], exp: Expected) -> None:
    assert row["direction"] == exp.direction
    duration = float(row["duration_seconds"])  # type: ignore[arg-type]
    assert abs(duration - exp.talk) < 1.5, f"{duration} s recorded of a {exp.talk} s call"
    with wave.open(str(asterisk.recordings_dir / str(row["file_path"]))) as w:
        audio = w.getnframes() / w.getframerate()
    assert abs(audio - exp.talk) < 1.5, f"{audio} s of audio for a {exp.talk} s call"
    assert_wav(asterisk, row)
    agents = row["agents"]
    assert isinstance(agents, list)
    names = [a["agent"] for a in agents]
    assert len(names) >= len(exp.agents) and names[0] == exp.agents[0] == row["agent_name"]
    assert all(e in ("*", n) for e, n in zip(exp.agents, names, strict=False)), names
    started, ended = row["started_at"], row["ended_at"]
    for a in agents:
        joined, left = datetime.fromisoformat(a["joined_at"]), datetime.fromisoformat(a["left_at"])
        assert started <= joined <= left <= ended  # type: ignore[operator]
    # The first agent left at the transfer; the last stayed with the customer to the end.
    assert datetime.fromisoformat(agents[0]["left_at"]) < ended  # type: ignore[operator]
    assert datetime.fromisoformat(agents[-1]["left_at"]) == ended


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_transferred_call_is_one_row_covering_the_customers_whole_call(
    name: str, daemon: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    exp = SCENARIOS[name](driver, asterisk)
    wait_rows(db_dsn, 1)
    wait_no_channels(asterisk)
    rows = wait_rows(db_dsn, 2, timeout=1)
    assert len(rows) == 1, [r["agents"] for r in rows]
    assert_whole_call(asterisk, rows[0], exp)


def _callrec(daemon: Daemon, *args: str) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "callrec.cli", *args, "--config", str(daemon.config_path)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO / "daemon")},
        check=True,
    )
    return res.stdout.strip()


def _status(daemon: Daemon, token: str, path: str) -> int:
    listen = tomllib.loads(daemon.config_path.read_text())["api"]["listen"]
    req = urllib.request.Request(f"http://{listen}{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_an_agent_added_by_a_transfer_hears_the_recording_another_team_does_not(
    daemon: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    # sue supervises bob, who takes the transferred call; sid supervises dave, who was not on it.
    for args in (
        ("sue", "--role", "supervisor"),
        ("sid", "--role", "supervisor"),
        ("bob", "--role", "agent", "--supervisor", "sue"),
        ("dave", "--role", "agent", "--supervisor", "sid"),
    ):
        _callrec(daemon, "users", "add", *args)
    tokens = {n: _callrec(daemon, "users", "token", n) for n in ("sue", "sid", "bob", "dave")}
    exp = SCENARIOS["inbound_blind_dtmf"](driver, asterisk)
    (row,) = wait_rows(db_dsn, 1)
    assert [a["agent"] for a in row["agents"]] == list(exp.agents)  # type: ignore[attr-defined]
    audio = f"/api/recordings/{row['id']}/audio"
    assert _status(daemon, tokens["bob"], audio) == 200, "the agent the call was transferred to"
    assert _status(daemon, tokens["sue"], audio) == 200, "that agent's supervisor"
    assert _status(daemon, tokens["dave"], audio) == 404, "an agent of another team"
    assert _status(daemon, tokens["sid"], audio) == 404, "a supervisor of another team"
