"""safe_open.open_beneath: nothing outside the root is ever opened, however the tree changes
while it runs (issue #15 item 5). Real files and a real race; no mocks."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from callrec.safe_open import NotBeneath, open_beneath

REL = "2026/03/02/call.wav"
INSIDE, OUTSIDE = b"the recording", b"SECRET from outside recordings_dir"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "recordings"
    (root / "2026/03/02").mkdir(parents=True)
    (root / REL).write_bytes(INSIDE)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/call.wav").write_bytes(OUTSIDE)
    return root


def read(root: Path, rel: str = REL) -> bytes:
    with open_beneath(root, rel) as f:
        return f.read()


def test_reads_a_file_beneath_the_root(tree: Path) -> None:
    assert read(tree) == INSIDE
    link = tree.parent / "link-to-root"
    link.symlink_to(tree)
    assert read(link) == INSIDE  # the root itself may be a link: the operator chose it


@pytest.mark.parametrize(
    "plant",
    [
        lambda root: _swap_for_link(root / "2026/03/02", root.parent / "outside"),
        lambda root: _swap_for_link(root / "2026", root.parent / "outside"),
        lambda root: _swap_for_link(root / REL, root.parent / "outside/call.wav"),
        lambda root: ((root / REL).unlink(), os.mkfifo(root / REL)),
    ],
    ids=["day-folder-link", "year-folder-link", "file-link", "fifo"],
)
def test_links_and_odd_files_are_refused(tree: Path, plant: Callable[[Path], object]) -> None:
    plant(tree)
    with pytest.raises((NotBeneath, FileNotFoundError)) as caught:
        read(tree)
    if not (tree / "2026").is_symlink():
        assert isinstance(caught.value, NotBeneath)


@pytest.mark.parametrize("rel", ["../outside/call.wav", "/etc/passwd", "2026/../../outside/call.wav", ""])
def test_paths_that_leave_the_root_are_refused(tree: Path, rel: str) -> None:
    with pytest.raises(NotBeneath):
        read(tree, rel)


def test_missing_is_file_not_found(tree: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read(tree, "2026/03/02/other.wav")


def _swap_for_link(path: Path, target: Path) -> None:
    path.rename(path.with_name(path.name + ".real"))
    path.symlink_to(target)


def test_a_day_folder_swapped_for_a_link_while_reading_never_serves_outside(tree: Path) -> None:
    """The attack: the day folder flips between itself and a link to elsewhere, as fast as it
    can, while files are read through it. Each read gets the recording or a refusal."""
    day = tree / "2026/03/02"
    real, link = day.with_name("02.real"), day.with_name("02.link")
    link.symlink_to(tree.parent / "outside")
    done = threading.Event()
    flips = 0

    def flip() -> None:
        nonlocal flips
        while not done.is_set():
            day.rename(real)
            link.rename(day)
            day.rename(link)
            real.rename(day)
            flips += 1

    seen: Counter[str] = Counter()
    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        for _ in range(3000):
            try:
                got = read(tree)
            except NotBeneath:
                seen["refused"] += 1
            except FileNotFoundError:
                seen["missing"] += 1  # between two renames
            else:
                assert got != OUTSIDE, seen
                seen["inside"] += 1
    finally:
        done.set()
        flipper.join()
    assert seen["inside"] > 0 and flips > 0, seen
