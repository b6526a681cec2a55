"""The ``recordings_dir`` checks of ``callrec check``: can Asterisk create files there, and can
callrec read them back and delete them?

Asterisk writes the recordings and callrec hashes and later deletes them, through the group
they share (docs/operations.md, "Install beside Asterisk"). The rights are decided from the mode bits as
the kernel would (ops/file_rights.py), for Asterisk's real run user.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from callrec.config import Settings
from callrec.ops.check_result import Result, error_text
from callrec.ops.file_rights import (
    Identity,
    cannot_create_in,
    describe,
    identity_of_uid,
    identity_of_user,
    is_loopback,
    listener_uid,
    newest_day_folder,
    user_name,
)

_PROBE_BYTES = b"callrec check probe\n"


def asterisk_identity(settings: Settings, ari_info: Mapping[str, Any] | None) -> Identity | str:
    """Who Asterisk runs as, or why that is unknown."""
    config_section = (ari_info or {}).get("config")
    setid = config_section.get("setid") if isinstance(config_section, dict) else None
    user = str(setid.get("user") or "") if isinstance(setid, dict) else ""
    group = str(setid.get("group") or "") if isinstance(setid, dict) else ""
    if user:
        who = identity_of_user(user, group)
        if who is None:
            return (
                f"Asterisk runs as {user!r}, which this host does not know: callrec must run on "
                "Asterisk's host and see recordings_dir at the same path"
            )
        return who
    ast = settings.asterisk
    uid = listener_uid(ast.ami_port) if is_loopback(ast.ami_host) else None
    if uid is None:
        return "Asterisk reports no run user (no -U) and its AMI listener is not visible here"
    return identity_of_uid(uid)


async def check_dir_for_asterisk(settings: Settings, ari_info: Mapping[str, Any] | None, name: str) -> Result:
    directory = settings.asterisk.recordings_dir
    if ari_info is None:
        return Result("skip", name, "needs a working ARI login (Asterisk's run user comes from it)")
    if not directory.is_dir():
        return Result("FAIL", name, missing_dir_hint(directory))
    who = asterisk_identity(settings, ari_info)
    if isinstance(who, str):
        return Result("warn", name, f"not verified: {who}")
    blocker = await asyncio.to_thread(cannot_create_in, directory, who)
    if blocker is not None:
        if blocker != directory:
            return Result(
                "FAIL",
                name,
                f"Asterisk ({who.label}) cannot reach {directory}: {blocker} is {describe(blocker)}; "
                "give it search permission (chmod o+x, or a group Asterisk is in)",
            )
        return Result(
            "FAIL",
            name,
            f"Asterisk ({who.label}) cannot create files in {directory} ({describe(directory)}): run "
            f"chown asterisk:asterisk {directory} && chmod 2770 {directory}",
        )
    day = await asyncio.to_thread(newest_day_folder, directory)
    if day is not None and await asyncio.to_thread(cannot_create_in, day, who) is not None:
        # callrec makes the day folders; a umask that drops group write (the unit's UMask=)
        # leaves Asterisk, which writes through the group, unable to create the next file.
        return Result(
            "FAIL",
            name,
            f"Asterisk ({who.label}) cannot create files in {day} ({describe(day)}), which callrec "
            f"made: set UMask=0007 in the unit, then chmod -R g+w {directory}",
        )
    return Result("ok", name, f"Asterisk runs as {who.label}" if who.uid else "Asterisk runs as root")


async def check_dir_for_daemon(settings: Settings, name: str) -> Result:
    directory = settings.asterisk.recordings_dir
    user = user_name(os.geteuid())
    probe = directory / f".callrec-check-{uuid.uuid4().hex}"
    try:
        await asyncio.to_thread(_probe, probe)
    except OSError as exc:
        return Result("FAIL", name, probe_hint(exc, directory, user))
    unreadable = await asyncio.to_thread(_unreadable_recording, directory)
    if unreadable is not None:
        return Result(
            "FAIL",
            name,
            f"{user} cannot read {unreadable} ({describe(unreadable)}): Asterisk writes files "
            "without group read; give it a umask that keeps it (UMask=0027 in an asterisk.service "
            "drop-in)",
        )
    detail = f"as {user}: created, read and deleted a probe file"
    if os.geteuid() == 0:
        detail += "; root passes every permission check, so run it as the service user"
    return Result("ok", name, detail)


def _probe(path: Path) -> None:
    """Create, read back and delete a file: what the daemon does to every recording."""
    try:
        path.write_bytes(_PROBE_BYTES)
        if path.read_bytes() != _PROBE_BYTES:
            raise OSError(errno.EIO, "the probe file read back differently", str(path))
    finally:
        # Not created at all: the write's error is the answer. Created but not deletable: this
        # unlink's error is, and it replaces the write's (there was none).
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _unreadable_recording(directory: Path) -> Path | None:
    """A file in the newest day folder that this process may not read, or ``None``."""
    day = newest_day_folder(directory)
    if day is None:
        return None
    for entry in day.iterdir():
        if entry.is_file() and not os.access(entry, os.R_OK):
            return entry
    return None


def missing_dir_hint(directory: Path) -> str:
    return (
        f"{directory} does not exist or is not a folder: "
        f"install -d -o asterisk -g asterisk -m 2770 {directory}"
    )


def probe_hint(exc: OSError, directory: Path, user: str) -> str:
    if exc.errno == errno.ENOENT:
        return missing_dir_hint(directory)
    if exc.errno == errno.EROFS:
        return (
            f"{directory} is read-only here: under systemd list it in ReadWritePaths= of the unit "
            "(systemd/callrec.service)"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"{user} may not create and delete files in {directory} ({describe(directory)}): "
            f"adduser {user} asterisk and chmod 2770 {directory}"
        )
    return f"probe file in {directory}: {error_text(exc)}"
