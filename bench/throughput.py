"""Control-plane throughput: an unmodified ``callrec run`` under a load generator
that speaks Asterisk's wire formats, writing its rows to a real PostgreSQL.

The generator (this process) serves ARI (HTTP + the events websocket, ``tests/fakes``'
FakeAri) and AMI (TCP, FakeAmi) on loopback. Every call is the event stream a real Asterisk 22
sent for one inbound call of the sample dialplan (``tests/unit/transcripts/inbound.jsonl``:
56 events, 45 KB, four channels: customer Local pair, agent Local pair; created, caller IDs,
answer, the register and other variables, the agent leg, bridge, hangups, destroys), with ids
and channel names made unique per call. MixMonitor over AMI writes the file and, as Asterisk
does once the file is closed, the marker at StopMixMonitor. The daemon runs as its own process
pinned to one core (``taskset -c 0``); the generator is pinned to the other.

Per concurrency C (calls up at once: each new call opens as the oldest of C hangs up):

* ``saturate``: as fast as the daemon takes the events (websocket backpressure; the generator
  also holds back while more than 1,000 hung-up calls wait for their rows).
  ``calls_per_second`` is the slope of rows written over the middle 80 % of the run; CPU
  seconds per 1,000 calls and RSS from /proc.
* ``paced``: offered at ``--rate`` (1,000 calls/s); answer -> MixMonitor latency is the time
  from writing the call's answer events to the websocket until the MixMonitor action has been
  read from the AMI socket (one clock, this process).

Prints one JSON line per C on stdout (progress on stderr).

    .venv/bin/python bench/throughput.py [--quick] [--concurrency 100 1000 5000] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shlex
import shutil
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from _common import REPO, DaemonProcess, cpu_seconds, memory_mb, percentile, profile_summary, py_spy, say
from _common import start_daemon as start_daemon_process

for entry in (str(REPO / "daemon"), str(REPO)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import asyncpg  # noqa: E402
import orjson  # noqa: E402
from tests.fakes.ami_server import FakeAmi, Reply  # noqa: E402
from tests.fakes.ari_server import FakeAri  # noqa: E402
from tests.fakes.pbx import daemon_config  # noqa: E402
from tests.harness.postgres import Cluster  # noqa: E402

from callrec.db.migrations import migrate  # noqa: E402
from callrec.ops import logs  # noqa: E402

TRANSCRIPT = REPO / "tests" / "unit" / "transcripts" / "inbound.jsonl"
# Events 0-38 come before the hangup; event 7 (the register set on the answered channel, after
# the recording notice) is the one on which the event mode starts MixMonitor.
HANGUP_AT = 39
TRIGGER = 7
IDS = ("1795373518.28", "1795373518.29", "1795373518.30", "1795373518.31")
NAMES = ("callrec-inbound-0000000e", "callrec-agents-0000000f")
WAV = (
    b"RIFF" + struct.pack("<I", 36 + 1600) + b"WAVEfmt "
    + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    + b"data" + struct.pack("<I", 1600) + b"\x10\x00" * 800
)  # fmt: skip
_RUNS = itertools.count(1)
# Calls hung up whose rows are not written yet, at most (saturate): the same for every C, so
# the rows per second of the steady state are the daemon's pace, not a queue draining.
BACKLOG = 1000
HIGH_WATER = 1 << 20  # bytes queued to the websocket before the generator waits (TCP backpressure)


def ws_frame(payload: bytes) -> bytes:
    """One unmasked text frame, server to client (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


class Calls:
    """Per-call websocket bytes from the real transcript, with unique ids and names."""

    def __init__(self) -> None:
        # Compact, as Asterisk writes it (ari.conf pretty = no); the capture was re-indented.
        lines = [orjson.dumps(orjson.loads(line)).decode() for line in TRANSCRIPT.read_text().splitlines()]
        # Placeholders first, so no replacement can hit the output of another.
        text = "\n".join(lines)
        for i, cid in enumerate(IDS):
            text = text.replace(f'"{cid}"', f'"@ID{i}@"')
        for i, name in enumerate(NAMES):
            text = text.replace(name, f"@NAME{i}@")
        events = text.split("\n")
        self._a = "\n".join(events[:HANGUP_AT])
        self._b = "\n".join(events[HANGUP_AT:])
        self.events_per_call = len(events)
        self.bytes_per_call = len("\n".join(lines))

    @staticmethod
    def _fill(text: str, k: int) -> bytes:
        for i in range(len(IDS)):
            text = text.replace(f"@ID{i}@", f"2000000000.{4 * k + i}")
        text = text.replace("@NAME0@", f"callrec-inbound-{k:08x}").replace(
            "@NAME1@", f"callrec-agents-{k:08x}"
        )
        return b"".join(ws_frame(e.encode()) for e in text.split("\n"))

    def answer(self, k: int) -> bytes:
        """Creation to bridge: everything before the hangup (the answer and the register in it)."""
        return self._fill(self._a, k)

    def hangup(self, k: int) -> bytes:
        return self._fill(self._b, k)

    @staticmethod
    def recorded_channel(k: int) -> str:
        return f"Local/0300@callrec-inbound-{k:08x};2"


class Pbx:
    """The AMI side, as Asterisk's MixMonitor behaves: the action is answered at once and the
    file is opened by MixMonitor's own thread (here: a worker thread, so file I/O never delays
    an AMI answer); it is closed when StopMixMonitor comes or the channel hangs up, and only
    then, if MixMonitor was given a post-process command (``touch <marker>``), the marker
    appears."""

    def __init__(self, ami: FakeAmi) -> None:
        self.mixmonitor_at: dict[str, float] = {}
        self._files = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mixmonitor")
        self._open: dict[str, Future[BinaryIO]] = {}
        self._markers: dict[str, Path | None] = {}
        self._hung_up: set[str] = set()
        ami.on("MixMonitor", self._mixmonitor)
        ami.on("StopMixMonitor", self._stop)

    def close(self) -> None:
        self._files.shutdown(wait=True)

    def _mixmonitor(self, action: dict[str, str]) -> Reply:
        channel = action["Channel"]
        self.mixmonitor_at[channel] = time.perf_counter()
        argv = shlex.split(action.get("Command", ""))
        self._markers[channel] = Path(argv[1]) if argv[:1] == ["touch"] else None
        self._open[channel] = self._files.submit(_open_recording, Path(action["File"]))
        if channel in self._hung_up:  # the call ended before MixMonitor came: closed at once
            self.close_file(channel)
        return {"Response": "Success", "Message": "Started monitoring channel"}

    def _stop(self, action: dict[str, str]) -> Reply:
        self.close_file(action["Channel"])
        return {"Response": "Success", "Message": "Stopped monitoring channel"}

    def hang_up(self, channel: str) -> None:
        self._hung_up.add(channel)
        self.close_file(channel)

    def close_file(self, channel: str) -> None:
        opened = self._open.pop(channel, None)
        if opened is None:
            return
        self._files.submit(_close_recording, opened, self._markers.pop(channel, None))
        self._hung_up.discard(channel)


def _open_recording(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    f = path.open("wb")
    f.write(WAV[:44])
    return f


def _close_recording(opened: Future[BinaryIO], marker: Path | None) -> None:
    f = opened.result()
    f.write(WAV[44:])
    f.close()  # what the daemon's inotify watch sees (IN_CLOSE_WRITE)
    if marker is not None:
        marker.touch()


class BenchAri(FakeAri):
    """FakeAri, plus writing pre-framed bytes straight to the socket (one write per burst)."""

    async def write(self, data: bytes) -> None:
        for request in self._clients.values():
            transport = request.transport
            if transport is None or transport.is_closing():
                raise RuntimeError("the daemon's events websocket is gone")
            transport.write(data)
            # The buffer size is the one public signal of a slow reader here.
            while transport.get_write_buffer_size() > HIGH_WATER:  # noqa: ASYNC110
                await asyncio.sleep(0.0005)


@dataclass
class Run:
    kind: str
    concurrency: int
    calls: int
    seconds: float = 0.0
    cpu_s: float = 0.0
    rss_mb_max: float = 0.0
    hwm_mb: float = 0.0
    rows: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    backlog_max: int = 0
    rss_at_concurrency_mb: float = float("nan")
    paused_s: float = 0.0
    """Time spent measuring RSS at C calls up (not counted in ``seconds``)."""

    @property
    def slope(self) -> float:
        """Rows per second in the steady state: the rows of the calls that hung up while new
        ones kept coming (the first calls - C), their middle 80 %."""
        steady = self.calls - self.concurrency
        if self.kind != "saturate" or not self.samples or steady <= 0:
            # Offered at a fixed rate the rows come in a burst once the events stop (they lag
            # behind when the daemon cannot keep up): only the whole run's mean means anything.
            return self.calls / self.seconds if self.seconds else 0.0
        lo, hi = 0.1 * steady, 0.9 * steady
        inside = [(t, n) for t, n in self.samples if lo <= n <= hi]
        if len(inside) < 2 or inside[-1][0] == inside[0][0]:
            return self.calls / self.seconds if self.seconds else 0.0
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


class Bench:
    def __init__(self, ari: BenchAri, pbx: Pbx, db: asyncpg.Connection, daemon: DaemonProcess) -> None:
        self.ari, self.pbx, self.db, self.daemon = ari, pbx, db, daemon
        self.calls = Calls()
        self.next = 0
        self.rows0 = 0

    async def rows(self) -> int:
        return int(await self.db.fetchval("SELECT count(*) FROM recordings")) - self.rows0

    async def measure_at_concurrency(self, run: Run, open_calls: list[int]) -> None:
        """Once MixMonitor runs for all C calls up and nothing else is in flight: the RSS
        of the daemon with exactly C calls being recorded."""
        t0 = time.perf_counter()
        waiting = [Calls.recorded_channel(k) for k in open_calls]
        while any(ch not in self.pbx.mixmonitor_at for ch in waiting):
            if time.perf_counter() - t0 > 120:
                say(f"  only some of {len(waiting)} MixMonitors after 120 s")
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        run.rss_at_concurrency_mb = memory_mb(self.daemon.pid)[0]
        run.paused_s = time.perf_counter() - t0

    async def run(
        self, kind: str, concurrency: int, calls: int, rate: float | None, *, hold: bool = False
    ) -> Run:
        run = Run(kind, concurrency, calls)
        backlog = BACKLOG
        self.rows0 = int(await self.db.fetchval("SELECT count(*) FROM recordings"))
        first = self.next
        self.next += calls
        pushed_at: dict[int, float] = {}
        done = asyncio.Event()
        progress = asyncio.Event()
        rows_now = 0

        async def watch() -> None:
            nonlocal rows_now
            t0 = time.perf_counter()
            while not done.is_set():
                rows_now = await self.rows()
                progress.set()
                run.samples.append((time.perf_counter() - t0, rows_now))
                rss, _ = memory_mb(self.daemon.pid)
                run.rss_mb_max = max(run.rss_mb_max, rss)
                if rows_now >= calls:
                    done.set()
                    return
                await asyncio.sleep(0.1)

        cpu0, t0 = cpu_seconds(self.daemon.pid), time.perf_counter()
        watcher = asyncio.create_task(watch())
        open_calls: list[int] = []
        for i in range(calls):
            k = first + i
            if rate is not None:
                delay = t0 + run.paused_s + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                # Closed loop: the daemon may fall only so far behind on rows (its memory).
                while i - len(open_calls) - rows_now > backlog:
                    progress.clear()
                    await progress.wait()
                run.backlog_max = max(run.backlog_max, i - len(open_calls) - rows_now)
            if i == concurrency and hold:
                await self.measure_at_concurrency(run, open_calls)
            data = self.calls.answer(k)
            ended = None
            if len(open_calls) >= concurrency:
                ended = open_calls.pop(0)
                data += self.calls.hangup(ended)
            pushed_at[k] = time.perf_counter()
            await self.ari.write(data)
            if ended is not None:
                self.pbx.hang_up(Calls.recorded_channel(ended))
            open_calls.append(k)
        for k in open_calls:
            await self.ari.write(self.calls.hangup(k))
            self.pbx.hang_up(Calls.recorded_channel(k))
        try:
            await asyncio.wait_for(done.wait(), 120)
        except TimeoutError:
            say(f"  {kind} C={concurrency}: only {rows_now} of {calls} rows after 120 s")
        watcher.cancel()
        run.seconds = time.perf_counter() - t0 - run.paused_s
        run.cpu_s = cpu_seconds(self.daemon.pid) - cpu0
        run.rows = await self.rows()
        _, run.hwm_mb = memory_mb(self.daemon.pid)
        for k, t in pushed_at.items():
            mm = self.pbx.mixmonitor_at.pop(Calls.recorded_channel(k), None)
            if mm is not None:
                run.latencies_ms.append(1000 * (mm - t))
        return run


async def one_daemon(
    args: argparse.Namespace,
    work: Path,
    dsn: str,
    kind: str,
    concurrency: int,
    calls: int,
    *,
    hold: bool = False,
) -> Run:
    """A fresh daemon (its own peak RSS, its own journal) for one run."""
    async with BenchAri(password="p") as ari, FakeAmi(secret="s") as ami:
        pbx = Pbx(ami)
        run_dir = work / f"{kind}-{concurrency}-{next(_RUNS)}"
        run_dir.mkdir()
        cfg = run_dir / "callrec.toml"
        cfg.write_text(daemon_config(ari, ami, run_dir, dsn))
        daemon = await asyncio.to_thread(
            start_daemon_process, cfg, src=args.daemon_src, cpus=args.daemon_cpus
        )
        db = await asyncpg.connect(dsn)
        spy = None
        try:
            await ari.wait_client()
            await asyncio.sleep(0.5)  # reconciliation and the event filter pass before measuring
            bench = Bench(ari, pbx, db, daemon)
            # Warm-up, not measured: imports, the day's folder, the first statements.
            await bench.run("warmup", 50, 200, None)
            if args.profile is not None and kind == "saturate":
                spy = py_spy(daemon.pid, args.profile / f"{run_dir.name}.raw")
                await asyncio.sleep(1.0)
            rate = {"paced": args.rate, "light": args.light_rate}.get(kind)
            run = await bench.run(kind, concurrency, calls, rate, hold=hold)
            return run
        finally:
            if spy is not None:
                spy.send_signal(2)
                await asyncio.to_thread(spy.wait, 60)
                raw = args.profile / f"{run_dir.name}.raw"
                if raw.exists():
                    text = args.profile / f"{run_dir.name}.txt"
                    text.write_text("\n".join(profile_summary(raw)) + "\n")
                    say(f"  profile: {text}")
            await db.close()
            pbx.close()
            code = await asyncio.to_thread(daemon.stop)
            log = daemon.log()
            if code != 0 or "Traceback" in log:
                say(f"  daemon exited with {code}; log tail:\n{log[-2000:]}")


def result_line(c: int, sat: Sequence[Run], paced: Sequence[Run], rate: float) -> dict[str, object]:
    def med(values: Sequence[float]) -> float:
        return round(statistics.median(values), 2) if values else float("nan")

    lat = [v for r in paced for v in r.latencies_ms]
    return {
        "bench": "throughput",
        "concurrency": c,
        "calls_per_second": med([r.slope for r in sat]),
        "calls_per_second_overall": med([r.calls / r.seconds for r in sat]),
        "daemon_cpu_s_per_1000_calls": med([1000 * r.cpu_s / r.calls for r in sat]),
        "rss_mb": med([r.rss_at_concurrency_mb for r in [*sat, *paced] if r.rss_at_concurrency_mb > 0]),
        "rss_mb_peak": round(max(max(r.rss_mb_max, r.hwm_mb) for r in [*sat, *paced]), 1),
        "paced_rate": rate,
        "paced_calls_per_second": med([r.slope for r in paced]),
        "answer_to_mixmonitor_ms_p50": round(percentile(lat, 50), 2),
        "answer_to_mixmonitor_ms_p99": round(percentile(lat, 99), 2),
        "answer_to_mixmonitor_ms_max": round(max(lat, default=float("nan")), 2),
        "paced_daemon_cpu_s_per_1000_calls": med([1000 * r.cpu_s / r.calls for r in paced]),
        "calls_saturate": [r.calls for r in sat],
        "calls_paced": [r.calls for r in paced],
        "rows_ok": all(r.rows == r.calls for r in [*sat, *paced]),
        "backlog_max": max((r.backlog_max for r in sat), default=0),
        "samples": {
            "calls_per_second": [round(r.slope, 1) for r in sat],
            "p99_ms": [round(percentile(r.latencies_ms, 99), 2) for r in paced],
        },
        "events_per_call": Calls().events_per_call,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


async def amain(args: argparse.Namespace, work: Path, dsn: str) -> bool:
    ok = True
    light: list[Run] = []
    for c in args.concurrency:
        sat, paced = [], []
        n_sat = c + args.steady_calls
        n_paced = int(c + args.rate * args.paced_seconds)
        for r in range(args.rounds):
            if not args.quick:
                run = await one_daemon(args, work, dsn, "saturate", c, n_sat, hold=True)
                sat.append(run)
                say(
                    f"C={c} round {r + 1} saturate: {run.slope:7.0f} calls/s ({run.calls} calls in"
                    f" {run.seconds:.1f} s), {1000 * run.cpu_s / run.calls:.2f} CPU s/1000 calls,"
                    f" RSS {run.rss_at_concurrency_mb:.0f} MB at C,"
                    f" peak {max(run.rss_mb_max, run.hwm_mb):.0f} MB"
                )
            if c == min(args.concurrency):
                # The latency itself, at a rate well within reach (no queue in front of it).
                run = await one_daemon(args, work, dsn, "light", c, int(c + args.light_rate * 3))
                light.append(run)
                p50, p99 = percentile(run.latencies_ms, 50), percentile(run.latencies_ms, 99)
                say(
                    f"C={c} round {r + 1} paced {args.light_rate:.0f}/s: answer->MixMonitor"
                    f" p50 {p50:.2f} ms p99 {p99:.2f} ms"
                )
            run = await one_daemon(args, work, dsn, "paced", c, n_paced, hold=args.quick)
            paced.append(run)
            say(
                f"C={c} round {r + 1} paced {args.rate:.0f}/s: answer->MixMonitor p50"
                f" {percentile(run.latencies_ms, 50):.2f} ms p99 {percentile(run.latencies_ms, 99):.2f} ms,"
                f" {run.calls / run.seconds:.0f} calls/s achieved,"
                f" RSS {run.rss_at_concurrency_mb:.0f} MB at C"
            )
        # --quick has no saturate runs: offered 1,000 calls/s, the daemon's pace is its limit
        # whenever it is below that (the websocket's backpressure holds the generator).
        line = result_line(c, sat or paced, paced, args.rate)
        if light and c == min(args.concurrency):
            lat = [v for r in light for v in r.latencies_ms]
            line["light_rate"] = args.light_rate
            line["answer_to_mixmonitor_ms_p50_light"] = round(percentile(lat, 50), 2)
            line["answer_to_mixmonitor_ms_p99_light"] = round(percentile(lat, 99), 2)
            line["rows_ok"] = bool(line["rows_ok"]) and all(r.rows == r.calls for r in light)
        line["quick"] = args.quick
        ok = ok and bool(line["rows_ok"])
        print(json.dumps(line), flush=True)
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer calls, one round (make bench)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[100, 1000, 5000])
    p.add_argument("--rounds", type=int, default=None, help="default 3, quick 1")
    p.add_argument("--rate", type=float, default=1000.0, help="offered calls/s of the paced run")
    p.add_argument("--light-rate", type=float, default=200.0, help="a rate within reach, for latency")
    p.add_argument("--daemon-src", type=Path, default=REPO / "daemon", help="source root of callrec")
    p.add_argument("--daemon-cpus", default="0", help="taskset list for the daemon ('' = unpinned)")
    p.add_argument("--profile", type=Path, help="py-spy the daemon in the saturate runs; summaries here")
    args = p.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.steady_calls = 6000  # calls after the first C: the steady state of a saturate run
    args.paced_seconds = 1.5 if args.quick else 6.0
    args.daemon_cpus = args.daemon_cpus or None
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    logs.configure("warning", stream=sys.stderr)  # stdout carries the JSON lines only
    work = Path(tempfile.mkdtemp(prefix="callrec-bench-throughput-"))
    cluster = Cluster()
    try:
        cluster.start()
        cluster.createdb("callrec")
        dsn = cluster.dsn("callrec")
        asyncio.run(migrate(dsn))
        if args.daemon_cpus is not None and len(os.sched_getaffinity(0)) > 1:
            # The generator on the cores the daemon does not have (PostgreSQL is left unpinned).
            others = set(os.sched_getaffinity(0)) - {int(c) for c in args.daemon_cpus.split(",")}
            if others:
                os.sched_setaffinity(0, others)
        ok = asyncio.run(amain(args, work, dsn))
        return 0 if ok else 1
    finally:
        cluster.destroy()
        if not os.environ.get("CALLREC_BENCH_KEEP"):  # keep the daemons' logs for a look
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
