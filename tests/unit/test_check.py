"""callrec check, the parts that need no Asterisk: file rights as the kernel decides them, the
GetConfig answer, /proc/net/tcp, and the hints. The checks against the real Asterisk and
PostgreSQL are in tests/e2e/test_check.py."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from callrec.ops.check import REQUIRED_CHANNELVARS, _channelvars_in_getconfig
from callrec.ops.check_dirs import probe_hint
from callrec.ops.check_result import Result
from callrec.ops.file_rights import (
    Identity,
    cannot_create_in,
    identity_of_user,
    listener_uid,
    newest_day_folder,
)

ASTERISK = Identity("user asterisk", 5001, frozenset({5000}))
CALLREC = Identity("user callrec", 5002, frozenset({5002, 5000}))
STRANGER = Identity("user nobody", 5003, frozenset({5003}))


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder every user can reach: pytest's own tmp_path sits under a 0700 folder of root."""
    if os.geteuid() != 0:
        pytest.skip("giving folders to other users needs root (CI runs as root)")
    path = Path(tempfile.mkdtemp(prefix="callrec-check-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def folder(path: Path, mode: int, uid: int, gid: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)
    path.chmod(mode)  # after chown, which clears the setgid bit
    return path


def test_the_recommended_folder_lets_asterisk_and_callrec_in(base: Path) -> None:
    rec = folder(base / "rec", 0o2770, ASTERISK.uid, 5000)
    assert cannot_create_in(rec, ASTERISK) is None
    assert cannot_create_in(rec, CALLREC) is None  # through the group
    assert cannot_create_in(rec, STRANGER) == rec


def test_root_passes_any_mode(base: Path) -> None:
    rec = folder(base / "rec", 0o700, ASTERISK.uid, 5000)
    assert cannot_create_in(rec, Identity("root", 0, frozenset({0}))) is None


def test_an_owner_without_write_is_refused_even_if_others_may(base: Path) -> None:
    # The kernel takes the owner's bits and stops there.
    rec = folder(base / "rec", 0o577, ASTERISK.uid, 5000)
    assert cannot_create_in(rec, ASTERISK) == rec
    assert cannot_create_in(rec, STRANGER) is None


def test_a_parent_without_search_permission_is_named(base: Path) -> None:
    closed = folder(base / "closed", 0o700, 0, 0)
    rec = folder(closed / "rec", 0o2777, ASTERISK.uid, 5000)
    assert cannot_create_in(rec, ASTERISK) == closed


def test_a_day_folder_made_under_umask_0027_shuts_asterisk_out(base: Path) -> None:
    # What the unit's former UMask=0027 did: callrec made 2026/11/22 as drwxr-s--- callrec:asterisk.
    rec = folder(base / "rec", 0o2770, ASTERISK.uid, 5000)
    day = folder(rec / "2026" / "11" / "22", 0o2750, CALLREC.uid, 5000)
    for parent in (rec / "2026", rec / "2026" / "11"):
        os.chown(parent, CALLREC.uid, 5000)
        parent.chmod(0o2750)
    assert newest_day_folder(rec) == day
    assert cannot_create_in(day, ASTERISK) == day
    day.chmod(0o2770)
    assert cannot_create_in(day, ASTERISK) is None


def test_newest_day_folder(tmp_path: Path) -> None:
    assert newest_day_folder(tmp_path) is None
    for day in ("2025/12/31", "2026/01/02", "2026/01/10", "2026/1/30", "lost+found/99/99"):
        (tmp_path / day).mkdir(parents=True)
    assert newest_day_folder(tmp_path) == tmp_path / "2026" / "01" / "10"


def test_identity_of_user() -> None:
    root = identity_of_user("root")
    assert root is not None and root.uid == 0 and 0 in root.gids
    assert identity_of_user("callrec-no-such-user") is None


def test_listener_uid_reads_proc_net_tcp(tmp_path: Path) -> None:
    header = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    )
    (tmp_path / "tcp").write_text(
        header
        # 127.0.0.1:5038 connected (01), then listening (0A) as uid 101; another port as uid 7.
        + "   0: 0100007F:13AE 0100007F:D3B2 01 00000000:00000000 00:00000000 00000000   102  0 1 1\n"
        + "   1: 0100007F:13AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101  0 2 1\n"
        + "   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     7  0 3 1\n"
    )
    assert listener_uid(5038, tmp_path) == 101
    assert listener_uid(8080, tmp_path) == 7
    assert listener_uid(5039, tmp_path) is None


def test_channelvars_from_a_getconfig_answer() -> None:
    # As Asterisk 22.10 answers GetConfig for the shipped ari.conf (the password elided).
    answer = {
        "Response": "Success",
        "Category-000000": "general",
        "Line-000000-000000": "enabled=yes",
        "Line-000000-000001": "pretty=no",
        "Line-000000-000002": "channelvars=CHANNEL(linkedid),CALLREC_REGISTER,CALLREC_SERVICE_NUMBER,"
        "CALLREC_AGENT,CALLREC_CUSTOMER_NUMBER,MIXMONITOR_FILENAME",
        "Category-000001": "callrec",
        "Line-000001-000000": "type=user",
        "Line-000001-000001": "channelvars=NOT_GENERAL",
    }
    assert list(_channelvars_in_getconfig(answer)) == list(REQUIRED_CHANNELVARS)
    del answer["Line-000000-000002"]
    assert list(_channelvars_in_getconfig(answer)) == []


def test_result_lines() -> None:
    assert Result("ok", "database").line() == "ok   database"
    assert Result("ok", "ari", "Asterisk 22").line() == "ok   ari (Asterisk 22)"
    assert Result("FAIL", "ami", "fix it").line() == "FAIL ami: fix it"
    assert Result("warn", "ari channelvars", "not verified").line() == "warn ari channelvars: not verified"


def test_probe_hints_say_what_to_run(tmp_path: Path) -> None:
    def hint(code: int) -> str:
        return probe_hint(OSError(code, os.strerror(code)), tmp_path, "callrec")

    assert "ReadWritePaths=" in hint(errno.EROFS)
    assert f"adduser callrec asterisk and chmod 2770 {tmp_path}" in hint(errno.EACCES)
    assert f"install -d -o asterisk -g asterisk -m 2770 {tmp_path}" in hint(errno.ENOENT)
