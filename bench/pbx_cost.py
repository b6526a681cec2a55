"""What callrec costs the PBX, measured side by side on the real Asterisk 22.

One Asterisk of the test harness (the shipped ``dialplan/*.conf`` plus the simulated phones),
one throwaway PostgreSQL. The same burst of inbound calls (customer -> ``callrec-inbound`` ->
agent alice over Local channels, tt-monkeys audio both ways, ``--talk`` seconds each, paced at
``--rate`` per second) runs in alternating phases:

* ``without``: no callrec attached (no ARI websocket, no AMI session of callrec);
* ``native``: no callrec, the dialplan starts ``MixMonitor()`` itself before the answer (the
  physical anchor: what recording costs with no register at all). Its context mirrors
  ``callrec-inbound-lean`` with the AGI request replaced by ``MixMonitor()`` and no ``U()``;
* ``with``: ``callrec run`` in event mode attached and recording every call (a fresh daemon per
  phase), the calls through ``callrec-inbound``;
* ``lean``: ``callrec run`` in lean mode, the calls through the shipped ``callrec-inbound-lean``;
* ``agi_floor``: no callrec, ``native`` plus the two FastAGI requests of the lean dialplan (at
  the answer, and in Dial's ``U()``), each answered by a null server in this process that reads
  the environment and closes at once: the least that asking over FastAGI can cost Asterisk.
  ``lean - agi_floor`` is what callrec's own work costs Asterisk beyond the two requests (the
  ARI subscription and its events, the commands it sends, StopMixMonitor).

The daemons run with ``[archive] enabled = false``: the archive step (transcoding, sealing) is
paid per audio hour, off the call's path, and is measured by bench/archive.py.

CPU seconds come from ``/proc/<pid>/stat`` (utime + stime, every thread) of the Asterisk
process (``chroot`` execs it: checked by name) and of the daemon, over the window from the first
Originate until every channel is gone and, in ``with``, every row is in PostgreSQL. Asterisk's
reaped children (a MixMonitor post-process command) are reported apart and counted in
``asterisk_burden``. A short unmeasured warm-up burst comes first.

* ``daemon_ms_per_call``: the daemon's CPU per *recorded* call (rows written in the phase);
* ``daemon_to_asterisk_ratio``: that against Asterisk's CPU per call with nothing attached
  (``daemon_to_asterisk_with_ratio``: against Asterisk's own CPU per call in the with-phase);
* ``asterisk_burden``: Asterisk's CPU in the with-phase over the without-phase;
* ``lean_to_native``: Asterisk's CPU in the lean phase over the native phase (target <= 1.05),
  ``event_to_native`` the same for the event mode; ``lean_daemon_to_asterisk_ratio``: the lean
  daemon's CPU per recorded call against Asterisk's per call with nothing attached (<= 0.10);
* ``agi_floor_to_native``: ``agi_floor``'s Asterisk CPU over ``native``'s (the floor of any
  design that asks over FastAGI), ``lean_to_agi_floor`` the rest;
* ``rows``: the fewest rows a with-phase wrote (must equal ``calls``); ``duplicate_rows`` and
  ``files_changed_after_hashing`` (a file hashed before Asterisk closed it would have grown)
  must be 0.

Per-round figures are medians over ``--rounds`` (burden and ratios are taken per round, a
without-phase and its with-phase being neighbours in time). Exit status 1 if a call was not
recorded exactly once. ``--profile FILE`` runs one more with-phase under ``py-spy --gil`` (pip
install py-spy) and writes where the daemon's Python time goes.

Prints one JSON line on stdout; progress goes to stderr. Needs root (chroot, bind mounts).

    PYTHONPATH=daemon:. .venv/bin/python bench/pbx_cost.py [--quick] [--rounds N] [--profile F]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psycopg
from tests.e2e.conftest import write_config
from tests.harness.asterisk import REPO, TEST_AMI_USER, Asterisk, free_port
from tests.harness.driver import Driver
from tests.harness.postgres import Cluster

from callrec.db.migrations import migrate
from callrec.ops import logs

CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Cpu:
    """CPU seconds of one process: its own threads, and its reaped children."""

    own: float
    children: float

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.own - other.own, self.children - other.children)


def cpu(pid: int) -> Cpu:
    # Fields after the command name, which may itself hold spaces or parentheses.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return Cpu((utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK)


def asterisk_pid(proc: subprocess.Popen[bytes]) -> int:
    """``chroot`` execs Asterisk, so the Popen pid is Asterisk's own; checked, not assumed."""
    comm = Path(f"/proc/{proc.pid}/comm").read_text().strip()
    if comm != "asterisk":
        raise RuntimeError(f"pid {proc.pid} is {comm!r}, not asterisk")
    return proc.pid


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int

    def events(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        m = re.search(r"(?m)^callrec_ari_events_total (\S+)$", text)
        return float(m.group(1)) if m else 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_daemon(work: Path, asterisk: Asterisk, dsn: str, src: Path, mode: str = "event") -> Daemon:
    """``callrec run`` as a process (like tests/e2e/conftest.py, with a chosen source tree)."""
    work.mkdir(parents=True, exist_ok=True)
    cfg, port, log_path = work / "callrec.toml", free_port(), work / "daemon.log"
    agi = f'\n[agi]\nlisten = "127.0.0.1:{asterisk.agi_port}"\n' if mode == "lean" else ""
    write_config(cfg, asterisk, dsn, port, state_dir=work / "state", mode=mode, extra=agi)
    cfg.write_text(cfg.read_text().replace("[archive]\n", "[archive]\nenabled = false\n"))
    env = dict(os.environ, PYTHONPATH=str(src))
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "callrec.cli", "run", "--config", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 30
    while '"callrec ready"' not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"daemon did not get ready:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)
    time.sleep(0.5)  # let reconciliation and the first gauges pass before measuring
    return Daemon(proc, log_path, port)


def live_channels(driver: Driver) -> int:
    # CoreStatus is one small frame; polling "core show channels" would cost Asterisk more.
    return int(driver.action("CoreStatus", {}).get("CoreCurrentCalls", "-1"))


TRUNKS = {
    "without": "test-trunk",
    "with": "test-trunk",
    "native": "bench-trunk-native",
    "lean": "test-trunk-lean",
    "lean_base": "test-trunk-lean",
    "agi_floor": "bench-trunk-agi-floor",
}


@dataclass
class CostAsterisk(Asterisk):
    """The harness's Asterisk plus the native-MixMonitor context of the ``native`` phase."""

    def _write_configs(self) -> None:
        super()._write_configs()
        native = self.recordings_dir / "native"
        native.mkdir(parents=True, exist_ok=True)
        with (self.host_base / "etc" / "callrec-devices.conf").open("a") as f:
            f.write(f"""
; bench/pbx_cost.py, native phase: callrec-inbound-lean with MixMonitor() in place of the AGI.
[bench-trunk-native]
exten => _X.,1,Answer()
 same => n,Playback(beep)
 same => n,MixMonitor({native}/${{UNIQUEID}}.wav)
 same => n,Dial(Local/alice@callrec-agents,30)
 same => n,Hangup()

; agi_floor phase: callrec-inbound-lean's two FastAGI requests, to a null server (NullAgi).
[bench-trunk-agi-floor]
exten => _X.,1,Answer()
 same => n,Playback(beep)
 same => n,AGI(agi://127.0.0.1:{self.agi_port}/record)
 same => n,MixMonitor({native}/${{UNIQUEID}}.wav)
 same => n,Dial(Local/alice@callrec-agents,30,U(bench-null-answered))
 same => n,Hangup()

[bench-null-answered]
exten => s,1,AGI(agi://127.0.0.1:{self.agi_port}/answered)
 same => n,Return()
""")


class NullAgi(socketserver.ThreadingTCPServer):
    """A FastAGI server that reads each request's environment and closes: the dialplan goes on.
    Listens on the AGI port while no daemon does (the agi_floor phase)."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _NullAgiSession)
        self.requests = 0
        threading.Thread(target=self.serve_forever, name="null-agi", daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _NullAgiSession(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while self.rfile.readline().strip():
            pass
        assert isinstance(self.server, NullAgi)
        self.server.requests += 1


def burst(driver: Driver, calls: int, rate: float, talk: int, first: int, trunk: str = "test-trunk") -> None:
    t0 = time.monotonic()
    for i in range(calls):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        number = f"+35840{first + i:07d}"
        driver.originate(
            f"Local/0300@{trunk}",
            context="test-customer-talk",
            callerid='"Customer" <>',
            variables={"__TALK": str(talk), "__RAWCID": base64.b64encode(number.encode()).decode()},
        )


def wait_idle(driver: Driver, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (n := live_channels(driver)) != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} channels still up after {timeout:.0f} s")
        time.sleep(0.25)


def row_counts(dsn: str) -> tuple[int, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT call_id) FROM recordings").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def files_unchanged(dsn: str, recordings: Path) -> tuple[int, int]:
    """(rows whose file still has the size and sha256 stored, rows): a file hashed before
    Asterisk closed it would have grown since."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT file_path, file_size, sha256 FROM recordings").fetchall()
    same = 0
    for rel, size, sha in rows:
        data = (recordings / rel).read_bytes()  # the archive is off: every WAV stays
        same += len(data) == size and hashlib.sha256(data).hexdigest() == sha
    return same, len(rows)


