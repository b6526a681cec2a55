"""The rules of the start-up scan for recordings without journal entry or row
(recording/strays.py) and the names it reads them from (recording/layout.py)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from callrec.config import Register, Retention, load
from callrec.recording import layout, strays
from callrec.recording.strays import Rules, audio_seconds, find, restat
from callrec.retention.files import orphan_age, scan_day
from tests.harness.audio import tone_wav
from tests.harness.config import offline_toml

DAY = "2026/11/22"
NOW = time.time()


def test_a_name_carries_id_register_and_node_and_reads_back() -> None:
    rid = uuid.uuid4()
    rel = layout.file_path(rid, 1795373518.0, "customer-service", "pbx1.example.org")
    assert rel == f"2026/11/22/{rid}.customer-service.pbx1.example.org.wav"
    assert layout.parse(rel) == layout.Named(rid, rel, "customer-service", "pbx1.example.org")
    assert layout.parse(f"{DAY}/{rid}.wav") == layout.Named(rid, f"{DAY}/{rid}.wav", None, None)
    assert layout.parse(f"{DAY}/{rid}.telesales.wav") == layout.Named(
        rid, f"{DAY}/{rid}.telesales.wav", "telesales", None
    )
    assert layout.named_by_callrec(f"/rec/{rel}", Path("/rec")) == (rid, rel)


@pytest.mark.parametrize(
    "name",
    [
        "{rid}.Customer.wav",  # upper case: not a register name
        "{RID}.wav",  # an upper-case uuid is not one callrec writes
        "{rid}.reg..node.wav",
        "{rid}.reg.node,x.wav",
        "{rid}.reg.node.gsm",
        "x{rid}.wav",
        "{rid}.wav.done",
    ],
)
def test_names_callrec_never_gives_are_not_read(name: str) -> None:
    rid = uuid.uuid4()
    assert layout.parse(f"{DAY}/{name.format(rid=rid, RID=str(rid).upper())}") is None
    assert layout.parse(f"2026/11/{rid}.wav") is None


@pytest.mark.parametrize("node", ["pbx 1", "a,b", "Local/0401234567", "x" * 65, "a..b", ".a", "ä"])
def test_a_node_name_unsafe_in_a_file_name_is_hashed(node: str) -> None:
    tag = layout.node_tag(node)
    assert tag.startswith("n-") and tag == layout.node_tag(node) and tag != layout.node_tag(node + "x")
    rid = uuid.uuid4()
    named = layout.parse(layout.file_path(rid, NOW, "customer-service", node))
    assert named is not None and named.node == tag and named.register == "customer-service"


def test_the_orphan_sweep_reads_every_name_callrec_gives(tmp_path: Path) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    names = [f"{ids[0]}.wav", f"{ids[1]}.customer-service.pbx1.wav", f"{ids[2]}.telesales.wav"]
    (tmp_path / DAY).mkdir(parents=True)
    for name in names:
        (tmp_path / DAY / name).write_bytes(b"x")
        (tmp_path / DAY / (name + ".done")).write_bytes(b"")
    (tmp_path / DAY / "notes.wav").write_bytes(b"x")
    audio, markers = scan_day(tmp_path, DAY, time.time() + 10)
    assert sorted(audio) == sorted((i, f"{DAY}/{n}", 1) for i, n in zip(ids, names, strict=True))
    assert sorted(markers) == sorted(f"{DAY}/{n}.done" for n in names)


def _file(root: Path, name: str, *, age: float, data: bytes = b"x") -> Path:
    day = time.strftime("%Y/%m/%d", time.gmtime(NOW - age))
    path = root / day / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (NOW - age, NOW - age))
    return path


def test_find_takes_this_nodes_files_and_unnamed_ones_within_the_window(tmp_path: Path) -> None:
    mine, unnamed, other, old, linked, foreign = (uuid.uuid4() for _ in range(6))
    _file(tmp_path, f"{mine}.customer-service.pbx1.wav", age=3600)
    _file(tmp_path, f"{unnamed}.wav", age=7200)
    _file(tmp_path, f"{other}.customer-service.pbx2.wav", age=3600)  # pbx2 recovers its own
    _file(tmp_path, f"{old}.customer-service.pbx1.wav", age=40 * 86400)  # the sweep's
    target = _file(tmp_path, "elsewhere.bin", age=3600)
    (target.parent / f"{linked}.customer-service.pbx1.wav").symlink_to(target)
    _file(tmp_path, f"{foreign}-recording.wav", age=3600)
    found = find(tmp_path, NOW - 30 * 86400, "pbx1")
    assert {f.named.recording_id for f in found} == {mine, unnamed}
    by_id = {f.named.recording_id: f for f in found}
    assert by_id[mine].size == 1 and by_id[mine].mtime == pytest.approx(NOW - 3600)
    assert by_id[unnamed].named.register is None


def test_find_in_an_empty_or_missing_folder(tmp_path: Path) -> None:
    assert find(tmp_path / "absent", NOW - 86400, "pbx1") == []
    assert find(tmp_path, NOW - 86400, "pbx1") == []


def test_audio_length_comes_from_the_file_size_when_the_header_has_none(tmp_path: Path) -> None:
    closed, cut, bad = tmp_path / "a.wav", tmp_path / "b.wav", tmp_path / "c.wav"
    closed.write_bytes(tone_wav(3.0))
    cut.write_bytes(tone_wav(2.5, sizes=False))  # left by an Asterisk crash
    bad.write_bytes(b"not a wav at all")
    assert audio_seconds(closed) == pytest.approx(3.0)
    assert audio_seconds(cut) == pytest.approx(2.5)
    assert audio_seconds(bad) == 0.0
    assert audio_seconds(tmp_path / "gone.wav") == 0.0


REGISTERS = {
    "customer-service": Register("customer-service", "inbound", Retention(6, "month")),
    "dpo-only": Register("dpo-only", "inbound", Retention(1, "month")),
}


def _named(register: str | None) -> layout.Named:
    return layout.Named(uuid.uuid4(), "x", register, None)


def test_the_register_is_the_named_one_else_the_configured_fallback_else_none() -> None:
    strict = Rules(Path("/r"), "pbx1", REGISTERS, None, window=1.0, quiet=1.0)
    fallback = Rules(Path("/r"), "pbx1", REGISTERS, "dpo-only", window=1.0, quiet=1.0)
    assert strict.register_of(_named("customer-service")) is REGISTERS["customer-service"]
    assert strict.register_of(_named(None)) is None
    assert strict.register_of(_named("removed-from-config")) is None
    assert fallback.register_of(_named(None)) is REGISTERS["dpo-only"]
    assert fallback.register_of(_named("removed-from-config")) is REGISTERS["dpo-only"]
    assert fallback.register_of(_named("customer-service")) is REGISTERS["customer-service"]


def test_the_scan_stops_a_day_short_of_the_orphan_sweep(tmp_path: Path) -> None:
    cfg = tmp_path / "callrec.toml"
    cfg.write_text(offline_toml(tmp_path, "postgresql://x@localhost/x", node="pbx1"))
    s = load(cfg)
    rules = Rules.of(s)
    sweep_age = orphan_age((r.retention.approx_days for r in s.registers.values()), s.orphan_grace)
    assert rules.window == sweep_age - 86400.0 > 0
    assert rules.quiet == s.file_wait_timeout and rules.node == "pbx1"
    # 6 months (186 days at most) + 7 days' grace - 1 day.
    assert rules.window == (186 + 7 - 1) * 86400.0


def test_a_short_orphan_age_keeps_half_of_it_between_scan_and_sweep(tmp_path: Path) -> None:
    cfg = tmp_path / "callrec.toml"
    text = offline_toml(tmp_path, "postgresql://x@localhost/x", '[retention]\norphan_grace = "1 hour"')
    cfg.write_text(text.replace('retention = "6 months"', 'retention = "1 day"'))
    assert Rules.of(load(cfg)).window == (86400.0 + 3600.0) / 2


def test_files_looked_at_again_are_read_as_they_are_now(tmp_path: Path) -> None:
    kept, gone = uuid.uuid4(), uuid.uuid4()
    a = _file(tmp_path, f"{kept}.customer-service.pbx1.wav", age=60)
    b = _file(tmp_path, f"{gone}.customer-service.pbx1.wav", age=60)
    before = find(tmp_path, NOW - 3600, "pbx1")
    a.write_bytes(b"longer now")
    b.unlink()
    (now,) = restat(tmp_path, before)
    assert now.named.recording_id == kept and now.size == len(b"longer now") and now.mtime > NOW - 60


async def test_an_unreadable_recordings_dir_ends_the_scan_with_a_line_not_the_daemon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def denied(root: Path, since: float, tag: str) -> list[object]:
        raise PermissionError(13, "Permission denied", str(root))

    monkeypatch.setattr(strays, "find", denied)
    rules = Rules(Path("/r"), "pbx1", REGISTERS, None, window=1.0, quiet=1.0)
    scan = strays.StrayScan(rules, None, None, None, None)  # type: ignore[arg-type]
    with capture_logs() as logs:
        await scan.run(set())
    assert scan.first_pass.is_set()
    assert [e["event"] for e in logs] == ["cannot read recordings_dir for the file scan; next start"]
