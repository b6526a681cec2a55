"""The file-closed signal from Linux inotify that replaced MixMonitor's marker command."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callrec.recording.file_close import CloseWatch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux only")


@pytest.fixture
async def watch() -> AsyncIterator[CloseWatch]:
    w = CloseWatch.open()
    assert w is not None
    yield w
    w.close()


async def test_set_when_the_writer_closes_the_file(watch: CloseWatch, tmp_path: Path) -> None:
    path = tmp_path / "2026" / "11" / "22" / "a.wav"
    path.parent.mkdir(parents=True)
    assert watch.watch(path.parent)
    closed = watch.expect(path)
    marker = watch.expect(path.parent / "marker.wav")
    with path.open("wb") as f:  # as MixMonitor: open once, write while the call lasts, close
        f.write(b"RIFF")
        f.flush()
        # inotify keeps order: once a later file's close is seen, an earlier close would be too.
        (path.parent / "marker.wav").write_bytes(b"RIFF")
        await asyncio.wait_for(marker.wait(), 5)
        assert not closed.is_set()
    await asyncio.wait_for(closed.wait(), 5)


async def test_readers_and_other_files_do_not_count(watch: CloseWatch, tmp_path: Path) -> None:
    path, other = tmp_path / "a.wav", tmp_path / "b.wav"
    path.write_bytes(b"RIFF")
    assert watch.watch(tmp_path)
    closed = watch.expect(path)
    marker = watch.expect(other)
    path.read_bytes()  # hashing the file opens it read-only: IN_CLOSE_NOWRITE
    other.write_bytes(b"RIFF")
    # inotify keeps order: the other file's close is seen after anything the read caused.
    await asyncio.wait_for(marker.wait(), 5)
    assert not closed.is_set()
    path.write_bytes(b"RIFF....")
    await asyncio.wait_for(closed.wait(), 5)


async def test_one_watch_per_day_folder(watch: CloseWatch, tmp_path: Path) -> None:
    day1, day2 = tmp_path / "d1", tmp_path / "d2"
    day1.mkdir()
    day2.mkdir()
    assert watch.watch(day1)
    pending = watch.expect(day1 / "late.wav")
    assert watch.watch(day2)  # day1 still has a file awaited: its watch stays
    (day1 / "late.wav").write_bytes(b"x")
    await asyncio.wait_for(pending.wait(), 5)
    watch.forget(day1 / "late.wav")
    assert watch.watch(tmp_path)  # now day1 and day2 are idle: only the newest is watched
    assert watch._dirs.keys() == {tmp_path}


async def test_a_missing_folder_is_refused(watch: CloseWatch, tmp_path: Path) -> None:
    assert not watch.watch(tmp_path / "missing")
