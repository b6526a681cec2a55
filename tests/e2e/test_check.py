"""`callrec check` against the real Asterisk 22 and PostgreSQL: it passes on a ready host and
names the fix for each thing an installer gets wrong.

The command runs as a process, exactly as an operator runs it. Asterisk runs as root in the test
chroot, so "Asterisk cannot write recordings_dir" cannot happen here; tests/unit/test_check.py
decides that case on real folders given to other users.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.conftest import wait_no_channels, write_config
from tests.harness.asterisk import REPO, Asterisk, free_port
from tests.harness.driver import Driver
from tests.harness.postgres import Cluster

pytestmark = pytest.mark.e2e

CHECKS = [
    "config",
    "ari",
    "ami",
    "ami actions",
    "ari channelvars",
    "database",
    "database schema",
    "database roles",
    "recordings_dir writable by asterisk",
    "recordings_dir usable by callrec",
    "archive",
    "archive encryption",
    "archive store",
    "archive keys",
    "archive backlog",
    "archive integrity",
    "node",
    "other nodes",
]


def config(tmp_path: Path, asterisk: Asterisk, dsn: str, **overrides: object) -> Path:
    """The e2e config with some keys replaced (values written as TOML, i.e. JSON-quoted)."""
    path = tmp_path / "callrec.toml"
    write_config(path, asterisk, dsn, free_port())
    text = path.read_text()
    for key, value in overrides.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {json.dumps(value)}", text)
        assert n == 1, key
    path.write_text(text)
    return path


def run_check(cfg: Path) -> tuple[int, dict[str, tuple[str, str]]]:
    """Exit code, and check name -> (status, line)."""
    res = subprocess.run(
        [sys.executable, "-m", "callrec.cli", "check", "--config", str(cfg), "--timeout", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPO / "daemon")),
    )
    lines = res.stdout.splitlines()
    found = {}
    for line in lines:
        status, rest = line[:4].strip(), line[5:]
        name = re.match(r"[^:(]+", rest)
        assert name, line
        found[name.group().strip()] = (status, line)
    assert list(found) == CHECKS, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, found


def statuses(found: dict[str, tuple[str, str]]) -> dict[str, str]:
    return {name: status for name, (status, _) in found.items()}


def test_a_ready_host_passes_every_check(tmp_path: Path, asterisk: Asterisk, db_dsn: str) -> None:
    wait_no_channels(asterisk)
    code, found = run_check(config(tmp_path, asterisk, db_dsn))
    assert code == 0, found
    assert set(statuses(found).values()) == {"ok"}, found
    # No channel is up, so channelvars come from ari.conf read over AMI.
    assert "read from ari.conf" in found["ari channelvars"][1]
    assert "Asterisk runs as root" in found["recordings_dir writable by asterisk"][1]


def test_channelvars_are_read_from_a_live_channel(
    tmp_path: Path, asterisk: Asterisk, db_dsn: str, driver: Driver
) -> None:
    # An unrecorded internal call that lasts until the test hangs it up: no race with its end.
    driver.originate("Local/alice@callrec-internal", context="test-customer-talk", variables={"__TALK": "60"})
    try:
        deadline = time.monotonic() + 10
        while "0 active channels" in asterisk.cli_output("core show channels count"):
            assert time.monotonic() < deadline, "the call did not start"
        code, found = run_check(config(tmp_path, asterisk, db_dsn))
    finally:
        driver.action("Hangup", {"Channel": "/^Local\\/alice@callrec-internal-/"})
        wait_no_channels(asterisk)
    assert code == 0, found
    assert "seen on a live channel" in found["ari channelvars"][1]


def test_wrong_ari_password(tmp_path: Path, asterisk: Asterisk, db_dsn: str) -> None:
    code, found = run_check(config(tmp_path, asterisk, db_dsn, ari_password="not-the-password"))
    assert code == 1
    status, line = found["ari"]
    assert status == "FAIL" and "refused ARI user 'callrec'" in line and "ari_password" in line, line
    assert statuses(found) | {"ari": "FAIL"} == {
        **dict.fromkeys(CHECKS, "ok"),
        "ari": "FAIL",
        # Both need what ARI tells: Asterisk's run user, its channels.
        "ari channelvars": "skip",
        "recordings_dir writable by asterisk": "skip",
    }


def test_wrong_ami_secret(tmp_path: Path, asterisk: Asterisk, db_dsn: str) -> None:
    wait_no_channels(asterisk)
    code, found = run_check(config(tmp_path, asterisk, db_dsn, ami_secret="not-the-secret"))
    assert code == 1
    status, line = found["ami"]
    assert status == "FAIL" and "Authentication failed" in line and "ami_secret" in line, line
    assert found["ami actions"][0] == "skip"
    # With no channel up and no AMI to read ari.conf, channelvars cannot be verified: said so.
    assert found["ari channelvars"][0] == "warn", found["ari channelvars"]
    assert found["ari"][0] == found["database"][0] == "ok"


@pytest.fixture
def ami_user_without_system(asterisk: Asterisk) -> Iterator[str]:
    """A manager.conf user with write = call only: it may StopMixMonitor but not MixMonitor."""
    name = f"callrec-nosystem-{uuid.uuid4().hex[:8]}"
    with (asterisk.host_base / "etc" / "manager.conf").open("a") as f:
        f.write(f"\n[{name}]\nsecret = {asterisk.ami_secret}\nread =\nwrite = call\n")
    asterisk.cli("manager reload")
    yield name


def test_ami_user_that_may_not_run_mixmonitor(
    tmp_path: Path, asterisk: Asterisk, db_dsn: str, ami_user_without_system: str
) -> None:
    code, found = run_check(config(tmp_path, asterisk, db_dsn, ami_username=ami_user_without_system))
    assert code == 1
    assert found["ami"][0] == "ok"
    status, line = found["ami actions"]
    assert status == "FAIL" and "may not run MixMonitor:" in line and "write = call,system" in line, line


def test_channelvars_missing_from_ari_conf(tmp_path: Path, asterisk: Asterisk, db_dsn: str) -> None:
    # Only the file changes, not what Asterisk has loaded, so the other tests are not affected.
    ari_conf = asterisk.host_base / "etc" / "ari.conf"
    shipped = ari_conf.read_text()
    ari_conf.write_text(re.sub(r"(?m)^channelvars = .*$", "channelvars = CALLREC_REGISTER", shipped))
    try:
        wait_no_channels(asterisk)
        code, found = run_check(config(tmp_path, asterisk, db_dsn))
    finally:
        ari_conf.write_text(shipped)
    assert code == 1
    status, line = found["ari channelvars"]
    assert status == "FAIL", line
    assert "lacks CHANNEL(linkedid), CALLREC_SERVICE_NUMBER, CALLREC_AGENT, CALLREC_CUSTOMER_NUMBER" in line
    assert "module reload res_ari.so" in line


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """What the unit's ProtectSystem=strict makes of a folder missing from ReadWritePaths=."""
    path = tmp_path / "recordings"
    path.mkdir()
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_read_only_recordings_dir(
    tmp_path: Path, asterisk: Asterisk, db_dsn: str, read_only_dir: Path
) -> None:
    code, found = run_check(config(tmp_path, asterisk, db_dsn, recordings_dir=str(read_only_dir)))
    assert code == 1
    status, line = found["recordings_dir usable by callrec"]
    assert status == "FAIL" and "read-only" in line and "ReadWritePaths=" in line, line
    assert list(read_only_dir.iterdir()) == []


