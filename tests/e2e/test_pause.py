"""Pausing a recording for card numbers on the real Asterisk 22: from the dialplan
(Set(CALLREC_PAUSE=1/0) on the customer's channel), from the agent's keys (*81/*82,
features.conf applicationmap), from the API, and the automatic resume after max_pause.

The agent plays tt-monkeys through the whole call, so the file is loud everywhere except where
MixMonitorMute made it silent; the paused span on the row must be exactly that silence.
"""

from __future__ import annotations

import array
import asyncio
import time
import tomllib
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from tests.e2e.conftest import Daemon, run_daemon, start_daemon, wait_no_channels, wait_rows
from tests.e2e.test_service import Scrape
from tests.e2e.test_transfers import _callrec, _status
from tests.harness.asterisk import Asterisk
from tests.harness.browser import Browser
from tests.harness.calls import wait_channel
from tests.harness.driver import Driver

pytestmark = pytest.mark.e2e


@pytest.fixture
def daemon(tmp_path: Path, asterisk: Asterisk, db_dsn: str) -> Iterator[Daemon]:
    """These tests read MixMonitor's WAV sample by sample (durations, silent spans): the
    archive step, which replaces it with Opus, stays off (tests/e2e/test_recording.py checks it)."""
    yield from run_daemon(tmp_path, asterisk, db_dsn, archive=False)


def _loudness(asterisk: Asterisk, row: dict[str, object], start: float, end: float) -> float:
    """The share of loud samples (|s| > 500) in [start, end) seconds of the row's file."""
    with wave.open(str(asterisk.recordings_dir / str(row["file_path"]))) as w:
        rate = w.getframerate()
        samples = array.array("h", w.readframes(w.getnframes()))
    part = samples[int(start * rate) : int(end * rate)]
    assert len(part) > rate * 0.5, f"[{start}, {end}) is not in the file"
    return sum(1 for s in part if abs(s) > 500) / len(part)


def assert_paused(
    asterisk: Asterisk,
    row: dict[str, object],
    length: float,
    talk: float,
    agents: tuple[str, ...] = ("alice",),
    tolerance: float = 0.6,
) -> None:
    """One paused span of about ``length`` s, silent in the file; loud before and after; the
    whole call still recorded (a pause is silence of the same length, not a cut)."""
    assert [a["agent"] for a in row["agents"]] == list(agents)  # type: ignore[attr-defined]
    (span,) = row["paused"]  # type: ignore[misc]
    start, end = span
    assert abs((end - start) - length) < tolerance, span
    duration = float(row["duration_seconds"])  # type: ignore[arg-type]
    assert abs(duration - talk) < 1.5
    with wave.open(str(asterisk.recordings_dir / str(row["file_path"]))) as w:
        assert abs(w.getnframes() / w.getframerate() - talk) < 1.5
    assert _loudness(asterisk, row, start + 0.2, end - 0.2) == 0.0, "the paused span is not silent"
    assert _loudness(asterisk, row, 0.3, start - 0.2) > 0.05, "silent before the pause"
    assert _loudness(asterisk, row, end + 0.2, min(duration, end + 3)) > 0.05, "silent after the pause"


def _audit(db_dsn: str, rid: object) -> list[tuple[str, str | None]]:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT action, detail->>'source' FROM audit_log WHERE recording_id = %s AND action IN"
            " ('pause', 'resume') ORDER BY id",
            (rid,),
        ).fetchall()
    return [(a, s) for a, s in rows]


