"""Helpers shared by the benchmarks (headloss.py, throughput.py). Not a benchmark:
``make bench`` runs ``bench/*.py`` except files starting with ``_``."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
for entry in (str(REPO / "daemon"), str(REPO)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from tests.harness.daemon import DaemonProcess  # noqa: E402


def say(*parts: object) -> None:
    """Progress goes to stderr; stdout carries only the JSON lines."""
    print(*parts, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): a value that was measured, never interpolated."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB: resident now, and the peak so far."""
    text = Path(f"/proc/{pid}/status").read_text()
    kb = {k: int(v) for k, v in re.findall(r"(?m)^(VmRSS|VmHWM):\s+(\d+) kB", text)}
    return kb["VmRSS"] / 1024, kb["VmHWM"] / 1024


def start_daemon(
    config: Path,
    *,
    src: Path = REPO / "daemon",
    cpus: str | None = None,
    ready: str = '"callrec ready"',
    timeout: float = 60,
) -> DaemonProcess:
    """Start ``callrec run --config config`` from source tree ``src``; with ``cpus`` (a
    taskset list such as "0") it is pinned to those cores. Returns once ``ready`` is logged."""
    log_path = config.with_suffix(".log")
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, "-m", "callrec.cli", "run", "--config", str(config)]
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    daemon = DaemonProcess(proc, log_path)
    deadline = time.monotonic() + timeout
    while ready not in daemon.log():
        if proc.poll() is not None or time.monotonic() > deadline:
            daemon.stop(5)
            raise RuntimeError(f"daemon did not get ready:\n{daemon.log()[-3000:]}")
        time.sleep(0.05)
    return daemon


def profile_summary(raw: Path, top: int = 20) -> list[str]:
    """Self and total share of samples per function, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        frames = [re.sub(r" \(.*/", " (", f) for f in stack.split(";")]
        samples += count
        own[frames[-1]] += count
        for f in set(frames):
            total[f] += count
    lines = [f"{samples} samples"]
    lines += [f"self {100 * n / samples:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += [f"total {100 * n / samples:5.1f}%  {f}" for f, n in total.most_common(top + 10)]
    return lines


def py_spy(pid: int, raw: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    """Sample ``pid`` with py-spy (in the venv) until sent SIGINT; collapsed stacks into ``raw``."""
    exe = str(Path(sys.executable).parent / "py-spy")
    cmd = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking", "--gil"]
    cmd += ["--format", "raw", "--output", str(raw)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
