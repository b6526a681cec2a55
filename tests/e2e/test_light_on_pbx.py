"""What keeps callrec light on the PBX (docs/performance.md), on the real Asterisk 22
with the shipped dialplan/ari.conf. The CPU figures themselves come from bench/pbx_cost.py."""

from __future__ import annotations

import base64
import json
import urllib.request

import pytest
from tests.e2e.conftest import Daemon, wait_archived, wait_rows
from tests.harness.asterisk import Asterisk
from tests.harness.driver import Driver

from callrec.asterisk.ari_events import EVENT_TYPES

pytestmark = pytest.mark.e2e


def ari_get(asterisk: Asterisk, path: str) -> object:
    auth = base64.b64encode(f"callrec:{asterisk.ari_password}".encode()).decode()
    req = urllib.request.Request(f"{asterisk.ari_url}/ari{path}", headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_asterisk_sends_only_the_event_types_the_tracker_reads(
    daemon: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    # subscribeAll=true and an eventFilter work together on Asterisk 22; a read_only user's PUT
    # would be refused (403) and every event would be sent. "ready" comes at the connect, the
    # filter's PUT just after it, before the reconciliation (asterisk/ari.py, _prepare).
    daemon.wait_log('"reconciled with asterisk"')
    app = ari_get(asterisk, "/applications/callrec")
    assert isinstance(app, dict)
    assert {e["type"] for e in app["events_allowed"]} == set(EVENT_TYPES)
    driver.inbound("0300", "+358 40 123 4567", talk=2)
    (row,) = wait_rows(db_dsn, 1)
    log = daemon.log()
    assert "event filter refused" not in log and "event filter not set" not in log
    # The file's close came from inotify, not from a post-process command Asterisk would fork.
    assert wait_archived(db_dsn, row)["archived_at"] is not None
    assert "using marker files" not in log and "inotify unavailable" not in log