def test_pause_and_resume_from_the_dialplan(
    daemon: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    driver.inbound("0300", "+358401234567", talk=9, extra={"PAUSE_AT": "3", "PAUSE_FOR": "3"})
    (row,) = wait_rows(db_dsn, 1)
    assert_paused(asterisk, row, 3.0, 9)
    assert _audit(db_dsn, row["id"]) == [("pause", "dialplan"), ("resume", "dialplan")]
    scrape = Scrape(daemon)
    for action in ("pause", "resume"):
        labels = {"register": "customer-service", "action": action, "source": "dialplan"}
        assert scrape.value("callrec_recording_pauses_total", **labels) == 1


def test_a_pause_goes_on_through_a_blind_transfer(
    daemon: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    # alice pauses (*81), then blind-transfers to bob (#1 2002); bob resumes (*82) 2 s after he
    # answered. The customer talks all along.
    extra = {"KEYS_alice": "*81W#12002", "KEYS_bob": "*82", "KEYS_AFTER": "2"}
    driver.inbound("0300", "+358401234567", talk=12, extra=extra)
    (row,) = wait_rows(db_dsn, 1)
    # *81 ends 2.75 s in; W, #1, 2002 and bob's answer take ~2.5 s, his wait 2 s, *82 0.75 s.
    assert_paused(asterisk, row, 5.3, 12, agents=("alice", "bob"), tolerance=1.0)
    alice = row["agents"][0]  # type: ignore[index]
    (span,) = row["paused"]  # type: ignore[misc]
    left = (datetime.fromisoformat(alice["left_at"]) - row["started_at"]).total_seconds()  # type: ignore[operator]
    assert span[0] < left < span[1], "the transfer happened during the pause"
    assert [a for a, _ in _audit(db_dsn, row["id"])] == ["pause", "resume"]


def test_pause_and_resume_from_the_agents_keys(
    daemon: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    # alice presses *81, waits 3 s (SendDTMF's W is one second), presses *82.
    driver.inbound("0300", "+358401234567", talk=9, extra={"KEYS_alice": "*81WWW*82", "KEYS_AFTER": "2"})
    (row,) = wait_rows(db_dsn, 1)
    assert_paused(asterisk, row, 3.0 + 0.75, 9)  # the three keys of *82 take 0.75 s more
    assert [a for a, _ in _audit(db_dsn, row["id"])] == ["pause", "resume"]


def test_a_forgotten_resume_ends_after_max_pause(
    tmp_path: Path, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    d = start_daemon(tmp_path, asterisk, db_dsn, daemon_keys="max_pause = 2", archive=False)
    try:
        driver.inbound("0300", "+358401234567", talk=8, extra={"PAUSE_AT": "2"})  # never resumed
        (row,) = wait_rows(db_dsn, 1)
        assert_paused(asterisk, row, 2.0, 8)
        assert _audit(db_dsn, row["id"]) == [("pause", "dialplan"), ("resume", "auto")]
        assert '"pause longer than max_pause: resumed"' in d.log()
    finally:
        wait_no_channels(asterisk)
        assert d.stop() == 0


def _post(daemon: Daemon, token: str, path: str) -> tuple[int, bytes]:
    listen = tomllib.loads(daemon.config_path.read_text())["api"]["listen"]
    req = urllib.request.Request(
        f"http://{listen}{path}", method="POST", headers={"Authorization": f"Bearer {token}"}, data=b""
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_pause_and_resume_from_the_api(
    daemon: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    _callrec(daemon, "users", "add", "sue", "--role", "supervisor")
    _callrec(daemon, "users", "add", "alice", "--role", "agent", "--supervisor", "sue")
    _callrec(daemon, "users", "add", "dave", "--role", "agent")
    alice, sue, dave = (_callrec(daemon, "users", "token", n) for n in ("alice", "sue", "dave"))
    assert _post(daemon, alice, "/api/calls/current/pause")[0] == 404  # no call yet
    driver.inbound("0300", "+358401234567", talk=9)
    wait_channel(asterisk, "Local/alice@callrec-agents-")
    daemon.wait_log('"recording started"')
    time.sleep(2)  # alice talks for 2 s, then the customer reads out a card number for 3 s
    assert _post(daemon, dave, "/api/calls/current/pause")[0] == 404, "not dave's call"
    status, body = _post(daemon, alice, "/api/calls/current/pause")
    assert status == 200 and b'"paused":true' in body and b'"changed":true' in body
    time.sleep(3)
    assert _post(daemon, dave, "/api/calls/current/resume")[0] == 404
    rid = body.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()
    assert _post(daemon, sue, f"/api/calls/{rid}/resume")[0] == 200, "alice's supervisor, by id"
    assert _post(daemon, alice, "/api/calls/current/resume")[1].count(b'"changed":false') == 1
    (row,) = wait_rows(db_dsn, 1)
    assert str(row["id"]) == rid
    assert_paused(asterisk, row, 3.0, 9)
    # One audit row per request: alice's pause, sue's resume, alice's resume that changed nothing.
    assert [a for a, _ in _audit(db_dsn, rid)] == ["pause", "resume", "resume"]
    assert _status(daemon, dave, f"/api/recordings/{rid}") == 404


def test_pause_and_resume_from_the_agents_page(
    daemon: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str, tmp_path: Path
) -> None:
    """The agent's list shows their call in progress with a pause button (docs/web.md), in
    Chromium against the daemon's own listener, while Asterisk records the call."""
    _callrec(daemon, "users", "add", "alice", "--role", "agent")
    token = _callrec(daemon, "users", "token", "alice")
    base = "http://" + tomllib.loads(daemon.config_path.read_text())["api"]["listen"] + "/"

    def call_recording() -> float:
        driver.inbound("0300", "+358401234567", talk=9)
        wait_channel(asterisk, "Local/alice@callrec-agents-")
        daemon.wait_log('"recording started"')
        return time.monotonic()

    async def on_the_page() -> list[str]:
        seen = []
        async with Browser.launch(tmp_path / "profile") as browser:
            page = await browser.new_page()
            await page.goto(base)
            await page.submit("form:has(input[name=token])", {"token": token})  # signed in before the call
            started = await asyncio.to_thread(call_recording)
            await page.goto(base)  # the page has no script: it shows the call once loaded again
            seen.append(await page.eval("document.querySelector('section.live p').innerText"))
            # alice talks for 2 s from the start, then the customer reads out a card number for 3 s
            await asyncio.sleep(max(0.0, 2 - (time.monotonic() - started)))
            await page.click("form[action='/calls/current/pause'] button")
            seen.append(await page.eval("document.querySelector('section.live p').innerText"))
            await asyncio.sleep(3)
            await page.click("form[action='/calls/current/resume'] button")
            seen.append(await page.eval("document.querySelector('section.live p').innerText"))
        return seen

    seen = asyncio.run(on_the_page())
    assert seen == [
        "Your call is being recorded.",
        "Recording is paused for card details.",
        "Your call is being recorded.",
    ]
    (row,) = wait_rows(db_dsn, 1)
    assert_paused(asterisk, row, 3.0, 9)
    assert [a for a, _ in _audit(db_dsn, row["id"])] == ["pause", "resume"]
