"""``make bench``: run every benchmark in bench/ on this machine and write one summary table.

Each ``bench/<name>.py`` (except this file and ``_*.py`` helpers) runs as a process of its own
with ``--quick`` (or without, given ``--full``); its JSON lines go to ``<out>/<name>.jsonl``,
its progress to the terminal, and the table of all of them to ``<out>/summary.md`` and stdout.
The exit status is non-zero if any benchmark failed.

    .venv/bin/python bench/summary.py [--full] [--out bench/out] [--only headloss throughput]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The figures the issues set targets for, first in each row; every other scalar follows.
HEADLINE = (
    "head_loss_ms_p50",
    "head_loss_ms_p99",
    "head_loss_ms_max",
    "calls_per_second",
    "answer_to_mixmonitor_ms_p50",
    "answer_to_mixmonitor_ms_p99",
    "daemon_cpu_s_per_1000_calls",
    "rss_mb",
    "smaller_than_wav",
    "pesq_nb",
    "realtime_factor",
    "seek_ms_p99",
    "peak_rss_mb",
)
# What tells the rows of one benchmark apart.
CASE = (
    "mode",
    "signal",
    "calls_at_once",
    "concurrency",
    "calls",
    "n",
    "phase",
    "format",
    "complexity",
    "audio_seconds",
)
SKIP = frozenset({"bench", "samples", "load_avg_1m", "quick"})


def benches(only: list[str] | None) -> list[Path]:
    found = sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_") and p.name != "summary.py")
    return [p for p in found if only is None or p.stem in only]


def run(path: Path, full: bool, out: Path) -> tuple[list[dict[str, object]], int, float]:
    cmd = [sys.executable, str(path)] + ([] if full else ["--quick"])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "daemon"), str(HERE.parent)])
    print(f"== {path.name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, env=env, check=False)  # stderr: the terminal
    seconds = time.monotonic() - t0
    lines = []
    for raw in proc.stdout.decode(errors="replace").splitlines():
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            lines.append(obj)
    (out / f"{path.stem}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return lines, proc.returncode, seconds


def cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def table(name: str, lines: list[dict[str, object]]) -> list[str]:
    if not lines:
        return [f"### {name}", "", "(no results)", ""]
    keys: list[str] = []
    for line in lines:
        for k, v in line.items():
            if k not in keys and k not in SKIP and not isinstance(v, dict):
                keys.append(k)
    ordered = [k for k in CASE if k in keys] + [k for k in HEADLINE if k in keys]
    ordered += [k for k in keys if k not in ordered]
    rows = [
        f"### {name}",
        "",
        "| " + " | ".join(ordered) + " |",
        "|" + "---|" * len(ordered),
    ]
    rows += ["| " + " | ".join(cell(line.get(k, "")) for k in ordered) + " |" for line in lines]
    return [*rows, ""]


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="full runs instead of --quick (takes long)")
    p.add_argument("--out", type=Path, default=HERE / "out", help="where the JSON lines and table go")
    p.add_argument("--only", nargs="+", help="benchmark names (file stems) to run")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    report = [
        f"# callrec benchmarks ({'full' if args.full else 'quick'}), {started}",
        "",
        f"{platform.node()}: {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, load average at start {os.getloadavg()[0]:.2f}",
        "",
    ]
    failed = []
    status = []
    for path in benches(args.only):
        lines, code, seconds = run(path, args.full, args.out)
        status.append(f"| {path.stem} | {'ok' if code == 0 else f'FAILED ({code})'} | {seconds:.0f} s |")
        if code != 0:
            failed.append(path.stem)
        report += table(path.stem, lines)
    report[4:4] = ["| benchmark | status | time |", "|---|---|---|", *status, ""]
    text = "\n".join(report)
    (args.out / "summary.md").write_text(text)
    print(text)
    print(f"(also in {args.out / 'summary.md'})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
