"""debian/requirements.lock pins what the .deb installs from PyPI (debian/rules): every runtime
dependency of pyproject.toml must be pinned there, at a version its range admits, with hashes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s\\]+)")


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "debian/requirements.lock").read_text().splitlines():
        m = _PIN.match(line)
        if m:
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def test_every_dependency_is_pinned_within_its_range() -> None:
    pins = _pins()
    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for text in wanted:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in debian/requirements.lock: run make lock"
        assert req.specifier.contains(pins[name], prereleases=True), (text, pins[name])


def test_every_pin_carries_hashes() -> None:
    text = (ROOT / "debian/requirements.lock").read_text()
    blocks = [b for b in re.split(r"\n(?=[A-Za-z0-9])", text) if _PIN.match(b)]
    assert len(blocks) == len(_pins()) > 10
    assert all("--hash=sha256:" in b for b in blocks)
