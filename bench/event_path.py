"""Instructions per call on the event path, counted by valgrind (callgrind): deterministic on
a machine shared with other work, where wall-clock figures are not.

The path is the daemon's own code for one inbound call of the sample dialplan: the 56 raw ARI
messages of ``tests/unit/transcripts/inbound.jsonl`` (ids made unique per call, as
bench/throughput.py sends them) through ``AriClient._deliver`` (the raw-byte skip, orjson,
the event counter), ``parse_event`` and ``CallTracker.handle``, up to the StartRecording and
Finish commands (not executed: no websocket, event loop, journal or AMI), with a number HMAC
key as installed daemons have. Each count is two
runs under callgrind with the same setup, one delivering N calls and one delivering none; the
difference over N is one call's instructions.

    .venv/bin/python bench/event_path.py [--quick] [--calls N]

Prints one JSON line. Needs valgrind (Debian package ``valgrind``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, say

PYTHONHASHSEED = "0"  # the same dict layouts in both runs


def replay(calls: int, deliver: bool) -> int:
    """The body, run under callgrind: returns the number of commands (a sanity check)."""
    from throughput import IDS, Calls

    from callrec.asterisk.ari import AriClient, AriSettings
    from callrec.asterisk.ari_events import EVENT_TYPES, irrelevant_raw, parse_event
    from callrec.config import Register, Retention
    from callrec.recording.tracker import CallTracker

    template = Calls()

    def raw(text: str, k: int) -> list[bytes]:
        for i in range(len(IDS)):
            text = text.replace(f"@ID{i}@", f"2000000000.{4 * k + i}")
        text = text.replace("@NAME0@", f"callrec-inbound-{k:08x}").replace(
            "@NAME1@", f"callrec-agents-{k:08x}"
        )
        return [e.encode() for e in text.split("\n")]

    streams = [raw(template._a, k) + raw(template._b, k) for k in range(calls)]
    register = Register("customer-service", "inbound", Retention(1, "month"))
    # With a number HMAC key, as every installed daemon has one (the package's postinst makes it).
    tracker = CallTracker({register.name: register}, hmac_key=b"bench-number-hmac-key-32-bytes!!")
    settings = AriSettings(
        "http://127.0.0.1:1", "u", "p", "callrec", event_types=EVENT_TYPES, skip_raw=irrelevant_raw
    )
    client = AriClient(settings)
    out: list[object] = []

    def on_event(obj: dict[str, object]) -> None:  # App.on_event without the recorder
        ev = parse_event(obj)
        if ev is not None:
            out.extend(tracker.handle(ev, 1.0))

    for stream in streams if deliver else []:
        for data in stream:
            client._deliver(data, on_event)
    return len(out)


def counted(calls: int, deliver: bool, work: Path) -> int:
    out = work / f"callgrind-{int(deliver)}.out"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__]
    cmd += ["--inner", str(calls)] + (["--deliver"] if deliver else [])
    env = dict(os.environ, PYTHONHASHSEED=PYTHONHASHSEED)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    m = re.search(r"Collected : (\d+)", res.stderr)
    if m is None:
        raise RuntimeError(f"no callgrind total:\n{res.stderr[-2000:]}")
    return int(m.group(1))


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="100 calls instead of 300")
    p.add_argument("--calls", type=int, default=None)
    p.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    p.add_argument("--deliver", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    for entry in (str(REPO / "daemon"), str(REPO), str(REPO / "bench")):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    if args.inner is not None:
        replay(args.inner, args.deliver)
        return 0
    if shutil.which("valgrind") is None:
        say("valgrind not found: apt-get install valgrind")
        return 1
    calls = args.calls or (100 if args.quick else 300)
    with tempfile.TemporaryDirectory(prefix="callrec-bench-event-path-") as tmp:
        say(f"callgrind: {calls} calls delivered, then the same setup with none")
        delivered = counted(calls, True, Path(tmp))
        setup = counted(calls, False, Path(tmp))
    line = {
        "bench": "event_path",
        "calls": calls,
        "events_per_call": 56,
        "instructions_per_call": (delivered - setup) // calls,
        "instructions_delivered": delivered,
        "instructions_setup": setup,
        "quick": args.quick,
    }
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
