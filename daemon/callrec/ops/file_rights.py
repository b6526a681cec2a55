"""Who may create files where, decided from mode bits the way the kernel decides it.

``callrec check`` asks this for Asterisk, which writes the recordings, on behalf of a user it
cannot become. Mode bits only: a POSIX ACL or a read-only mount can still refuse what they allow,
which is why the check also probes the folder for real as the daemon's own user.
"""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Identity:
    """Whom the kernel checks when a process creates a file: its uid and every gid it holds."""

    label: str
    uid: int
    gids: frozenset[int]


def _class_bits(st: os.stat_result, who: Identity) -> int:
    """The rwx bits that apply to ``who``. The kernel takes the first class that matches (owner,
    else group, else other) and never falls through, so an owner without w stays refused."""
    if st.st_uid == who.uid:
        return (st.st_mode >> 6) & 0o7
    if st.st_gid in who.gids:
        return (st.st_mode >> 3) & 0o7
    return st.st_mode & 0o7


def describe(path: Path) -> str:
    """``drwxrws--- asterisk:asterisk``, the way ls shows it, for a hint."""
    st = path.stat()
    return f"{stat.filemode(st.st_mode)} {user_name(st.st_uid)}:{group_name(st.st_gid)}"


def cannot_create_in(directory: Path, who: Identity) -> Path | None:
    """The first folder on the way that stops ``who`` from creating a file in ``directory``
    (itself when it lacks write and search, a parent when it lacks search), or ``None``.

    Mode bits only: a POSIX ACL or a read-only mount can still refuse what they allow."""
    if who.uid == 0:
        return None  # CAP_DAC_OVERRIDE
    for parent in reversed(directory.parents):
        if not _class_bits(parent.stat(), who) & 0o1:
            return parent
    return None if _class_bits(directory.stat(), who) & 0o3 == 0o3 else directory


def newest_day_folder(recordings_dir: Path) -> Path | None:
    """The latest ``YYYY/MM/DD`` folder the recorder made, or ``None`` before the first call."""
    days = sorted(recordings_dir.glob("[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]"))
    return days[-1] if days else None


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def identity_of_user(user: str, group: str = "") -> Identity | None:
    """The identity ``asterisk -U user -G group`` takes on this host; ``None`` if unknown here."""
    try:
        pw = pwd.getpwnam(user)
        gid = grp.getgrnam(group).gr_gid if group else pw.pw_gid
    except KeyError:
        return None
    # Asterisk calls initgroups() when it drops to -U, so the user's other groups count too.
    return Identity(f"user {user}", pw.pw_uid, frozenset({gid, *os.getgrouplist(user, gid)}))


def identity_of_uid(uid: int) -> Identity:
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return Identity(f"uid {uid}", uid, frozenset())
    return Identity(
        f"user {pw.pw_name}", uid, frozenset({pw.pw_gid, *os.getgrouplist(pw.pw_name, pw.pw_gid)})
    )


def listener_uid(port: int, proc_net: Path = Path("/proc/net")) -> int | None:
    """Owner of the TCP socket listening on ``port`` on this host (``/proc/net/tcp``, proc(5)).

    Used for an Asterisk started without ``-U``: ARI then reports no run user, and the process
    keeps whoever started it; its AMI listener is owned by that uid."""
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_net / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; the uid is the 8th column.
            if len(fields) > 7 and fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                return int(fields[7])
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
