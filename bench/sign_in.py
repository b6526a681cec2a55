"""What a password sign-in costs (docs/web.md#signing-in): argon2id with argon2-cffi's default
parameters, the way access/passwords.py runs it.

Per line: ``hash`` and ``verify`` (one at a time: wall and CPU milliseconds, median and p95);
``burst`` (N sign-ins checked at once through passwords.py's one worker thread, as N people pressing
"Sign in" together: how long the last one waits, and the event loop's worst stall meanwhile,
measured by a 5 ms ticker: what every other request on the daemon would feel).

    .venv/bin/python bench/sign_in.py [--quick] [--rounds 50] [--burst 1 8 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))

from callrec.access import passwords

PASSWORD = "correct horse battery"


def emit(**fields: object) -> None:
    # The machine's load beside each figure: on a shared box they mean little without it.
    load = round(os.getloadavg()[0], 2)
    print(json.dumps({"bench": "sign_in", **fields, "load_avg_1m": load}), flush=True)


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def one_at_a_time(rounds: int) -> str:
    stored = ""
    for name in ("hash", "verify"):
        wall: list[float] = []
        cpu: list[float] = []
        for _ in range(rounds):
            w0, c0 = time.perf_counter(), time.process_time()
            if name == "hash":
                stored = passwords._HASHER.hash(PASSWORD)
            else:
                passwords._HASHER.verify(stored, PASSWORD)
            wall.append((time.perf_counter() - w0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        emit(
            step=name,
            rounds=rounds,
            wall_ms_median=round(statistics.median(wall), 1),
            wall_ms_p95=round(p95(wall), 1),
            cpu_ms_median=round(statistics.median(cpu), 1),
        )
    return stored


async def burst(stored: str, n: int) -> None:
    stalls: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            stalls.append((now - last - 0.005) * 1000)
            last = now

    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    await asyncio.gather(*(passwords._off_loop(passwords._matches, stored, PASSWORD) for _ in range(n)))
    last_ms = (time.perf_counter() - t0) * 1000
    done.set()
    await tick
    emit(
        step="burst",
        sign_ins=n,
        last_done_ms=round(last_ms, 1),
        loop_stall_ms_max=round(max(stalls, default=0.0), 1),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10 rounds, bursts of 1 and 8")
    p.add_argument("--full", action="store_true", help="the default run (for make bench)")
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--burst", type=int, nargs="+", default=[1, 8, 32])
    args = p.parse_args()
    rounds, bursts = (10, [1, 8]) if args.quick else (args.rounds, args.burst)
    stored = one_at_a_time(rounds)
    for n in bursts:
        asyncio.run(burst(stored, n))


if __name__ == "__main__":
    main()
