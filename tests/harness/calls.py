"""Scripted calls with transfers on the test Asterisk: the same scripts give the e2e tests
their calls and the pure tracker's tests their transcripts (tests/harness/capture.py).

A script places a call with the driver, does what an agent (DTMF through the simulated
phones of tests/e2e/asterisk/callrec-devices.conf) or a PBX application (AMI) would do, and
returns what the row must then say. Talk times are part of the call being simulated (the
customer hangs up ``talk`` seconds after the answer); waiting for a channel is by polling the
Asterisk CLI for it, never by a fixed sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.harness.asterisk import Asterisk
from tests.harness.driver import Driver


@dataclass(frozen=True)
class Expected:
    talk: float
    """Seconds the customer's whole call lasts (answer to the customer's hangup)."""
    agents: tuple[str, ...]
    """The agents the row lists, in order; ``*`` is any one agent (a queue's pick)."""
    direction: str


def channels(ast: Asterisk) -> list[list[str]]:
    """``core show channels concise``: name!context!exten!prio!state!app!data!cid!...!bridge!uniqueid."""
    out = ast.cli_output("core show channels concise")
    return [line.split("!") for line in out.splitlines() if "!" in line]


def wait_channel(ast: Asterisk, prefix: str, *, bridged: bool = True, timeout: float = 20) -> str:
    """The name of the Up channel starting with ``prefix`` (in a bridge if ``bridged``)."""
    deadline = time.monotonic() + timeout
    while True:
        for c in channels(ast):
            if c[0].startswith(prefix) and c[4] == "Up" and (not bridged or c[12]):
                return c[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"no Up channel {prefix}*: {channels(ast)}")
        time.sleep(0.05)


def ami(driver: Driver, action: str, **fields: str) -> None:
    resp = driver.action(action, fields)
    if resp.get("Response") != "Success":
        raise RuntimeError(f"{action} refused: {resp.get('Message')}")


# --- inbound: the customer calls 0300, alice answers -------------------------------------------


def inbound_blind_dtmf(d: Driver, ast: Asterisk) -> Expected:
    """alice presses #1 2002: the customer goes on to bob."""
    d.inbound("0300", "+358401234567", talk=9, extra={"KEYS_alice": "#12002", "KEYS_AFTER": "2"})
    return Expected(9, ("alice", "bob"), "inbound")


def inbound_attended_dtmf(d: Driver, ast: Asterisk) -> Expected:
    """alice presses *2 2002, talks with bob, hangs up: the customer is then with bob."""
    d.inbound(
        "0300",
        "+358401234567",
        talk=10,
        extra={"KEYS_alice": "*22002", "KEYS_AFTER": "2", "HANGUP_alice": "3"},
    )
    return Expected(10, ("alice", "bob"), "inbound")


def inbound_blind_ami(d: Driver, ast: Asterisk) -> Expected:
    d.inbound("0300", "+358401234567", talk=8)
    agent = wait_channel(ast, "Local/alice@callrec-agents-")
    time.sleep(2)  # alice talks with the customer for 2 s
    ami(d, "BlindTransfer", Channel=agent, Exten="2002", Context="callrec-transfer")
    return Expected(8, ("alice", "bob"), "inbound")


def inbound_attended_ami(d: Driver, ast: Asterisk) -> Expected:
    d.inbound("0300", "+358401234567", talk=10)
    agent = wait_channel(ast, "Local/alice@callrec-agents-")
    time.sleep(2)
    ami(d, "Atxfer", Channel=agent, Exten="2002", Context="callrec-transfer")
    wait_channel(ast, "Local/bob@callrec-agents-")
    time.sleep(2)  # alice tells bob who is calling, then hangs up: the transfer completes
    ami(d, "Hangup", Channel=agent)
    return Expected(10, ("alice", "bob"), "inbound")


def inbound_redirect_ami(d: Driver, ast: Asterisk) -> Expected:
    """A PBX application moves the customer's own channel to bob (AMI Redirect)."""
    d.inbound("0300", "+358401234567", talk=8)
    wait_channel(ast, "Local/alice@callrec-agents-")
    customer = wait_channel(ast, "Local/0300@test-trunk-", bridged=True)
    time.sleep(2)
    ami(d, "Redirect", Channel=customer, Exten="2002", Context="callrec-transfer", Priority="1")
    return Expected(8, ("alice", "bob"), "inbound")


def inbound_blind_to_queue(d: Driver, ast: Asterisk) -> Expected:
    """alice transfers the customer to the queue (2000); whoever answers there is listed."""
    d.inbound("0300", "+358401234567", talk=8)
    agent = wait_channel(ast, "Local/alice@callrec-agents-")
    time.sleep(2)
    ami(d, "BlindTransfer", Channel=agent, Exten="2000", Context="callrec-transfer")
    return Expected(8, ("alice", "*"), "inbound")


def inbound_park_and_pickup(d: Driver, ast: Asterisk) -> Expected:
    """alice parks the customer (#1 700, slot 701); bob picks the call up from his phone."""
    d.inbound("0300", "+358401234567", talk=10, extra={"KEYS_alice": "#1700", "KEYS_AFTER": "2"})
    wait_parked(ast, "701")
    time.sleep(1)  # the customer waits a second in the parking lot
    d.originate("Local/701@callrec-pickup", context="test-agent-talk", callerid='"bob" <1002>')
    return Expected(10, ("alice", "bob"), "inbound")


def wait_parked(ast: Asterisk, slot: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while f" {slot} " not in f" {ast.cli_output('parking show default')} ".replace("\n", " "):
        if time.monotonic() > deadline:
            raise TimeoutError(ast.cli_output("parking show default"))
        time.sleep(0.05)


# --- outbound: bob dials a customer, who answers -----------------------------------------------


def outbound_blind_dtmf(d: Driver, ast: Asterisk) -> Expected:
    """The issue's telesales case: bob's call, blind-transferred to carol (2003)."""
    d.outbound("0401234567", agent="bob", ring=1, talk=9, extra={"KEYS_AGENT": "#12003", "KEYS_AFTER": "2"})
    return Expected(9, ("bob", "carol"), "outbound")


def outbound_attended_dtmf(d: Driver, ast: Asterisk) -> Expected:
    d.outbound(
        "0401234567",
        agent="bob",
        ring=1,
        talk=10,
        extra={"KEYS_AGENT": "*22003", "KEYS_AFTER": "2", "HANGUP_AGENT": "3"},
    )
    return Expected(10, ("bob", "carol"), "outbound")


def outbound_blind_ami(d: Driver, ast: Asterisk) -> Expected:
    d.outbound("0401234567", agent="bob", ring=1, talk=8)
    wait_channel(ast, "Local/0401234567@test-customer-phone-")
    agent = wait_channel(ast, "Local/0401234567@callrec-telesales-")
    time.sleep(2)
    ami(d, "BlindTransfer", Channel=agent, Exten="2003", Context="callrec-transfer")
    return Expected(8, ("bob", "carol"), "outbound")


def outbound_attended_ami(d: Driver, ast: Asterisk) -> Expected:
    d.outbound("0401234567", agent="bob", ring=1, talk=10)
    wait_channel(ast, "Local/0401234567@test-customer-phone-")
    agent = wait_channel(ast, "Local/0401234567@callrec-telesales-")
    time.sleep(2)
    ami(d, "Atxfer", Channel=agent, Exten="2003", Context="callrec-transfer")
    wait_channel(ast, "Local/carol@callrec-agents-")
    time.sleep(2)
    ami(d, "Hangup", Channel=agent)
    return Expected(10, ("bob", "carol"), "outbound")


def outbound_park_and_pickup(d: Driver, ast: Asterisk) -> Expected:
    """bob parks the customer he called (#1 700, slot 701); carol picks the call up."""
    d.outbound("0401234567", agent="bob", ring=1, talk=10, extra={"KEYS_AGENT": "#1700", "KEYS_AFTER": "2"})
    wait_parked(ast, "701")
    time.sleep(1)
    d.originate("Local/701@callrec-pickup", context="test-agent-talk", callerid='"carol" <1003>')
    return Expected(10, ("bob", "carol"), "outbound")


def outbound_redirect_ami(d: Driver, ast: Asterisk) -> Expected:
    """A PBX application moves the dialled customer's channel to carol (AMI Redirect)."""
    d.outbound("0401234567", agent="bob", ring=1, talk=8)
    customer = wait_channel(ast, "Local/0401234567@test-customer-phone-")
    wait_channel(ast, "Local/0401234567@callrec-telesales-")
    time.sleep(2)
    ami(d, "Redirect", Channel=customer, Exten="2003", Context="callrec-transfer", Priority="1")
    return Expected(8, ("bob", "carol"), "outbound")


SCENARIOS: dict[str, Callable[[Driver, Asterisk], Expected]] = {
    f.__name__: f
    for f in (
        inbound_blind_dtmf,
        inbound_attended_dtmf,
        inbound_blind_ami,
        inbound_attended_ami,
        inbound_redirect_ami,
        inbound_blind_to_queue,
        inbound_park_and_pickup,
        outbound_blind_dtmf,
        outbound_attended_dtmf,
        outbound_blind_ami,
        outbound_attended_ami,
        outbound_redirect_ami,
        outbound_park_and_pickup,
    )
}
