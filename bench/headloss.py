"""Head loss: the audio at the start of a call that callrec's recording lacks.

A real Asterisk 22 (the test harness's chroot, the shipped ``dialplan/`` plus one bench
context) and ``callrec run`` writing to a throwaway PostgreSQL. Each call is a Local channel
pair; its ``;2`` half carries ``CALLREC_REGISTER`` and is recorded twice:

* by a reference ``MixMonitor`` that the dialplan starts *before* ``Answer()`` (the native
  way: it loses nothing, but writes no register row), into a file of its own;
* by callrec: in event mode from outside once ARI reports the answer (``MixMonitor`` over
  AMI), in AGI mode through ``AGI(agi://...)`` just before ``Answer()``.

All calls of a batch wait in the dialplan (``WaitUntil``) and are answered in the same
millisecond, 1, 20 or 50 at once. The known signal is a ramp, ``sample[n] = -30000 + n``
(8 kHz, 16 bit, 1 s): every sample says where in the signal it is, so the first signal sample
in a recording tells how much of the signal is missing before it, to the sample. Two signals:

* ``caller``: the far end (the ``;1`` half, the "customer") plays it from the instant it is
  answered, as a customer who says "hello?" the moment they pick up. The strict case.
* ``prompt``: the answering dialplan plays it right after ``Answer()`` (a greeting).
  ``Answer()`` first waits for the caller's first media frame, so this case has slack.

Head loss = the signal samples before the first one in callrec's file (0 if callrec's file
starts before the signal). The reference must hold the signal from its first sample; that
is checked and reported (``reference_complete``). See bench/README.md for the reasoning.

Prints one JSON line per (mode, signal, calls at once) on stdout; progress goes to stderr.
Needs root (chroot, bind mounts).

    .venv/bin/python bench/headloss.py [--quick] [--rounds 3] [--calls 1 20 50]
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from _common import REPO, DaemonProcess, percentile, say, start_daemon

for entry in (str(REPO / "daemon"), str(REPO)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import psycopg  # noqa: E402
from tests.e2e.conftest import write_config  # noqa: E402
from tests.harness.asterisk import DEFAULT_ROOT, TEST_AMI_USER, Asterisk, free_port  # noqa: E402
from tests.harness.driver import Driver  # noqa: E402
from tests.harness.postgres import Cluster  # noqa: E402

from callrec.db.migrations import migrate  # noqa: E402
from callrec.ops import logs  # noqa: E402

RATE = 8000
FRAME = 160  # samples in one 20 ms frame (one RTP packet of G.711 at ptime 20)
BASE = -30000
LENGTH = RATE  # 1 s of ramp: -30000 .. -22001, far from silence
# Samples that must continue the ramp after the first one found: proof enough that it is the
# signal. Not more: Answer() reads the caller's first frame, puts it back and reads it again,
# so read-side audiohooks see that frame twice and the ramp restarts once (Asterisk 22).
CHECK = 32


@dataclass
class BenchAsterisk(Asterisk):
    """The harness's Asterisk plus the bench context and the generated signal."""

    def _write_configs(self) -> None:
        super()._write_configs()
        bench = self.host_base / "bench"
        (bench / "ref").mkdir(parents=True, exist_ok=True)
        with wave.open(str(bench / "signal.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(array.array("h", range(BASE, BASE + LENGTH)).tobytes())
        b = self.base
        with (self.host_base / "etc" / "callrec-devices.conf").open("a") as f:
            f.write(f"""
; bench/headloss.py: the answering side of Local/<n>@callrec-bench (the ;2 half).
[callrec-bench]
exten => _X.,1,Set(__CALLREC_REGISTER=customer-service)
 same => n,Set(CALLREC_SERVICE_NUMBER=${{EXTEN}})
 same => n,MixMonitor({b}/bench/ref/${{CHANNEL(linkedid)}}.wav)
 same => n,WaitUntil(${{ANSWER_AT}})
 same => n,Set(T0=${{STRFTIME(,,%s.%6q)}})
 same => n,ExecIf($["${{MODE}}" = "agi"]?AGI(agi://127.0.0.1:{self.agi_port}/record))
 same => n,Answer()
 same => n,Log(NOTICE,callrec-bench ${{CHANNEL(linkedid)}} ${{T0}} ${{STRFTIME(,,%s.%6q)}})
 same => n,ExecIf($["${{SIGNAL}}" = "prompt"]?Playback({b}/bench/signal):Wait(3))
 same => n,Hangup()
""")

    @property
    def signal(self) -> str:
        return f"{self.base}/bench/signal"

    def reference(self, call_id: str) -> Path:
        return self.host_base / "bench" / "ref" / f"{call_id}.wav"

    def answer_delays(self) -> dict[str, float]:
        """Per call: seconds from the end of WaitUntil to Answer() returning (the AGI inside)."""
        text = (self.host_base / "log" / "messages").read_text(errors="replace")
        found = re.findall(r"callrec-bench (\S+) (\d+\.\d+) (\d+\.\d+)", text)
        return {lid: float(t1) - float(t0) for lid, t0, t1 in found}


@dataclass
class Decoded:
    index: int
    """Where in the file the first signal sample is."""
    position: int
    """Which sample of the signal it is (0 = its very start)."""
    contiguous: bool


def decode(path: Path) -> Decoded | None:
    with wave.open(str(path)) as w:
        if (w.getframerate(), w.getsampwidth(), w.getnchannels()) != (RATE, 2, 1):
            raise RuntimeError(f"{path}: not 8 kHz 16-bit mono")
        x = array.array("h", w.readframes(w.getnframes()))
    for j in range(len(x) - 1):
        v = x[j]
        if BASE <= v < BASE + LENGTH and x[j + 1] == v + 1:
            p = v - BASE
            n = min(CHECK, len(x) - j, LENGTH - p)
            contiguous = all(x[j + k] == v + k for k in range(n))
            return Decoded(j, p, contiguous)
    return None


@dataclass
class Batch:
    mode: str
    signal: str
    calls: int
    losses_ms: list[float] = field(default_factory=list)
    margins_ms: list[float] = field(default_factory=list)
    answer_delays_ms: list[float] = field(default_factory=list)
    undecodable: int = 0
    reference_complete: int = 0
    rows: int = 0
    delays: dict[float, float] = field(default_factory=dict)
    """What the batch added to the daemon's answer-event delay histogram."""


def live_channels(driver: Driver) -> int:
    return int(driver.action("CoreStatus", {}).get("CoreCurrentCalls", "-1"))


def rows_since(dsn: str, since: int) -> list[tuple[str, str]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(
            "SELECT call_id, file_path FROM recordings ORDER BY created_at OFFSET %s", (since,)
        )
        return [(str(a), str(b)) for a, b in cur.fetchall()]


def run_batch(
    ast: BenchAsterisk, driver: Driver, dsn: str, seen: int, mode: str, signal: str, calls: int
) -> tuple[Batch, int]:
    lead = 0.5 + 0.02 * calls  # every call waits in WaitUntil before the shared answer time
    answer_at = time.time() + lead
    variables = {"__ANSWER_AT": f"{answer_at:.3f}", "__MODE": mode, "__SIGNAL": signal}
    for i in range(calls):
        if signal == "caller":
            app, data = "Playback", ast.signal
        else:
            app, data = "Wait", "5"
        driver.originate(f"Local/{700 + i}@callrec-bench", application=app, data=data, variables=variables)
    deadline = time.monotonic() + lead + 30
    rows: list[tuple[str, str]] = []
    while time.monotonic() < deadline:
        rows = rows_since(dsn, seen)
        if len(rows) >= calls and live_channels(driver) == 0:
            break
        time.sleep(0.1)
    time.sleep(0.3)  # the reference MixMonitor closes its file on its own thread
    batch = Batch(mode, signal, calls, rows=len(rows))
    delays = ast.answer_delays()
    for call_id, file_path in rows:
        got = decode(ast.recordings_dir / file_path)
        ref = decode(ast.reference(call_id))
        if ref is not None and ref.position == 0:
            batch.reference_complete += 1
        if call_id in delays:
            batch.answer_delays_ms.append(1000 * delays[call_id])
        if got is None or not got.contiguous:
            batch.undecodable += 1
            continue
        lost = got.position - got.index  # signal samples missing before callrec's first sample
        batch.losses_ms.append(1000 * max(lost, 0) / RATE)
        batch.margins_ms.append(1000 * -lost / RATE)
    return batch, seen + len(rows)


_DELAY_BUCKET = re.compile(r'(?m)^callrec_answer_event_delay_seconds_bucket\{le="([^"]+)"\} (\S+)$')


def delay_buckets(port: int) -> dict[float, float]:
    """The daemon's ``callrec_answer_event_delay_seconds`` histogram: cumulative count per
    upper bound (Asterisk's part of the head loss; empty from a daemon without it)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {float(le): float(n) for le, n in _DELAY_BUCKET.findall(text)}


def bucket_quantile(counts: dict[float, float], q: float) -> float | None:
    """The upper bound (ms) of the bucket holding the ``q``-th percentile observation: never
    interpolated, as ``percentile`` is nearest-rank."""
    total = counts.get(math.inf, 0.0)
    if not total:
        return None
    rank = max(1, math.ceil(q / 100 * total))
    return next(le * 1000 for le, n in sorted(counts.items()) if n >= rank)


def summary(batches: list[Batch], rounds: int) -> dict[str, object]:
    b0 = batches[0]
    losses = [v for b in batches for v in b.losses_ms]
    frames = [math.ceil(v * RATE / 1000 / FRAME - 1e-9) for v in losses]
    delays = [v for b in batches for v in b.answer_delays_ms]
    per_batch_p99 = [round(percentile(b.losses_ms, 99), 1) for b in batches if b.losses_ms]

    def r(v: float) -> float | None:
        return None if math.isnan(v) else round(v, 1)

    return {
        "bench": "headloss",
        "mode": b0.mode,
        "signal": b0.signal,
        "calls_at_once": b0.calls,
        "batches": len(batches),
        "rounds": rounds,
        "calls": len(losses),
        "head_loss_ms_p50": r(percentile(losses, 50)),
        "head_loss_ms_p99": r(percentile(losses, 99)),
        "head_loss_ms_max": r(max(losses) if losses else math.nan),
        "head_loss_frames": {str(k): frames.count(k) for k in sorted(set(frames))},
        "head_loss_ms_p99_per_batch": per_batch_p99,
        "attach_margin_ms_p50": r(percentile([v for b in batches for v in b.margins_ms], 50)),
        "answer_delay_ms_p50": r(percentile(delays, 50)),
        "answer_delay_ms_p99": r(percentile(delays, 99)),
        # Event mode: how late Asterisk published the answers, as the daemon's histogram has it.
        "asterisk_answer_event_ms_p50": bucket_quantile(_summed(b.delays for b in batches), 50),
        "asterisk_answer_event_ms_p99": bucket_quantile(_summed(b.delays for b in batches), 99),
        "undecodable": sum(b.undecodable for b in batches),
        "reference_complete": sum(b.reference_complete for b in batches),
        "rows": sum(b.rows for b in batches),
        "rows_expected": sum(b.calls for b in batches),
    }


def _summed(parts: Iterable[dict[float, float]]) -> dict[float, float]:
    out: dict[float, float] = {}
    for part in parts:
        for le, n in part.items():
            out[le] = out.get(le, 0.0) + n
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one round, fewer single calls (make bench)")
    p.add_argument("--rounds", type=int, default=None, help="rounds over every case (default 3, quick 1)")
    p.add_argument("--calls", type=int, nargs="+", default=[1, 20, 50], help="calls answered at once")
    p.add_argument("--modes", nargs="+", default=["event", "agi"], choices=["event", "agi"])
    p.add_argument("--signals", nargs="+", default=["caller", "prompt"], choices=["caller", "prompt"])
    p.add_argument("--singles", type=int, default=None, help="batches of 1 call per round (5, quick 3)")
    p.add_argument("--daemon-src", type=Path, default=REPO / "daemon", help="source root of callrec")
    p.add_argument(
        "--ari", action="append", default=[], metavar="KEY=VALUE", help="override an ari.conf line"
    )
    args = p.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    singles = args.singles or (3 if args.quick else 5)
    if os.geteuid() != 0:
        say("headloss needs root: the harness chroots into a Debian sid root and bind-mounts into it")
        return 1
    logs.configure("warning", stream=sys.stderr)  # stdout carries the JSON lines only
    # The chroot's build script talks on stdout; stdout is for the JSON lines only.
    subprocess.run(
        [str(REPO / "tests" / "harness" / "asterisk-root.sh"), str(DEFAULT_ROOT)],
        check=True,
        stdout=sys.stderr,
    )
    work = Path(tempfile.mkdtemp(prefix="callrec-bench-headloss-"))
    cluster = Cluster()
    overrides = dict(kv.split("=", 1) for kv in args.ari)
    ast = BenchAsterisk(recordings_dir=work / "recordings", ari_overrides=overrides)
    daemon: DaemonProcess | None = None
    driver: Driver | None = None
    try:
        cluster.start()
        cluster.createdb("callrec")
        dsn = cluster.dsn("callrec")
        asyncio.run(migrate(dsn))
        ast.start()
        cfg = work / "callrec.toml"
        metrics_port = free_port()
        write_config(
            cfg,
            ast,
            dsn,
            metrics_port,
            state_dir=work / "state",
            # Without "agi" in --modes no [agi] is written: a daemon from before AGI mode loads it.
            extra=f'[agi]\nlisten = "127.0.0.1:{ast.agi_port}"\n' if "agi" in args.modes else "",
        )
        # The WAVs are what is measured: the archive step would transcode and delete them.
        cfg.write_text(cfg.read_text().replace("[archive]\n", "[archive]\nenabled = false\n"))
        daemon = start_daemon(cfg, src=args.daemon_src)
        driver = Driver(ast.ami_port, TEST_AMI_USER, ast.ami_secret)
        time.sleep(0.5)
        cases = [(m, s, n) for n in args.calls for m in args.modes for s in args.signals]
        results: dict[tuple[str, str, int], list[Batch]] = {c: [] for c in cases}
        seen = 0
        _, seen = run_batch(ast, driver, dsn, seen, "event", "caller", 5)  # warm-up, not counted
        for r in range(rounds):
            for mode, signal, n in cases:
                for _ in range(singles if n == 1 else 1):
                    before = delay_buckets(metrics_port)
                    batch, seen = run_batch(ast, driver, dsn, seen, mode, signal, n)
                    batch.delays = {
                        le: c - before.get(le, 0.0) for le, c in delay_buckets(metrics_port).items()
                    }
                    results[(mode, signal, n)].append(batch)
                    worst = max(batch.losses_ms, default=math.nan)
                    say(
                        f"round {r + 1} {mode:5} {signal:6} x{n:<3} loss ms p50"
                        f" {percentile(batch.losses_ms, 50):5.1f} max {worst:5.1f}"
                        f" rows {batch.rows}/{n} undecodable {batch.undecodable}"
                    )
        ok = True
        for case in cases:
            line = summary(results[case], rounds)
            line["ari_overrides"] = overrides
            line["load_avg_1m"] = round(os.getloadavg()[0], 2)
            ok = ok and line["rows"] == line["rows_expected"] and line["undecodable"] == 0
            print(json.dumps(line), flush=True)
        if "Traceback" in daemon.log():
            say("daemon log has a traceback")
            ok = False
        return 0 if ok else 1
    finally:
        if driver is not None:
            driver.close()
        if daemon is not None:
            daemon.stop()
        ast.destroy()
        cluster.destroy()
        if not os.environ.get("CALLREC_BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