def wait_rows(dsn: str, count: int, quiet: float = 20.0) -> None:
    """Until ``count`` rows are in, or none came for ``quiet`` seconds (the shortfall is reported)."""
    last, since = -1, time.monotonic()
    while (n := row_counts(dsn)[0]) < count:
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > quiet:
            say(f"only {n} of {count} rows; giving up waiting")
            return
        time.sleep(0.25)


@dataclass
class Phase:
    asterisk: Cpu
    daemon: float = 0.0
    seconds: float = 0.0
    events: float = 0.0
    rows: int = 0


def run_phase(
    args: argparse.Namespace,
    driver: Driver,
    ast_pid: int,
    dsn: str,
    daemon: Daemon | None,
    first: int,
    trunk: str = "test-trunk",
) -> Phase:
    timeout = args.calls / args.rate + args.talk + 90
    ev0 = daemon.events() if daemon else 0.0
    rows0 = row_counts(dsn)[0]
    a0, d0, t0 = cpu(ast_pid), cpu(daemon.proc.pid) if daemon else None, time.monotonic()
    burst(driver, args.calls, args.rate, args.talk, first, trunk)
    wait_idle(driver, timeout)
    if daemon is not None:
        wait_rows(dsn, rows0 + args.calls)
    a1, t1 = cpu(ast_pid), time.monotonic()
    phase = Phase(a1 - a0, seconds=t1 - t0)
    if daemon is not None:
        assert d0 is not None
        phase.daemon = (cpu(daemon.proc.pid) - d0).own
        phase.events = daemon.events() - ev0
        time.sleep(1.0)  # a duplicate row would come late: give it the chance to show
        phase.rows = row_counts(dsn)[0] - rows0
    return phase


