"""A real Asterisk 22 for tests: the Debian sid package in a cached debootstrap root.

The instance loads the sample configs from ``dialplan/`` (only ports, passwords and the
simulated phones differ), shares the host's loopback, and sees the recordings folder at the
same path as the daemon through a bind mount (docs/testing.md#asterisk-in-a-chroot).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = Path(os.environ.get("CALLREC_ASTERISK_ROOT", "/var/cache/callrec/asterisk-root"))
TEST_AMI_USER = "callrec-test-driver"
TEST_CONFIGS = REPO / "tests" / "e2e" / "asterisk"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_mount_point(path: Path) -> bool:
    """True for any mount, bind mounts of the same file system included (os.path.ismount
    compares devices, so it misses those)."""
    target = str(path.resolve())
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def ensure_root(root: Path = DEFAULT_ROOT) -> Path:
    subprocess.run([str(REPO / "tests" / "harness" / "asterisk-root.sh"), str(root)], check=True)
    return root


@dataclass
class Asterisk:
    """One running Asterisk inside the chroot; ``start()``/``stop()`` are idempotent."""

    recordings_dir: Path
    root: Path = DEFAULT_ROOT
    http_port: int = field(default_factory=free_port)
    ami_port: int = field(default_factory=free_port)
    agi_port: int = field(default_factory=free_port)
    """Where the dialplan's ``agi://127.0.0.1:4573/`` requests go (the daemon's [agi] listen)."""
    ari_password: str = field(default_factory=lambda: uuid.uuid4().hex)
    ami_secret: str = field(default_factory=lambda: uuid.uuid4().hex)
    name: str = field(default_factory=lambda: f"callrec-test-{uuid.uuid4().hex[:8]}")
    ari_overrides: dict[str, str] = field(default_factory=dict)
    """ari.conf lines to change for an experiment (benchmarks), e.g. {"read_only": "yes"}."""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> Path:
        """The instance's folder as Asterisk sees it (inside the root)."""
        return Path("/") / self.name

    @property
    def host_base(self) -> Path:
        return self.root / self.name

    @property
    def ari_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.host_base / "log" / "console.log"

    def _write_configs(self) -> None:
        etc = self.host_base / "etc"
        for sub in ("etc", "run", "log", "spool", "lib"):
            (self.host_base / sub).mkdir(parents=True, exist_ok=True)
        # The shipped samples, as a telephony engineer would copy them.
        for conf in (REPO / "dialplan").glob("*.conf"):
            shutil.copy(conf, etc / conf.name)
        # Test-only pieces: simulated phones, a lean module list.
        for conf in TEST_CONFIGS.glob("*.conf"):
            shutil.copy(conf, etc / conf.name)
        _sub(etc / "http.conf", r"(?m)^bindport = .*$", f"bindport = {self.http_port}")
        _sub(etc / "manager.conf", r"(?m)^port = .*$", f"port = {self.ami_port}")
        _sub(etc / "manager.conf", r"(?m)^secret = .*$", f"secret = {self.ami_secret}")
        _sub(etc / "ari.conf", r"(?m)^password = .*$", f"password = {self.ari_password}")
        for key, value in self.ari_overrides.items():
            _sub(etc / "ari.conf", rf"(?m)^{re.escape(key)} = .*$", f"{key} = {value}")
        for conf in (etc / "extensions.conf", etc / "callrec-devices.conf"):
            _sub(conf, r"agi://127\.0\.0\.1:4573/", f"agi://127.0.0.1:{self.agi_port}/", required=False)
        # The tests place calls through a second, test-only AMI user that may Originate.
        with (etc / "manager.conf").open("a") as f:
            f.write(f"\n[{TEST_AMI_USER}]\nsecret = {self.ami_secret}\nread = all\nwrite = all\n")
        b = self.base
        (etc / "asterisk.conf").write_text(
            "[directories]\n"
            f"astetcdir => {b}/etc\n"
            "astmoddir => /usr/lib/x86_64-linux-gnu/asterisk/modules\n"
            f"astvarlibdir => {b}/lib\n"
            f"astdbdir => {b}/lib\n"
            f"astkeydir => {b}/lib\n"
            "astdatadir => /usr/share/asterisk\n"
            f"astagidir => {b}/lib\n"
            f"astspooldir => {b}/spool\n"
            f"astrundir => {b}/run\n"
            f"astlogdir => {b}/log\n"
            "astsbindir => /usr/sbin\n"
            "[options]\n"
            "highpriority = no\n"
            "transmit_silence = yes\n"
        )
        (etc / "logger.conf").write_text("[general]\n[logfiles]\nmessages => notice,warning,error\n")

    def _mount(self) -> None:
        proc = self.root / "proc"
        if not os.path.ismount(proc):
            subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
        inside = self.root / str(self.recordings_dir).lstrip("/")
        inside.mkdir(parents=True, exist_ok=True)
        if not is_mount_point(inside):
            subprocess.run(["mount", "--bind", str(self.recordings_dir), str(inside)], check=True)

    def _umount(self) -> None:
        inside = self.root / str(self.recordings_dir).lstrip("/")
        while is_mount_point(inside):
            if subprocess.run(["umount", "-l", str(inside)], check=False).returncode != 0:
                break

    def start(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        self._write_configs()
        self._mount()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["chroot", str(self.root), "asterisk", "-f", "-n", "-C", f"{self.base}/etc/asterisk.conf"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"asterisk exited with {self.proc.returncode}; see {self.log_path}")
            try:
                # Blocks until Asterisk has booted; a slow boot (a loaded machine, a cold page
                # cache) outlasts one try, so time out and ask again until the deadline.
                booted = self.cli("core waitfullybooted", check=False, timeout=5) == 0
            except subprocess.TimeoutExpired:
                booted = False
            if booted:
                self._wait_port(self.http_port, deadline)
                self._wait_port(self.ami_port, deadline)
                return
            time.sleep(0.2)
        self.stop(kill=True)  # never leave a half-started Asterisk behind a failed start
        raise TimeoutError(f"asterisk did not boot in {timeout}s; see {self.log_path}")

    @staticmethod
    def _wait_port(port: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"port {port} did not open")

    def cli(self, command: str, *, check: bool = True, timeout: float = 10.0) -> int:
        res = subprocess.run(
            ["chroot", str(self.root), "asterisk", "-C", f"{self.base}/etc/asterisk.conf", "-rx", command],
            capture_output=True,
            timeout=timeout,
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"asterisk -rx {command!r}: {res.stderr.decode(errors='replace')}")
        return res.returncode

    def cli_output(self, command: str) -> str:
        res = subprocess.run(
            ["chroot", str(self.root), "asterisk", "-C", f"{self.base}/etc/asterisk.conf", "-rx", command],
            capture_output=True,
            timeout=10,
            check=True,
        )
        return res.stdout.decode(errors="replace")

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.cli("core stop now", check=False)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        self._umount()
        shutil.rmtree(self.host_base, ignore_errors=True)


def _sub(path: Path, pattern: str, repl: str, *, required: bool = True) -> None:
    text = path.read_text()
    new, n = re.subn(pattern, repl, text)
    if n == 0 and required:
        raise RuntimeError(f"{path.name}: no line matches {pattern!r}")
    path.write_text(new)