def test_missing_recordings_dir(tmp_path: Path, asterisk: Asterisk, db_dsn: str) -> None:
    missing = tmp_path / "no-such-folder"
    code, found = run_check(config(tmp_path, asterisk, db_dsn, recordings_dir=str(missing)))
    assert code == 1
    for name in ("recordings_dir writable by asterisk", "recordings_dir usable by callrec"):
        status, line = found[name]
        assert status == "FAIL" and f"install -d -o asterisk -g asterisk -m 2770 {missing}" in line, line


def test_database_without_the_migrations(tmp_path: Path, asterisk: Asterisk, pg_cluster: Cluster) -> None:
    dbname = f"check_{uuid.uuid4().hex[:8]}"
    pg_cluster.createdb(dbname)
    cfg = config(tmp_path, asterisk, pg_cluster.runtime_dsn(dbname))
    code, found = run_check(cfg)
    assert code == 1
    assert found["database"][0] == "ok"
    status, line = found["database schema"]
    assert status == "FAIL" and "001_recordings" in line and f"callrec migrate --config {cfg}" in line, line

    # Doing what the line says makes the check pass.
    subprocess.run(
        [sys.executable, "-m", "callrec.cli", "migrate", "--config", str(cfg)],
        check=True,
        capture_output=True,
        env=dict(os.environ, PYTHONPATH=str(REPO / "daemon")),
    )
    code, found = run_check(cfg)
    assert found["database schema"][0] == "ok", found["database schema"]
    assert found["database roles"][0] == "ok", found["database roles"]  # migrate ran as the owner


def test_database_unreachable(tmp_path: Path, asterisk: Asterisk) -> None:
    dsn = f"postgresql://callrec@127.0.0.1:{free_port()}/callrec"
    code, found = run_check(config(tmp_path, asterisk, dsn))
    assert code == 1
    status, line = found["database"]
    assert status == "FAIL" and "cannot reach PostgreSQL" in line and "[database] dsn" in line, line
    assert found["database schema"][0] == found["database roles"][0] == "skip"


def test_archive_without_a_key_warns_that_audio_is_unencrypted(
    tmp_path: Path, asterisk: Asterisk, db_dsn: str
) -> None:
    code, found = run_check(config(tmp_path, asterisk, db_dsn, key_file=""))
    assert code == 0  # a warning, not a failure: encryption is the operator's choice
    status, line = found["archive encryption"]
    assert status == "warn" and "callrec keys init" in line


def test_archive_key_of_the_wrong_length_fails_in_one_line(
    tmp_path: Path, asterisk: Asterisk, db_dsn: str
) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"not 32 bytes\n")
    code, found = run_check(config(tmp_path, asterisk, db_dsn, key_file=str(short)))
    assert code == 1
    status, line = found["archive encryption"]
    assert status == "FAIL" and "holds 13 bytes, expected 32 random bytes" in line
    assert statuses(found)["archive store"] == "skip"
