"""What the daemon's building blocks cost on this machine, in CPU per operation.

callrec's CPU per call at a low rate is mostly wakeups: each AGI command, REST request, AMI
action, journal write (a worker-thread hop) and PostgreSQL statement wakes the event loop at
least once. How much a wakeup costs depends on the machine far more than on the code (a VM
pays for every context switch), so the per-call figures of pbx_cost.py and throughput.py are
read against these (docs/performance.md#what-a-wakeup-costs-here):

* ``socket_round_trip_us``: one byte written on a socketpair to a blocking echo process and
  read back through asyncio streams (the shape of an AGI command or an AMI action);
* ``thread_hop_us``: ``run_in_executor`` of a no-op (the shape of a journal write or a file hash);
* ``loop_turn_us``: ``await asyncio.sleep(0)`` (one pass of the event loop, nothing to wait for).

CPU of this process only (``time.process_time``: the echo process is not counted), medians of
``--rounds`` alternating rounds of ``--ops`` operations each. Prints one JSON line, then a second
one, ``gc_pause``: how long the cyclic collector's full collection holds the event loop with the
daemon's modules loaded (``full_collection_ms``), and the same once what exists is frozen
(``frozen_ms``, what ``callrec run`` does before READY: docs/performance.md#garbage-collection),
alternated, medians of ``--rounds``.

    .venv/bin/python bench/primitives.py [--quick] [--rounds 5] [--ops 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from _common import say


def _echo(sock: socket.socket) -> None:
    while data := sock.recv(64):
        sock.sendall(data)
    os._exit(0)


async def _measure(op: Callable[[], Awaitable[object]], ops: int) -> float:
    t0 = time.process_time()
    for _ in range(ops):
        await op()
    return (time.process_time() - t0) / ops * 1e6


async def run(rounds: int, ops: int) -> dict[str, object]:
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        _echo(theirs)
    theirs.close()
    reader, writer = await asyncio.open_connection(sock=ours)
    loop = asyncio.get_running_loop()

    async def round_trip() -> None:
        writer.write(b"x")
        await reader.readexactly(1)

    cases: dict[str, Callable[[], Awaitable[object]]] = {
        "socket_round_trip_us": round_trip,
        "thread_hop_us": lambda: loop.run_in_executor(None, int),
        "loop_turn_us": lambda: asyncio.sleep(0),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for r in range(rounds):
            for name, op in cases.items():  # alternated within each round
                samples[name].append(await _measure(op, ops))
            say(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in samples.items()))
    finally:
        writer.close()
        await writer.wait_closed()  # the echo process sees the end and exits
        await asyncio.to_thread(os.waitpid, pid, 0)
    result: dict[str, object] = {"bench": "primitives", "rounds": rounds, "ops": ops}
    result.update({name: round(statistics.median(v), 1) for name, v in samples.items()})
    result["spread"] = {name: [round(min(v), 1), round(max(v), 1)] for name, v in samples.items()}
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return result


def gc_pause(rounds: int) -> dict[str, object]:
    # Everything the daemon loads: aiohttp, asyncpg, PyAV, cryptography, ...
    import callrec.app
    import callrec.cli  # noqa: F401

    def pause() -> float:
        t0 = time.perf_counter()
        gc.collect()
        return (time.perf_counter() - t0) * 1000

    gc.collect()
    full: list[float] = []
    frozen: list[float] = []
    objects = len(gc.get_objects())
    for _ in range(rounds):
        full.append(pause())
        gc.freeze()
        frozen.append(pause())
        gc.unfreeze()
    return {
        "bench": "gc_pause",
        "rounds": rounds,
        "objects": objects,
        "full_collection_ms": round(statistics.median(full), 2),
        "frozen_ms": round(statistics.median(frozen), 3),
        "spread": {"full": [round(min(full), 2), round(max(full), 2)]},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="fewer operations (make bench)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--ops", type=int, default=None, help="operations per case per round (default 5000)")
    args = p.parse_args()
    ops = args.ops or (1000 if args.quick else 5000)
    print(json.dumps(asyncio.run(run(args.rounds, ops))), flush=True)
    print(json.dumps(gc_pause(args.rounds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
