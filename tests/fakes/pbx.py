"""Plays Asterisk on the wire-level fakes: call lifecycles as the ARI events Asterisk 22 sends
(shapes taken from tests/unit/transcripts), and a MixMonitor that writes a file and, once
"closed", the marker its post-process command would leave.

For what a real Asterisk cannot do on demand: load, malformed input, precisely timed faults.
"""

from __future__ import annotations

import itertools
import shlex
import struct
from pathlib import Path
from typing import Any

from tests.fakes.ami_server import FakeAmi, Reply
from tests.fakes.ari_server import FakeAri
from tests.harness.asterisk import free_port

_WAV_HEADER = (
    b"RIFF"
    + struct.pack("<I", 36 + 1600)
    + b"WAVEfmt "
    + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    + b"data"
    + struct.pack("<I", 1600)
)


def daemon_config(ari: FakeAri, ami: FakeAmi, work: Path, dsn: str, *, file_wait_timeout: float = 10) -> str:
    """callrec.toml for a daemon on the fakes: one inbound register, no API, state under ``work``."""
    return f"""
[asterisk]
ari_url = "{ari.url}"
ari_username = "callrec"
ari_password = "p"
ami_port = {ami.port}
ami_username = "callrec"
ami_secret = "s"
recordings_dir = "{work / "recordings"}"
[database]
dsn = "{dsn}"
[metrics]
listen = "127.0.0.1:{free_port()}"
[api]
enabled = false
[daemon]
state_dir = "{work / "state"}"
file_wait_timeout = {file_wait_timeout}
[storage]
path = "{work / "archive"}"
[registers.customer-service]
direction = "inbound"
retention = "1 month"
"""


def channel(cid: str, name: str, state: str, linkedid: str, number: str = "", **cvars: str) -> dict[str, Any]:
    return {
        "id": cid,
        "name": name,
        "state": state,
        "caller": {"name": "", "number": number},
        "connected": {"name": "", "number": ""},
        "accountcode": "",
        "dialplan": {"context": "callrec-inbound", "exten": "0300", "priority": 1},
        "creationtime": "2026-11-22T18:00:00.000+0000",
        "language": "en",
        "channelvars": {"CHANNEL(linkedid)": linkedid, **cvars},
    }


class FakePbx:
    """Owns the MixMonitor handler of a FakeAmi; builds event streams for calls."""

    def __init__(self, ami: FakeAmi) -> None:
        self.mixmonitors: list[str] = []
        self._ids = itertools.count(1)
        ami.on("MixMonitor", self._mixmonitor)

    def _mixmonitor(self, action: dict[str, str]) -> Reply:
        path = Path(action["File"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_WAV_HEADER + b"\x10\x00" * 800)
        # The post-process command is "touch <marker>": what Asterisk runs once the file is closed.
        argv = shlex.split(action.get("Command", ""))
        if argv[:1] == ["touch"]:
            Path(argv[1]).touch()
        self.mixmonitors.append(action["Channel"])
        return {"Response": "Success"}

    def inbound_call(
        self, number: str = "+358401234567", register: str = "customer-service"
    ) -> list[dict[str, Any]]:
        """One answered inbound call with an agent leg, start to end."""
        n = next(self._ids)
        lid = f"1795000000.{n}"
        cust = (f"c{n}", f"PJSIP/trunk-{n:08x}", lid, number)
        agent = (f"a{n}", f"PJSIP/alice-{n:08x}", lid, "0300")

        def ev(kind: str, ch: tuple[str, str, str, str], state: str, **extra: Any) -> dict[str, Any]:
            cvars = {"CALLREC_REGISTER": register} if "register" in extra.pop("vars", ()) else {}
            return {
                "type": kind,
                "application": "callrec",
                "timestamp": "2026-11-22T18:00:00.000+0000",
                "channel": channel(ch[0], ch[1], state, ch[2], ch[3], **cvars),
                **extra,
            }

        return [
            ev("ChannelCreated", cust, "Ring"),
            ev("ChannelStateChange", cust, "Up"),
            ev(
                "ChannelVarset", cust, "Up", variable="__CALLREC_REGISTER", value=register, vars=("register",)
            ),
            ev(
                "ChannelVarset",
                cust,
                "Up",
                variable="CALLREC_SERVICE_NUMBER",
                value="0300",
                vars=("register",),
            ),
            ev("ChannelCreated", agent, "Down"),
            ev(
                "ChannelVarset",
                agent,
                "Down",
                variable="__CALLREC_REGISTER",
                value=register,
                vars=("register",),
            ),
            ev("ChannelVarset", agent, "Ring", variable="CALLREC_AGENT", value="alice", vars=("register",)),
            ev("ChannelStateChange", agent, "Up", vars=("register",)),
            ev("ChannelEnteredBridge", agent, "Up", vars=("register",)),
            ev("ChannelEnteredBridge", cust, "Up", vars=("register",)),
            ev("ChannelHangupRequest", cust, "Up", vars=("register",)),
            ev("ChannelHangupRequest", agent, "Up", vars=("register",)),
            ev("ChannelDestroyed", cust, "Up", vars=("register",)),
            ev("ChannelDestroyed", agent, "Up", vars=("register",)),
        ]
