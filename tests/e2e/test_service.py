"""Running it like a service: /metrics and the JSON log of a real call on the real Asterisk.

Operators watch callrec through Prometheus and the journal only, so both are checked the way
an operator sees them: the scraped text and the log lines, during the call and after it.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from tests.e2e.conftest import Daemon, wait_no_channels, wait_rows
from tests.harness.asterisk import Asterisk
from tests.harness.driver import Driver

from callrec import __version__
from callrec.ops import metrics
from callrec.privacy import PHONE_SHAPED

pytestmark = pytest.mark.e2e

CALLER = "+358 40 765 4321"
CALLER_DIGITS = "358407654321"

# Every metric metrics.py declares, named as a scrape names it (an Info gains _info): rendered
# from this process's registry, where labelled metrics have no samples but still HELP and TYPE.
DECLARED = {f.name for f in text_string_to_metric_families(generate_latest(metrics.REGISTRY).decode())}


class Scrape:
    """One GET /metrics, parsed."""

    def __init__(self, daemon: Daemon) -> None:
        url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            self.text = resp.read().decode()
        self.families = {f.name: f for f in text_string_to_metric_families(self.text)}

    def samples(self) -> Iterator[Sample]:
        for family in self.families.values():
            yield from family.samples

    def value(self, sample_name: str, **labels: str) -> float:
        found = [s.value for s in self.samples() if s.name == sample_name and s.labels == labels]
        assert len(found) == 1, f"{sample_name}{labels}: {len(found)} samples in\n{self.text}"
        return found[0]


def test_metrics_during_and_after_a_call(
    daemon: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    driver.inbound("0300", CALLER, talk=4)
    daemon.wait_log('"recording started"')
    during = Scrape(daemon)
    assert during.value("callrec_recordings_active") == 1
    assert during.value("callrec_recordings_started_total", register="customer-service") == 1

    (row,) = wait_rows(db_dsn, 1)
    wait_no_channels(asterisk)
    daemon.wait_log('"recording stored"')
    after = Scrape(daemon)

    # Every declared metric is exposed (a labelled one shows its HELP and TYPE before it has samples).
    assert set(after.families) >= DECLARED, DECLARED - set(after.families)

    reg = {"register": "customer-service"}
    assert after.value("callrec_recordings_started_total", **reg) == 1
    assert after.value("callrec_recordings_completed_total", **reg) == 1
    assert after.value("callrec_recordings_active") == 0
    assert not [s for s in after.samples() if s.name == "callrec_recordings_failed_total" and s.value]
    for connection in ("ari", "ami", "database"):
        assert after.value("callrec_connection_up", connection=connection) == 1
    assert after.value("callrec_recordings_dir_free_bytes") > 0
    assert after.value("callrec_recordings_dir_low") == 0
    assert after.value("callrec_outbox_depth") == 0
    assert after.value("callrec_build_info", version=__version__) == 1
    assert after.value("callrec_ari_events_total") > 0

    # One answer -> MixMonitor accepted, one row written; both plausible durations.
    assert after.value("callrec_answer_to_mixmonitor_seconds_count") == 1
    assert 0 < after.value("callrec_answer_to_mixmonitor_seconds_sum") < 5
    assert after.value("callrec_db_write_seconds_count") == 1
    assert 0 < after.value("callrec_db_write_seconds_sum") < 5
    assert after.value("callrec_answer_to_mixmonitor_seconds_bucket", le="+Inf") == 1
    # Asterisk's own part of it: from the answer event's timestamp to callrec (same host clock).
    assert after.value("callrec_answer_event_delay_seconds_count") == 1
    assert 0 <= after.value("callrec_answer_event_delay_seconds_sum") < 5

    # Labels are closed sets: nothing phone-shaped, and not the caller's number in any form.
    for sample in after.samples():
        for key, value in sample.labels.items():
            assert not PHONE_SHAPED.search(value), f"{sample.name}{{{key}={value!r}}}"
    assert CALLER_DIGITS not in after.text.replace(" ", "")
    assert row["register_name"] == "customer-service"


def test_every_log_line_of_the_recording_path_names_call_register_and_event(
    daemon: Daemon, driver: Driver, asterisk: Asterisk, db_dsn: str
) -> None:
    driver.inbound("0300", CALLER, talk=2)
    (row,) = wait_rows(db_dsn, 1)
    wait_no_channels(asterisk)
    daemon.wait_log('"recording stored"')

    records = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    assert len(records) == len(daemon.log().splitlines()), "every line of the log is one JSON object"
    call_id, recording_id = str(row["call_id"]), str(row["id"])
    about_call = [r for r in records if r.get("call_id") == call_id or r.get("recording_id") == recording_id]
    for record in about_call:
        assert record.get("event"), record
        assert record.get("call_id") == call_id, record
        assert record.get("register") == "customer-service", record
        assert record.get("recording_id") == recording_id, record
    events = [r["event"] for r in about_call]
    for expected in ("recording started", "recording finished", "recording stored"):
        assert expected in events, events
    assert CALLER_DIGITS not in daemon.log().replace(" ", "")


def test_idle_registers_and_the_retention_interval_are_exported(daemon: Daemon) -> None:
    # Needs App.startup to call metrics.init_series(settings.registers, settings.retention_interval):
    # an idle register is 0 rather than "no data", and CallrecRetentionStalled compares against
    # the interval (monitoring/callrec.rules.yml).
    scrape = Scrape(daemon)
    for register in ("customer-service", "telesales"):
        assert scrape.value("callrec_recordings_started_total", register=register) == 0
        assert scrape.value("callrec_recordings_completed_total", register=register) == 0
    assert scrape.value("callrec_retention_interval_seconds") == 600  # the default, 10 minutes
