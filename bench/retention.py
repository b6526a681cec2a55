"""Retention sweep vs. the cron line people use today.

For each N: one throwaway PostgreSQL database with N expired recordings (rows written by COPY,
files in the dated tree ``YYYY/MM/DD/<uuid>.wav``, 4 KiB each, spread over 30 days, mtime =
end of the call), and two identical twin trees. Then, each after a ``sync``:

1. ``find DIR -type f -mtime +30 -delete`` on the first twin;
2. one ``Sweeper.run_pass()`` in a fresh process (so its peak RSS is its own), which also keeps
   the register, the disposal queue and the disposal log right;
3. the same ``find`` on the second twin.

find's rate is that of both its runs together: they bracket the sweep in time, so a change of
load on a shared machine weighs on both sides alike. The trees are written interleaved, file
by file, so none is warmer in the page cache.
Prints one JSON line per N on stdout; progress goes to stderr.

    PYTHONPATH=daemon:. .venv/bin/python bench/retention.py [--quick] [--n 10000 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for entry in (str(REPO / "daemon"), str(REPO)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import asyncpg  # noqa: E402
from tests.harness.postgres import Cluster  # noqa: E402

from callrec import config, logs  # noqa: E402
from callrec.db.migrations import migrate  # noqa: E402
from callrec.retention.sweep import Sweeper  # noqa: E402

NODE = "bench"
FILE_BYTES = 4096
DAYS = 30
COPY_CHUNK = 10_000
COLUMNS = [
    "id", "call_id", "register_name", "direction", "started_at", "ended_at", "duration_seconds",
    "service_number", "customer_number_masked", "agent_name", "file_path", "file_size", "sha256",
    "retain_until", "node",
]  # fmt: skip


def say(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def write_config(path: Path, dsn: str, recordings: Path) -> None:
    path.write_text(
        f"""
[asterisk]
ari_username = "bench"
ari_password = "x"
ami_username = "bench"
ami_secret = "x"
recordings_dir = "{recordings}"
[database]
dsn = "{dsn}"
[daemon]
node = "{NODE}"
log_level = "warning"
[registers.customer-service]
direction = "inbound"
retention = "1 month"
"""
    )


async def build(dsn: str, n: int, trees: tuple[Path, Path]) -> None:
    """N expired rows and, for each, the same file in both trees; batches keep memory flat."""
    now = datetime.now(UTC)
    payload = b"\x52" * FILE_BYTES
    made: set[str] = set()
    conn = await asyncpg.connect(dsn)
    try:
        for start in range(0, n, COPY_CHUNK):
            records = []
            for i in range(start, min(n, start + COPY_CHUNK)):
                rid = uuid.uuid4()
                ended = now - timedelta(days=60 + i % DAYS, seconds=i % 86400)
                started = ended - timedelta(seconds=90)
                day = f"{started:%Y/%m/%d}"
                rel = f"{day}/{rid}.wav"
                mtime = ended.timestamp()
                for root in trees:
                    if day not in made:
                        (root / day).mkdir(parents=True, exist_ok=True)
                    fd = os.open(root / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
                    os.write(fd, payload)
                    os.close(fd)
                    os.utime(root / rel, (mtime, mtime))
                made.add(day)
                records.append(
                    (rid, f"{i}.0", "customer-service", "inbound", started, ended, Decimal("90.000"),
                     "0300", "+358401234***", "alice", rel, FILE_BYTES, "a" * 64,
                     ended + timedelta(days=30), NODE)
                )  # fmt: skip
            await conn.copy_records_to_table("recordings", records=records, columns=COLUMNS)
        await conn.execute("ANALYZE recordings")
    finally:
        await conn.close()


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def run_sweep(config_path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(config_path)], check=True, capture_output=True, text=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run_find(root: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["find", str(root), "-type", "f", "-mtime", "+30", "-delete"], check=True)
    return time.perf_counter() - t0


def one(cluster: Cluster, n: int, work: Path) -> dict[str, object]:
    dbname = f"bench_{n}"
    cluster.createdb(dbname)
    dsn = cluster.dsn(dbname)
    asyncio.run(migrate(dsn))
    sweep_root, find_before, find_after = (work / f"{name}-{n}" for name in ("sweep", "find1", "find2"))
    say(f"retention bench: building {n} recordings (rows + three identical trees)")
    t0 = time.monotonic()
    asyncio.run(build(dsn, n, (sweep_root, find_before, find_after)))
    say(f"  built in {time.monotonic() - t0:.1f}s")
    cfg = work / f"callrec-{n}.toml"
    write_config(cfg, dsn, sweep_root)

    os.sync()
    find_seconds = run_find(find_before)
    os.sync()
    sweep = run_sweep(cfg)
    os.sync()
    find_seconds += run_find(find_after)

    left = asyncio.run(_left(dsn))
    files_left = sum(count_files(root) for root in (sweep_root, find_before, find_after))
    if sweep["destroyed"] != n or left != (0, 0, n) or files_left:
        raise SystemExit(f"retention bench: wrong result for n={n}: {sweep} rows/pending/log={left}")
    sweep_rate = n / sweep["seconds"]
    find_rate = 2 * n / find_seconds
    return {
        "bench": "retention",
        "n": n,
        "sweep_files_per_second": round(sweep_rate),
        "find_files_per_second": round(find_rate),
        "ratio": round(sweep_rate / find_rate, 3),
        "max_transaction_seconds": round(sweep["max_tx"], 4),
        "rss_mb": round(sweep["rss_mb"], 1),
        "sweep_seconds": round(sweep["seconds"], 3),
        "find_seconds": round(find_seconds / 2, 3),
    }


async def _left(dsn: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM recordings), (SELECT count(*) FROM disposal_pending),"
            " (SELECT count(*) FROM disposal_log)"
        )
        return (row[0], row[1], row[2])
    finally:
        await conn.close()


async def child(config_path: Path) -> None:
    """One pass, timed from inside, in its own process."""
    settings = config.load(config_path)
    logs.configure("warning", sys.stderr)
    pool = await asyncpg.create_pool(settings.database_dsn, min_size=1, max_size=2)
    try:
        t0 = time.perf_counter()
        report = await Sweeper(pool, settings).run_pass()
        seconds = time.perf_counter() - t0
    finally:
        await pool.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "seconds": seconds,
        "destroyed": report.total.count,
        "max_tx": report.longest_transaction_seconds,
        "rss_mb": rss_mb,
    }
    print(json.dumps(result), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="N = 2,000 and 10,000 (well under 2 minutes)")
    p.add_argument("--n", type=int, nargs="+", help="the N to run (default 10,000 and 100,000)")
    p.add_argument(
        "--dir",
        type=Path,
        help="where to build the trees (default: $TMPDIR); use the recordings' file system",
    )
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        asyncio.run(child(args.child))
        return
    logs.configure("warning", sys.stderr)  # stdout carries the JSON lines only
    sizes = args.n or ([2_000, 10_000] if args.quick else [10_000, 100_000])
    work = Path(tempfile.mkdtemp(prefix="callrec-bench-retention-", dir=args.dir))
    cluster = Cluster()
    cluster.start()
    try:
        for n in sizes:
            print(json.dumps(one(cluster, n, work)), flush=True)
    finally:
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
