"""The .deb (debian/, docs/install.md): built from this checkout, installed with ``apt install
./callrec_<version>_<arch>.deb`` into a copy of a fresh minimal bookworm root (debootstrap
--variant=minbase, as a new server would be), upgraded, removed and purged there.

The whole life runs once, in the module fixture ``life``; each test checks one part of what it
recorded. systemd does not run in a chroot, so the maintainer scripts meet a stand-in
``systemctl`` (in /usr/bin, logging its arguments with the callrec version installed at that
moment), and ``/run/systemd/system`` exists, as on a booted host: this shows which of start,
stop and restart each dpkg step asks for. That a SIGTERM drains the calls being recorded is
tested on the real daemon (tests/e2e/test_recording.py). ``systemd-analyze verify`` runs
inside the root, with the real systemd installed there before callrec, as on a server.

Needs root (chroot, mount), network to deb.debian.org and PyPI, and the build tools of
tests/harness/apt-deps.sh. Both builds are cached on their source hash (debian/build-deb.sh).
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "debian" / "build-deb.sh"
NEWER = "0.1.0+upgradetest1"  # > the changelog's version: the upgrade's newer build
APT_ARCHIVES = Path("/var/cache/callrec/apt-archives")  # .debs kept between runs, for speed
SPOOL = "/var/spool/asterisk/callrec"
CONF = "/etc/callrec/callrec.toml"
JOURNAL = "/var/lib/callrec/journal.sqlite3"
# systemd does not run in a chroot: this stand-in for systemctl logs the actions (start, stop,
# restart...) with the callrec version installed at that moment and answers as a host where
# the service runs; the offline verbs (preset, is-enabled, enable...) go to the real one, told
# with --root=/ not to look for a running systemd.
SYSTEMCTL_SHIM = """#!/bin/sh
for a in "$@"; do case "$a" in -*) ;; *) verb=$a; break ;; esac; done
case "$verb" in
  start|stop|restart|try-restart|reload|reload-or-restart|kill)
    v=$(dpkg-query -W -f '${Version}' callrec 2>/dev/null)
    echo "$verb ${*##* } @${v:-none}" >> /var/log/systemctl-actions
    exit 0 ;;
  is-active|daemon-reload|daemon-reexec|reset-failed) exit 0 ;;
