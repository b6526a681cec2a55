"""systemd/callrec.service: systemd accepts it, and its sandbox is tight without starving the daemon.

``systemd-analyze verify`` refuses a unit whose ExecStart binary is missing, and
/opt/callrec/bin/callrec exists only on an installed host, so the test verifies a copy whose
ExecStart points at this virtualenv's ``callrec`` instead; every other line is the shipped one.
``User=callrec`` and ``SupplementaryGroups=asterisk`` need no such care: verify does not resolve
users or groups (systemd does that only when it starts the service), so neither has to exist here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "callrec.service"
INSTALLED_EXEC = "/opt/callrec/bin/callrec"
# docs/operations.md#systemd-sandbox quotes this; the unit should stay "OK" on systemd's scale
# (below 2.0 of 10).
MAX_EXPOSURE = 2.0
_EXPOSURE = re.compile(r"Overall exposure level for callrec\.service: (\d+\.\d+)")


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze not found: apt-get install systemd (tests/harness/apt-deps.sh does)")
    return path


def local_copy(tmp_path: Path, extra: str = "") -> Path:
    """The unit with ExecStart on this virtualenv's callrec, under the same file name."""
    callrec = Path(sys.executable).parent / "callrec"
    assert callrec.exists(), f"{callrec}: install the package into the virtualenv (pip install -e .)"
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_EXEC} " in text
    text = text.replace(f"ExecStart={INSTALLED_EXEC} ", f"ExecStart={callrec} ")
    copy = tmp_path / "callrec.service"
    copy.write_text(text.replace("[Service]\n", f"[Service]\n{extra}", 1))
    return copy


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60
    )


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    res = verify(local_copy(tmp_path))
    # Warnings (unknown keys, bad values) do not change the exit code; they name the unit.
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "callrec.service" not in out, out


def test_verify_would_notice_a_mistake(tmp_path: Path) -> None:
    res = verify(local_copy(tmp_path, extra="RestartSecs=2\n"))
    assert "RestartSecs" in res.stdout + res.stderr


def test_security_exposure_is_low() -> None:
    res = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = _EXPOSURE.search(res.stdout)
    assert m, res.stdout + res.stderr
    score = float(m.group(1))
    print(f"systemd-analyze security: callrec.service exposure {score}")
    assert score < MAX_EXPOSURE, res.stdout


def test_the_sandbox_leaves_the_daemon_what_it_needs() -> None:
    text = UNIT.read_text()
    directives = [line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#"]
    values: dict[str, list[str]] = {}
    for key, value in directives:
        values.setdefault(key, []).append(value)
    # ARI (HTTP) and AMI over TCP, PostgreSQL over TCP or its Unix socket, sd_notify over AF_UNIX.
    assert set(values["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert values["Type"] == ["notify"] and values["NotifyAccess"] == ["main"]
    assert values["StateDirectory"] == ["callrec"]  # the journal in [daemon] state_dir
    assert "/var/spool/asterisk/callrec" in values["ReadWritePaths"][0].split()
    assert values["SupplementaryGroups"] == ["asterisk"]  # reads and deletes Asterisk's files
    # callrec makes the day folders that Asterisk, through the group, writes into: the umask
    # must keep group write, or MixMonitor cannot create the next day's files.
    umask = int(values["UMask"][0], 8)
    assert not umask & 0o070, f"UMask={values['UMask'][0]} drops group rights"
    # README's number_hmac_key_file is /run/credentials/callrec.service/number-hmac.
    assert {v.split(":")[0] for v in values["LoadCredential"]} == {"ari", "ami", "number-hmac", "archive-key"}
