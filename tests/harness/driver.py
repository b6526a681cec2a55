"""Places calls on the test Asterisk through AMI Originate on Local channels (real audio,
no SIP). Deliberately separate from callrec's own AMI client: the tests must not trust it."""

from __future__ import annotations

import base64
import itertools
import socket
from collections.abc import Mapping

_ids = itertools.count(1)


class Driver:
    def __init__(self, port: int, username: str, secret: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self._read_line()  # banner
        resp = self.action("Login", {"Username": username, "Secret": secret, "Events": "off"})
        if resp.get("Response") != "Success":
            raise RuntimeError(f"driver login failed: {resp}")

    def _read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def action(
        self, name: str, fields: Mapping[str, str], variables: Mapping[str, str] = {}
    ) -> dict[str, str]:
        aid = str(next(_ids))
        lines = [f"Action: {name}", f"ActionID: {aid}"]
        lines += [f"{k}: {v}" for k, v in fields.items()]
        lines += [f"Variable: {k}={v}" for k, v in variables.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while True:
            while b"\r\n\r\n" not in self.buf:
                self.buf += self.sock.recv(65536)
            frame, self.buf = self.buf.split(b"\r\n\r\n", 1)
            msg = dict(
                line.split(": ", 1) for line in frame.decode(errors="replace").split("\r\n") if ": " in line
            )
            if msg.get("ActionID") == aid:
                return msg

    def originate(
        self,
        channel: str,
        *,
        context: str = "",
        exten: str = "s",
        application: str = "",
        data: str = "",
        callerid: str = "",
        variables: Mapping[str, str] = {},
    ) -> None:
        fields = {"Channel": channel, "Async": "true"}
        if context:
            fields.update(Context=context, Exten=exten, Priority="1")
        else:
            fields.update(Application=application, Data=data)
        if callerid:
            fields["CallerID"] = callerid
        resp = self.action("Originate", fields, variables)
        if resp.get("Response") != "Success":
            raise RuntimeError(f"originate refused: {resp.get('Message')}")

    def inbound(
        self, service: str, number: str | None, *, talk: int = 4, extra: Mapping[str, str] = {}
    ) -> None:
        """A customer calling the service number from ``number``, presented byte for byte.
        ``extra``: more variables, inherited by every channel of the call (the agents' keys)."""
        variables = {"__TALK": str(talk), **{f"__{k}": v for k, v in extra.items()}}
        if number == "9" * 1024:
            variables["__LONGCID"] = "yes"
        elif number:
            variables["__RAWCID"] = base64.b64encode(number.encode()).decode()
        self.originate(
            f"Local/{service}@test-trunk",
            context="test-customer-talk",
            callerid='"Customer" <>',
            variables=variables,
        )

    def outbound(
        self,
        number: str,
        *,
        agent: str = "bob",
        ring: int = 2,
        talk: int = 4,
        extra: Mapping[str, str] = {},
    ) -> None:
        """An agent dialling a customer through the telesales context."""
        self.originate(
            f"Local/{number}@callrec-telesales",
            context="test-agent-talk",
            callerid=f'"{agent}" <1001>',
            variables={"__RING": str(ring), "__TALK": str(talk), **{f"__{k}": v for k, v in extra.items()}},
        )

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()