esac
exec /bin/systemctl.real --root=/ "$@"
"""


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} not found: tests/harness/apt-deps.sh installs the package build tools")


@dataclass
class Life:
    root: Path
    debs: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    out: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    facts: dict[str, dict[str, object]] = field(default_factory=dict)

    def sh(self, step: str, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LC_ALL": "C.UTF-8",
            "DEBIAN_FRONTEND": "noninteractive",
        }
        started = time.monotonic()
        res = subprocess.run(
            ["chroot", str(self.root), "/bin/sh", "-ec", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.seconds[step] = self.seconds.get(step, 0.0) + time.monotonic() - started
        self.out[step] = res
        if check:
            assert res.returncode == 0, f"{step}: {script}\n{res.stdout}\n{res.stderr}"
        return res

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def snapshot(self, step: str) -> None:
        """Owner, group, mode of what the package makes; groups of callrec; systemctl calls."""
        facts: dict[str, object] = {}
        for name in ("/var/lib/callrec", SPOOL, CONF, "/etc/callrec", "/usr/bin/callrec", JOURNAL):
            res = self.sh(f"{step}: stat", f"stat -c '%U:%G %a %F' {name} 2>/dev/null || echo absent")
            facts[name] = res.stdout.strip()
        venv = self.path("/usr/lib/callrec")
        facts["venv left"] = [str(p.relative_to(venv)) for p in venv.rglob("*")][:5] if venv.exists() else []
        facts["byte-code"] = any(self.path("/usr/lib/callrec/lib").rglob("callrec/__pycache__/cli.*.pyc"))
        facts["groups"] = self.sh(f"{step}: id", "id -nG callrec 2>/dev/null || echo absent").stdout.split()
        calls = self.path("/var/log/systemctl-actions")
        facts["systemctl"] = calls.read_text().splitlines() if calls.exists() else []
        calls.unlink(missing_ok=True)
        wants = self.path("/etc/systemd/system/multi-user.target.wants/callrec.service")
        facts["enabled"] = wants.is_symlink()
        facts["conf"] = self.path(CONF).read_text() if self.path(CONF).exists() else None
        unit = self.path("/lib/systemd/system/callrec.service")
        facts["unit"] = unit.read_text() if unit.exists() else None
        self.facts[step] = facts


def _build(*args: str) -> tuple[Path, float]:
    started = time.monotonic()
    res = subprocess.run([str(BUILD), *args], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    return Path(res.stdout.strip().splitlines()[-1]), time.monotonic() - started


def _filled(conffile: str) -> str:
    """The shipped conffile with every commented setting switched on."""
    lines = []
    for line in conffile.splitlines():
        if line.startswith("#[") or (line.startswith("#") and " = " in line and not line.startswith("##")):
            line = line[1:]
        lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def life(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Life]:
    if os.geteuid() != 0:
        pytest.fail("the package test needs root (chroot, mount): run the suite as root, as ./dev test does")
    for tool in ("dpkg-buildpackage", "dh_virtualenv", "lintian", "debootstrap", "chroot"):
        _need(tool)
    base = Path(os.environ.get("CALLREC_BOOKWORM_ROOT", "/var/cache/callrec/bookworm-minbase"))
    subprocess.run([str(REPO / "tests/harness/bookworm-root.sh"), str(base)], check=True, timeout=900)
    life = Life(root=tmp_path_factory.mktemp("pkg") / "root")
    life.debs["old"], life.seconds["build old"] = _build()
    life.debs["new"], life.seconds["build new"] = _build("--version", NEWER)
    started = time.monotonic()
    subprocess.run(["cp", "-a", str(base), str(life.root)], check=True, timeout=300)
    life.seconds["copy root"] = time.monotonic() - started
    mounts: list[Path] = []
    try:
        shutil.copy("/etc/resolv.conf", life.path("/etc/resolv.conf"))
        (APT_ARCHIVES / "partial").mkdir(parents=True, exist_ok=True)
        binds = (("proc", "/proc", "-tproc"), (str(APT_ARCHIVES), "/var/cache/apt/archives", "--bind"))
        for src, dst, opt in binds:
            subprocess.run(["mount", opt, src, str(life.path(dst))], check=True)
            mounts.append(life.path(dst))
        for name in ("old", "new"):
            shutil.copy(life.debs[name], life.path("/tmp"))
        _live(life)
        yield life
    finally:
        for mount in reversed(mounts):
            subprocess.run(["umount", str(mount)], check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", str(life.root)], check=False)
    print("package test seconds:", {k: round(v, 1) for k, v in life.seconds.items()})
    for step in ("install", "upgrade", "remove", "purge"):
        lines = (life.out[step].stdout + life.out[step].stderr).splitlines()
        said = [line for line in lines if line.startswith(("callrec:", "  "))]
        print(f"{step}:", *said, sep="\n  ")


def _live(life: Life) -> None:
    old, new = (f"/tmp/{life.debs[n].name}" for n in ("old", "new"))
    life.sh("apt update", "apt-get update -qq")
    # A server has systemd; its systemctl (/bin/systemctl in bookworm's package, = /usr/bin with
    # the merged /usr) is diverted, the stand-in takes its place, and /run/systemd/system says
    # "booted with systemd" to the maintainer scripts.
    life.sh("systemd", "apt-get install -y -q --no-install-recommends systemd")
    life.sh("systemd", "dpkg-divert --local --rename --divert /bin/systemctl.real --add /bin/systemctl")
    shim = life.path("/usr/bin/systemctl")
    shim.write_text(SYSTEMCTL_SHIM)
    shim.chmod(0o755)
    life.path("/run/systemd/system").mkdir(parents=True, exist_ok=True)
    life.sh("install", f"apt install -y -q {old}")
    life.snapshot("install")
    life.sh("help", "callrec --help")
    life.sh("config as shipped", f"callrec config --config {CONF}", check=False)
    # Fill the conffile in (the upgrade must keep it) with the credentials where systemd puts them.
    life.path(CONF).write_text(_filled(life.path(CONF).read_text()))
    life.sh(
        "credentials",
        "install -d -m 0755 /run/credentials/callrec.service && cd /run/credentials/callrec.service"
        " && echo ari-pass > ari && echo ami-secret > ami && chown callrec ari ami && chmod 0400 ari ami",
    )
    life.sh("config filled", f"runuser -u callrec -- callrec config --config {CONF}", check=False)
    # No PostgreSQL in the root: migrate must get as far as connecting, its migrations found.
    life.sh("migrate", f"runuser -u callrec -- callrec migrate --config {CONF}", check=False)
    life.sh("verify", "systemd-analyze verify /lib/systemd/system/callrec.service", check=False)
    life.sh(
        "verify a mistake",
        "mkdir -p /tmp/bad && sed 's/^\\[Service\\]$/[Service]\\nRestartSecs=2/' "
        "/lib/systemd/system/callrec.service > /tmp/bad/callrec.service"
        " && systemd-analyze verify /tmp/bad/callrec.service",
        check=False,
    )
    # Asterisk arrives, and the daemon has a journal: the upgrade must add the group, make the
    # recordings folder, and keep the journal and the filled-in config.
    life.sh(
        "asterisk",
        "adduser --system --group --quiet asterisk"
        " && install -d -o asterisk -g asterisk -m 0750 /var/spool/asterisk",
    )
    life.sh("journal", f"printf 'journal-bytes' > {JOURNAL} && chown callrec:callrec {JOURNAL}")
    # As if the older version had lacked the last migration: the upgrade must name it.
    life.sh("older migrations", "sed -i '$d' /var/lib/callrec/package-migrations")
    life.sh("upgrade", f"apt install -y -q {new}")
    life.snapshot("upgrade")
    life.facts["upgrade"]["changelog"] = (
        gzip.decompress(life.path("/usr/share/doc/callrec/changelog.gz").read_bytes())
        .decode()
        .splitlines()[0]
    )
    life.sh("remove", "apt-get remove -y -q callrec")
    life.snapshot("remove")
    life.sh("purge", "apt-get purge -y -q callrec")
    life.snapshot("purge")


def test_install_makes_the_user_folders_and_enables_the_unit(life: Life) -> None:
    facts = life.facts["install"]
    assert facts["/usr/bin/callrec"] == "root:root 777 symbolic link"
    assert facts["byte-code"], "postinst compiles the venv's modules"
    assert facts["groups"] == ["callrec"]  # no asterisk group on this host yet
    assert facts["/var/lib/callrec"] == "callrec:callrec 750 directory"
    assert facts[CONF] == "root:callrec 640 regular file"
    # No asterisk user, so no recordings folder, and the install says how to finish.
    assert facts[SPOOL] == "absent"
    assert "dpkg-reconfigure callrec" in life.out["install"].stderr + life.out["install"].stdout
    assert facts["enabled"] is True
    # Started at install (the unit's ConditionPathExists= then skips it until the secrets exist).
    assert facts["systemctl"] == ["start callrec.service @0.1.0"], facts["systemctl"]


def test_callrec_runs_and_the_shipped_config_says_what_is_missing(life: Life) -> None:
    assert "usage: callrec" in life.out["help"].stdout
    shipped = life.out["config as shipped"]
    assert shipped.returncode == 2, shipped.stdout + shipped.stderr
    assert "nothing is configured yet" in shipped.stderr and "[asterisk]" in shipped.stderr
    filled = life.out["config filled"]
    assert filled.returncode == 0, filled.stderr
    assert "customer-service" in filled.stdout and "ari-pass" not in filled.stdout
    migrate = life.out["migrate"]
    assert migrate.returncode == 3 and "no migrations" not in migrate.stderr, migrate.stderr


def test_systemd_accepts_the_installed_unit(life: Life) -> None:
    res = life.out["verify"]
    assert res.returncode == 0 and "callrec.service" not in res.stdout + res.stderr, res.stdout + res.stderr
    mistake = life.out["verify a mistake"]
    assert "RestartSecs" in mistake.stdout + mistake.stderr, "verify in the root would notice a mistake"
    unit = life.facts["install"]["unit"]
    # The only difference to systemd/callrec.service is the path of the command.
    source = (REPO / "systemd" / "callrec.service").read_text()
    assert unit == source.replace("ExecStart=/opt/callrec/bin/callrec ", "ExecStart=/usr/bin/callrec ")


def test_upgrade_restarts_once_after_unpacking_and_keeps_config_and_journal(life: Life) -> None:
    facts = life.facts["upgrade"]
    assert NEWER in str(facts["changelog"])
    # No stop before the new files are in place (the old daemon keeps recording through the
    # unpack); one restart, a SIGTERM drain then the new version, once they are.
    assert facts["systemctl"] == [f"restart callrec.service @{NEWER}"], facts["systemctl"]
    assert facts["conf"] == _filled(life.facts["install"]["conf"])  # type: ignore[arg-type]
    assert facts[JOURNAL] == "callrec:callrec 644 regular file"
    said = life.out["upgrade"].stdout + life.out["upgrade"].stderr
    last = sorted(p.name for p in (REPO / "sql").glob("[0-9]*.sql"))[-1]
    assert f"brings database migrations: {last}. Run 'callrec migrate" in said, said
    assert "brings database migrations" not in life.out["install"].stdout + life.out["install"].stderr
    # Asterisk arrived before the upgrade: its postinst finished the setup.
    assert sorted(facts["groups"]) == ["asterisk", "callrec"]  # type: ignore[arg-type]
    assert facts[SPOOL] == "asterisk:asterisk 2770 directory"


def test_remove_stops_the_service_and_keeps_the_data(life: Life) -> None:
    facts = life.facts["remove"]
    assert facts["systemctl"] == [f"stop callrec.service @{NEWER}"], facts["systemctl"]
    assert facts["/usr/bin/callrec"] == "absent"
    # prerm removed the byte-code postinst made: dpkg could remove every folder of the venv.
    assert facts["venv left"] == [], facts["venv left"]
    assert facts[JOURNAL] == "callrec:callrec 644 regular file"
    assert facts[CONF] == "root:callrec 640 regular file"
    assert facts[SPOOL] == "asterisk:asterisk 2770 directory"
    assert "callrec" in facts["groups"]  # type: ignore[operator]


def test_purge_says_what_it_removes_and_keeps_the_recordings(life: Life) -> None:
    facts = life.facts["purge"]
    said = life.out["purge"].stdout
    assert "purge removes /var/lib/callrec" in said and "journal.sqlite3" in said, said
    assert "keeps the recordings" in said
    assert facts["/var/lib/callrec"] == "absent" and facts[CONF] == "absent"
    assert facts[SPOOL] == "asterisk:asterisk 2770 directory"  # evidence: retention's, not dpkg's
    assert not facts["enabled"]


def test_lintian_reports_no_errors_and_every_warning_is_explained(life: Life) -> None:
    started = time.monotonic()
    lintian = ["lintian", "--no-tag-display-limit", str(life.debs["old"])]
    res = subprocess.run(lintian, capture_output=True, text=True, timeout=600)
    life.seconds["lintian"] = time.monotonic() - started
    lines = [line for line in res.stdout.splitlines() if line[:2] in ("E:", "W:")]
    errors = [line for line in lines if line.startswith("E:")]
    assert not errors, "\n".join(errors)
    explained = (REPO / "debian" / "README.source").read_text()
    tags = {line.split()[2] for line in lines}
    assert not {t for t in tags if f"`{t}`" not in explained}, f"explain in debian/README.source: {tags}"


def test_package_files_are_what_the_docs_promise(life: Life) -> None:
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(life.debs["old"])], capture_output=True, text=True, check=True
    ).stdout
    for path in (
        "./etc/callrec/callrec.toml",
        "./lib/systemd/system/callrec.service",
        "./usr/lib/callrec/share/callrec/sql/001_recordings.sql",
        "./usr/lib/callrec/share/callrec/dialplan/extensions.conf",
        "./usr/lib/callrec/share/callrec/monitoring/callrec.rules.yml",
        "./usr/share/doc/callrec/README.md",
        "./usr/share/callrec -> ../lib/callrec/share/callrec",
    ):
        assert path in listing, path
    assert "__pycache__" not in listing and "/pip/" not in listing
