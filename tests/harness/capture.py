"""Capture the ARI events of one scripted call on the test Asterisk, as a transcript for the
pure tracker's tests (tests/unit/transcripts/*.jsonl).

    PYTHONPATH=daemon:. python -m tests.harness.capture NAME

runs the scenario NAME of ``SCENARIOS`` (tests/harness/calls.py) on a fresh Asterisk loading the
shipped dialplan/, records every event of the websocket (subscribeAll, no event filter) until
no channel is left, and writes tests/unit/transcripts/NAME.jsonl. Needs root (the chroot).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from tests.harness.asterisk import REPO, TEST_AMI_USER, Asterisk, ensure_root
from tests.harness.calls import SCENARIOS
from tests.harness.driver import Driver


async def _capture(ast: Asterisk, name: str) -> list[dict[str, object]]:
    auth = base64.b64encode(f"callrec:{ast.ari_password}".encode()).decode()
    url = f"{ast.ari_url}/ari/events?app=capture&subscribeAll=true"
    events: list[dict[str, object]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers={"Authorization": f"Basic {auth}"}) as ws,
    ):
        driver = Driver(ast.ami_port, TEST_AMI_USER, ast.ami_secret)
        scenario = asyncio.get_running_loop().run_in_executor(None, SCENARIOS[name], driver, ast)
        seen_channel = False
        while True:
            try:
                msg = await ws.receive(timeout=1.0)
            except TimeoutError:
                if (
                    seen_channel
                    and scenario.done()
                    and "0 active channels" in ast.cli_output("core show channels count")
                ):
                    break
                continue
            obj = json.loads(msg.data)
            if "channel" in obj:
                seen_channel = True
                events.append(obj)
        await scenario
        driver.close()
    return events


def main() -> None:
    name = sys.argv[1]
    if name not in SCENARIOS:
        raise SystemExit(f"no scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    ensure_root()
    ast = Asterisk(recordings_dir=Path(tempfile.mkdtemp(prefix="callrec-capture-")) / "recordings")
    ast.start()
    try:
        t0 = time.monotonic()
        events = asyncio.run(_capture(ast, name))
    finally:
        ast.destroy()
    out = REPO / "tests" / "unit" / "transcripts" / f"{name}.jsonl"
    out.write_text("".join(json.dumps(e) + "\n" for e in events))
    print(f"{out}: {len(events)} events in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