# Where a py-spy sample goes: the first of these found in its stack, searched in this order.
_PARTS = (
    ("logging", ("structlog/", "callrec/ops/logs.py")),
    ("AGI (FastAGI sessions)", ("callrec/recording/agi.py",)),
    ("AMI", ("callrec/asterisk/ami", "callrec/recording/mixmonitor.py")),
    ("journal (SQLite)", ("callrec/recording/journal.py", "sqlite3")),
    ("outbox + PostgreSQL", ("callrec/recording/outbox.py", "callrec/db/", "asyncpg/")),
    (
        "recorder (file, hash, tasks)",
        (
            "callrec/recording/recorder.py",
            "callrec/recording/file_close.py",
            "callrec/recording/in_flight.py",
            "callrec/wav.py",
        ),
    ),
    ("ARI REST (subscriptions)", ("callrec/asterisk/ari_rest.py", "callrec/asterisk/ari_subscriptions.py")),
    (
        "ARI stream (aiohttp, decode, tracker)",
        (
            "callrec/asterisk/ari",
            "callrec/recording/tracker.py",
            "callrec/recording/call_state.py",
            "aiohttp/",
        ),
    ),
)


def profile_summary(raw: Path, top: int = 12) -> list[str]:
    """Share of samples per part of the daemon, then the functions with most samples of their
    own, from py-spy's collapsed stacks."""
    parts: Counter[str] = Counter()
    own: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        samples += count
        found = (name for name, keys in _PARTS if any(k in stack for k in keys))
        part = next(found, "event loop, threads, other")
        parts[part] += count
        own[re.sub(r" \(.*/", " (", stack.split(";")[-1])] += count
    lines = [f"{samples} samples (py-spy --gil: the daemon running Python)"]
    lines += [f"{100 * n / samples:5.1f}%  {name}" for name, n in parts.most_common()]
    lines += ["functions, own samples:"]
    lines += [f"{100 * n / samples:5.1f}%  {f}" for f, n in own.most_common(top)]
    return lines


