"""Soak: calls at a steady rate for an hour (``--quick``: 10 minutes) through an unmodified
``callrec run`` on the wire-level fakes, to show that memory, descriptors and the journal stay
flat.

The generator is throughput.py's: every call is the real Asterisk 22 transcript of one inbound
call (56 events, ids unique per call), MixMonitor over AMI writes and closes the file as
Asterisk would, rows go to a real PostgreSQL (and through the archive step, as shipped). Each
call is up for ``--hold`` seconds, so ``rate x hold`` calls are up at any time.

Every ``--every`` seconds one JSON line (``"kind": "sample"``): elapsed seconds, calls offered,
rows written, the daemon's RSS and open descriptors from /proc, the journal's size on disk
(``journal.sqlite3`` plus its WAL), and what the daemon itself exports on ``/metrics``
(``process_resident_memory_bytes``, ``process_open_fds``, the tracker's sizes), so the metrics
are checked against /proc as they go. A last line (``"kind": "summary"``) says whether every
call got exactly its row and how much memory, descriptors and journal moved between the end of
the first tenth of the run (warm) and the end.

    .venv/bin/python bench/soak.py [--quick] [--rate 10] [--hold 3] [--minutes 60] [--every 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _common import REPO, memory_mb, say
from _common import start_daemon as start_daemon_process
from throughput import BenchAri, Calls, Pbx

for entry in (str(REPO / "daemon"), str(REPO)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import asyncpg  # noqa: E402
from tests.fakes.ami_server import FakeAmi  # noqa: E402
from tests.fakes.pbx import daemon_config  # noqa: E402
from tests.harness.postgres import Cluster  # noqa: E402

from callrec.db.migrations import migrate  # noqa: E402
from callrec.ops import logs  # noqa: E402

_SCRAPED = (
    "process_resident_memory_bytes",
    "process_open_fds",
    "callrec_tracker_channels",
    "callrec_tracker_calls",
    "callrec_tracker_recordings",
    "callrec_recordings_active",
    "callrec_outbox_depth",
)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def journal_bytes(state_dir: Path) -> int:
    return sum(p.stat().st_size for p in state_dir.glob("journal.sqlite3*") if p.exists())


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with session.get(url) as resp:
        text = await resp.text()
    out = {}
    for name in _SCRAPED:
        m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
        if m:
            out[name] = float(m.group(1))
    return out


async def soak(args: argparse.Namespace, work: Path, dsn: str) -> bool:
    async with BenchAri(password="p") as ari, FakeAmi(secret="s") as ami:
        pbx = Pbx(ami)
        cfg = work / "callrec.toml"
        text = daemon_config(ari, ami, work, dsn)
        cfg.write_text(text)
        m = re.search(r'listen = "(127\.0\.0\.1:\d+)"', text)
        assert m is not None
        metrics_url = f"http://{m.group(1)}/metrics"
        daemon = await asyncio.to_thread(start_daemon_process, cfg, cpus=args.daemon_cpus)
        db = await asyncpg.connect(dsn)
        calls = Calls()
        samples: list[dict[str, object]] = []
        up: list[tuple[float, int]] = []
        offered = 0
        try:
            await ari.wait_client()
            async with aiohttp.ClientSession() as http:
                t0 = time.perf_counter()
                end = t0 + args.minutes * 60
                next_sample = t0 + args.every
                while True:
                    now = time.perf_counter()
                    while up and up[0][0] <= now:
                        _, k = up.pop(0)
                        await ari.write(calls.hangup(k))
                        pbx.hang_up(Calls.recorded_channel(k))
                    if now < end and t0 + offered / args.rate <= now:
                        await ari.write(calls.answer(offered))
                        up.append((now + args.hold, offered))
                        offered += 1
                    if now >= next_sample:
                        next_sample += args.every
                        line = await sample(args, daemon.pid, db, http, metrics_url, work, t0, offered)
                        samples.append(line)
                        print(json.dumps(line), flush=True)
                    if now >= end and not up:
                        break
                    await asyncio.sleep(min(0.01, 1 / args.rate))
                rows = 0
                deadline = time.perf_counter() + 120
                while time.perf_counter() < deadline:
                    rows = int(await db.fetchval("SELECT count(*) FROM recordings"))
                    if rows >= offered:
                        break
                    await asyncio.sleep(0.2)
                final = await sample(args, daemon.pid, db, http, metrics_url, work, t0, offered)
                samples.append(final)
                print(json.dumps(final), flush=True)
            distinct = int(await db.fetchval("SELECT count(DISTINCT call_id) FROM recordings"))
            summary = summarise(args, samples, offered, rows, distinct)
            print(json.dumps(summary), flush=True)
            return bool(summary["rows_exact"])
        finally:
            await db.close()
            pbx.close()
            code = await asyncio.to_thread(daemon.stop)
            if code != 0 or "Traceback" in daemon.log():
                say(f"daemon exited with {code}; log tail:\n{daemon.log()[-2000:]}")


async def sample(
    args: argparse.Namespace,
    pid: int,
    db: asyncpg.Connection,
    http: aiohttp.ClientSession,
    metrics_url: str,
    work: Path,
    t0: float,
    offered: int,
) -> dict[str, object]:
    rss, hwm = memory_mb(pid)
    exported = await scrape(http, metrics_url)
    line: dict[str, object] = {
        "bench": "soak",
        "kind": "sample",
        "elapsed_s": round(time.perf_counter() - t0, 1),
        "calls": offered,
        "rows": int(await db.fetchval("SELECT count(*) FROM recordings")),
        "rss_mb": round(rss, 1),
        "rss_mb_peak": round(hwm, 1),
        "fds": open_fds(pid),
        "journal_kb": round(journal_bytes(work / "state") / 1024, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    for name, value in exported.items():
        key = "metric_rss_mb" if name == "process_resident_memory_bytes" else f"metric_{name}"
        line[key] = round(value / (1 << 20), 1) if name == "process_resident_memory_bytes" else value
    say(
        f"{line['elapsed_s']:>7} s  calls {offered}  rows {line['rows']}  rss {rss:.1f} MB"
        f"  fds {line['fds']}  journal {line['journal_kb']} KB"
    )
    return line


def summarise(
    args: argparse.Namespace, samples: list[dict[str, object]], offered: int, rows: int, distinct: int
) -> dict[str, object]:
    def at(i: int, key: str) -> float:
        return float(samples[i][key])  # type: ignore[arg-type]

    warm = max(0, len(samples) // 10 - 1)
    last = len(samples) - 1
    return {
        "bench": "soak",
        "kind": "summary",
        "quick": args.quick,
        "minutes": args.minutes,
        "rate": args.rate,
        "hold_s": args.hold,
        "calls": offered,
        "rows": rows,
        "rows_exact": rows == offered and distinct == offered,
        "rss_mb_warm": at(warm, "rss_mb"),
        "rss_mb_end": at(last, "rss_mb"),
        "rss_mb_peak": max(at(i, "rss_mb_peak") for i in range(len(samples))),
        "fds_warm": at(warm, "fds"),
        "fds_end": at(last, "fds"),
        "fds_max": max(at(i, "fds") for i in range(len(samples))),
        "journal_kb_warm": at(warm, "journal_kb"),
        "journal_kb_end": at(last, "journal_kb"),
        "journal_kb_max": max(at(i, "journal_kb") for i in range(len(samples))),
        "samples": len(samples),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10 minutes instead of an hour (make bench)")
    p.add_argument("--minutes", type=float, default=None, help="default 60, quick 10")
    p.add_argument("--rate", type=float, default=10.0, help="calls per second")
    p.add_argument("--hold", type=float, default=3.0, help="seconds each call is up")
    p.add_argument("--every", type=float, default=None, help="seconds between samples (default 60, quick 30)")
    p.add_argument("--daemon-cpus", default="0", help="taskset list for the daemon ('' = unpinned)")
    args = p.parse_args()
    args.minutes = args.minutes or (10.0 if args.quick else 60.0)
    args.every = args.every or (30.0 if args.quick else 60.0)
    args.daemon_cpus = args.daemon_cpus or None
    logs.configure("warning", stream=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="callrec-bench-soak-"))
    cluster = Cluster()
    try:
        cluster.start()
        cluster.createdb("callrec")
        dsn = cluster.dsn("callrec")
        asyncio.run(migrate(dsn))
        return 0 if asyncio.run(soak(args, work, dsn)) else 1
    finally:
        cluster.destroy()
        if not os.environ.get("CALLREC_BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