def per_row(ph: Phase) -> float:
    """The daemon's CPU seconds per *recorded* call (a call it failed to record cost it less)."""
    return ph.daemon / max(ph.rows, 1)


def native_figures(phases: dict[str, list[Phase]], n: int) -> dict[str, object]:
    """The native and lean figures: per round against neighbours in time, then medians."""
    out: dict[str, object] = {}

    def ast(ph: Phase) -> float:
        return ph.asterisk.own + ph.asterisk.children

    def med(values: list[float], digits: int = 3) -> float | None:
        return round(statistics.median(values), digits) if values else None

    without, native, with_, lean, floor = (
        phases.get(k, []) for k in ("without", "native", "with", "lean", "agi_floor")
    )
    out["asterisk_ms_per_call_native"] = med([ast(p) * 1000 / n for p in native], 2)
    out["asterisk_ms_per_call_lean"] = med([ast(p) * 1000 / n for p in lean], 2)
    out["native_to_bare"] = med([ast(a) / b.asterisk.own for a, b in zip(native, without, strict=False)])
    out["event_to_native"] = med([ast(a) / ast(b) for a, b in zip(with_, native, strict=False)])
    out["lean_to_native"] = med([ast(a) / ast(b) for a, b in zip(lean, native, strict=False)])
    out["asterisk_ms_per_call_agi_floor"] = med([ast(p) * 1000 / n for p in floor], 2)
    out["agi_floor_to_native"] = med([ast(a) / ast(b) for a, b in zip(floor, native, strict=False)])
    out["lean_to_agi_floor"] = med([ast(a) / ast(b) for a, b in zip(lean, floor, strict=False)])
    out["lean_daemon_ms_per_call"] = med([per_row(p) * 1000 for p in lean], 2)
    out["lean_daemon_to_asterisk_ratio"] = med(
        [per_row(p) / (b.asterisk.own / n) for p, b in zip(lean, without, strict=False)]
    )
    out["lean_ari_events_per_call"] = med([p.events / n for p in lean], 1)
    base = phases.get("lean_base", [])
    if base:  # --baseline-src: an earlier daemon, lean, alternated with this one
        out["lean_base_daemon_ms_per_call"] = med([per_row(p) * 1000 for p in base], 2)
        out["asterisk_ms_per_call_lean_base"] = med([ast(p) * 1000 / n for p in base], 2)
        out["lean_daemon_to_base"] = med([per_row(a) / per_row(b) for a, b in zip(lean, base, strict=False)])
        out["lean_asterisk_to_base"] = med([ast(a) / ast(b) for a, b in zip(lean, base, strict=False)])
        out["lean_base_rows_per_round"] = [p.rows for p in base]
    out["lean_rows_per_round"] = [p.rows for p in lean]
    out["samples_native"] = {
        "asterisk_s_native": [round(ast(p), 2) for p in native],
        "asterisk_s_lean": [round(ast(p), 2) for p in lean],
        "lean_daemon_s": [round(p.daemon, 2) for p in lean],
        "lean_to_native": [round(ast(a) / ast(b), 3) for a, b in zip(lean, native, strict=False)],
        "event_to_native": [round(ast(a) / ast(b), 3) for a, b in zip(with_, native, strict=False)],
        "asterisk_s_agi_floor": [round(ast(p), 2) for p in floor],
        "agi_floor_to_native": [round(ast(a) / ast(b), 3) for a, b in zip(floor, native, strict=False)],
    }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="a smaller burst, one round (make bench)")
    p.add_argument("--calls", type=int, default=None, help="calls per burst (default 200, quick 60)")
    p.add_argument("--rate", type=float, default=25.0, help="calls originated per second")
    p.add_argument("--talk", type=int, default=3, help="seconds each customer talks")
    p.add_argument("--rounds", type=int, default=None, help="without/with pairs (default 3, quick 1)")
    p.add_argument("--daemon-src", type=Path, default=REPO / "daemon", help="source root of callrec")
    p.add_argument(
        "--ari",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an ari.conf line for an experiment, e.g. read_only=no",
    )
    p.add_argument(
        "--phases",
        nargs="+",
        default=["without", "native", "with", "lean", "agi_floor"],
        choices=["without", "native", "with", "lean", "agi_floor", "lean_base"],
        help="phases of a round (without and with are always run)",
    )
    p.add_argument(
        "--baseline-src", type=Path, help="source root of an earlier callrec for the lean_base phase"
    )
    p.add_argument("--keep", action="store_true", help="keep the work folder (recordings, daemon logs)")
    p.add_argument("--profile", type=Path, help="py-spy the daemon in one extra phase; summary here")
    p.add_argument(
        "--profile-mode", choices=["event", "lean"], default="event", help="the daemon's mode then"
    )
    args = p.parse_args()
    args.calls = args.calls or (60 if args.quick else 200)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.phases = ["without", *(x for x in args.phases if x not in ("without", "with")), "with"]
    args.phases = list(dict.fromkeys(args.phases))
    if ("lean_base" in args.phases) != (args.baseline_src is not None):
        p.error("the lean_base phase and --baseline-src go together")
    if os.geteuid() != 0:
        say("pbx_cost needs root: the harness chroots into a Debian sid root and bind-mounts into it")
        return 1
    logs.configure("warning", stream=sys.stderr)  # stdout carries the JSON line only
    subprocess.run([str(REPO / "tests" / "harness" / "asterisk-root.sh")], check=True, stdout=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="callrec-bench-"))
    cluster = Cluster()
    overrides = dict(kv.split("=", 1) for kv in args.ari)
    asterisk = CostAsterisk(recordings_dir=work / "recordings", ari_overrides=overrides)
    daemon: Daemon | None = None
    driver: Driver | None = None
    try:
        cluster.start()
        cluster.createdb("callrec")
        dsn = cluster.dsn("callrec")
        asyncio.run(migrate(dsn))
        asterisk.start()
        assert asterisk.proc is not None
        ast_pid = asterisk_pid(asterisk.proc)
        driver = Driver(asterisk.ami_port, TEST_AMI_USER, asterisk.ami_secret)
        say(f"asterisk pid {ast_pid}; {args.rounds} round(s) of {args.calls} calls at {args.rate}/s")
        burst(driver, 10, args.rate, args.talk, 9_000_000)  # warm-up: sounds into the page cache
        wait_idle(driver, 60)

        first = 0
        phases: dict[str, list[Phase]] = {name: [] for name in args.phases}
        for r in range(args.rounds):
            # Alternated in one run, in a rotating order, so drift in the machine's load falls on
            # every phase alike; the ratios are then taken per round, between neighbours in time.
            order = args.phases[r % len(args.phases) :] + args.phases[: r % len(args.phases)]
            for name in order:
                mode = {"with": "event", "lean": "lean", "lean_base": "lean"}.get(name)
                src = args.baseline_src if name == "lean_base" else args.daemon_src
                if mode is not None:
                    daemon = start_daemon(work / f"daemon-{name}-{r}", asterisk, dsn, src, mode)
                null_agi = NullAgi(asterisk.agi_port) if name == "agi_floor" else None
                try:
                    ph = run_phase(args, driver, ast_pid, dsn, daemon, first, TRUNKS[name])
                finally:
                    if null_agi is not None:
                        null_agi.stop()
                if null_agi is not None and null_agi.requests != 2 * args.calls:
                    raise RuntimeError(f"agi_floor: {null_agi.requests} AGI requests, not {2 * args.calls}")
                first += args.calls
                phases[name].append(ph)
                if daemon is not None:
                    daemon.stop()
                    daemon = None
                say(
                    f"round {r + 1} {name:8} asterisk {ph.asterisk.own:.2f} s (+children"
                    f" {ph.asterisk.children:.2f} s), daemon {ph.daemon:.2f} s in {ph.seconds:.1f} s,"
                    f" {ph.events / args.calls:.1f} ARI events per call, {ph.rows} rows"
                )
        without, with_ = phases["without"], phases["with"]
        total, distinct = row_counts(dsn)
        same, checked = files_unchanged(dsn, asterisk.recordings_dir)

        if args.profile is not None:
            mode = args.profile_mode
            daemon = start_daemon(work / "daemon-profile", asterisk, dsn, args.daemon_src, mode)
            raw = work / "profile.txt"
            # --gil: only samples where the daemon holds the GIL, i.e. runs Python (not idle waits).
            spy_cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(daemon.proc.pid)]
            spy_cmd += ["--rate", "250", "--gil", "--nonblocking"]
            spy = subprocess.Popen(
                [*spy_cmd, "--format", "raw", "--output", str(raw)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
            run_phase(args, driver, ast_pid, dsn, daemon, first, TRUNKS["lean" if mode == "lean" else "with"])
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
            daemon.stop()
            daemon = None
            args.profile.write_text("\n".join(profile_summary(raw)) + "\n")
            say(f"profile summary in {args.profile}")

        n = args.calls
        ms = 1000.0 / n
        pairs = list(zip(without, with_, strict=True))
        burden = [(w.asterisk.own + w.asterisk.children) / o.asterisk.own for o, w in pairs]
        # The daemon's CPU per *recorded* call (a call it failed to record cost it less), against
        # what one call costs Asterisk with nothing attached.
        daemon_per_call = [per_row(w) for w in with_]
        ratio = [d / (o.asterisk.own / n) for d, o in zip(daemon_per_call, without, strict=True)]
        result = {
            "bench": "pbx_cost",
            "calls": n,
            "rounds": args.rounds,
            "rate_per_s": args.rate,
            "talk_s": args.talk,
            "ari_overrides": overrides,
            "daemon_ms_per_call": round(statistics.median(daemon_per_call) * 1000, 2),
            "asterisk_ms_per_call_without": round(statistics.median(o.asterisk.own for o in without) * ms, 2),
            "asterisk_ms_per_call_with": round(statistics.median(w.asterisk.own for w in with_) * ms, 2),
            "asterisk_children_ms_per_call_with": round(
                statistics.median(w.asterisk.children for w in with_) * ms, 2
            ),
            "daemon_to_asterisk_ratio": round(statistics.median(ratio), 3),
            "daemon_to_asterisk_with_ratio": round(
                statistics.median(
                    d / ((w.asterisk.own + w.asterisk.children) / n)
                    for d, w in zip(daemon_per_call, with_, strict=True)
                ),
                3,
            ),
            "asterisk_burden": round(statistics.median(burden), 3),
            "ari_events_per_call": round(statistics.median(w.events for w in with_) / n, 1),
            "rows": min(w.rows for w in with_),
            "rows_per_round": [w.rows for w in with_],
            "duplicate_rows": total - distinct,
            "files_changed_after_hashing": checked - same,
            "samples": {
                "asterisk_s_without": [round(o.asterisk.own, 2) for o in without],
                "asterisk_s_with": [round(w.asterisk.own + w.asterisk.children, 2) for w in with_],
                "daemon_s": [round(w.daemon, 2) for w in with_],
                "burden": [round(b, 3) for b in burden],
                "ratio": [round(x, 3) for x in ratio],
            },
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
        result.update(native_figures(phases, n))
        print(json.dumps(result), flush=True)
        recorded = [*with_, *phases.get("lean", []), *phases.get("lean_base", [])]
        return 0 if total == distinct == same and all(w.rows == n for w in recorded) else 1
    finally:
        if daemon is not None:
            daemon.stop()
        if driver is not None:
            driver.close()
        asterisk.destroy()
        cluster.destroy()
        if args.keep:
            say(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
