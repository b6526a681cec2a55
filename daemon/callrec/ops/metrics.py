"""Prometheus metrics. Labels are closed sets (register names from the config, connection
names, reason codes): never a phone number or any free-form caller string."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

# The standard process_* series (resident memory, CPU seconds, open and maximum file
# descriptors, start time), read from /proc at each scrape: what shows a leak or a descriptor
# left open over days (docs/operations.md#staying-flat, bench/soak.py).
PROCESS = ProcessCollector(registry=REGISTRY)

BUILD_INFO = Info("callrec_build", "Version of the running daemon.", registry=REGISTRY)

CONNECTION_UP = Gauge(
    "callrec_connection_up",
    "1 while the connection is established and logged in, else 0.",
    ["connection"],  # ari | ami | database | store
    registry=REGISTRY,
)
RECONNECTS = Counter(
    "callrec_reconnects_total",
    "Connection attempts after a failure or a lost connection.",
    ["connection"],
    registry=REGISTRY,
)
PROTOCOL_ERRORS = Counter(
    "callrec_protocol_errors_total",
    "Malformed or unexpected input from Asterisk that was skipped.",
    ["source", "kind"],  # source: ari | ami; kind: a fixed code such as bad_json, oversized
    registry=REGISTRY,
)


class HotCounter(Collector):
    """A counter bumped on the event path as a plain int, read at scrape time.

    prometheus_client's ``Counter.inc`` takes a lock and checks its labels: 56 times per call on
    the ARI stream, it was about a tenth of the event path's instructions (docs/performance.md).
    Only the event loop's thread adds to it, so the int needs no lock."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.value = 0

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.value)


ARI_EVENTS = HotCounter("callrec_ari_events", "ARI events received.")
REGISTRY.register(ARI_EVENTS)
RECORDINGS_STARTED = Counter(
    "callrec_recordings_started_total",
    "MixMonitor accepted by Asterisk.",
    ["register"],
    registry=REGISTRY,
)
RECORDINGS_COMPLETED = Counter(
    "callrec_recordings_completed_total",
    "Recordings whose row was written.",
    ["register"],
    registry=REGISTRY,
)
RECORDINGS_FAILED = Counter(
    "callrec_recordings_failed_total",
    "Recordings that could not be started or finished.",
    ["register", "reason"],
    registry=REGISTRY,
)
RECORDINGS_PAUSES = Counter(
    "callrec_recording_pauses_total",
    "Pauses and resumes of recordings (card numbers); source: dialplan, api, or auto (max_pause).",
    ["register", "action", "source"],
    registry=REGISTRY,
)
RECORDINGS_ACTIVE = Gauge(
    "callrec_recordings_active",
    "Recordings in progress (MixMonitor requested, row not yet written).",
    registry=REGISTRY,
)
ANSWER_TO_MIXMONITOR = Histogram(
    "callrec_answer_to_mixmonitor_seconds",
    "From the answer event to MixMonitor accepted by Asterisk.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
ANSWER_EVENT_DELAY = Histogram(
    "callrec_answer_event_delay_seconds",
    "From Asterisk publishing the event that starts a recording (its timestamp) to callrec"
    " handling it: Asterisk's part of the audio lost at the start (event mode).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
DB_WRITE_SECONDS = Histogram(
    "callrec_db_write_seconds",
    "Time to write one recording row.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
DB_WRITE_RETRIES = Counter(
    "callrec_db_write_retries_total",
    "Row writes retried after a database error.",
    registry=REGISTRY,
)
RECORDINGS_DIR_FREE_BYTES = Gauge(
    "callrec_recordings_dir_free_bytes",
    "Free bytes on the file system of recordings_dir.",
    registry=REGISTRY,
)
OUTBOX_DEPTH = Gauge(
    "callrec_outbox_depth",
    "Finished rows kept in the local journal until PostgreSQL has them.",
    registry=REGISTRY,
)
RECORDINGS_ADOPTED = Counter(
    "callrec_recordings_adopted_total",
    "Recordings in progress taken over after a restart of the daemon.",
    registry=REGISTRY,
)
RECORDINGS_RECOVERED = Counter(
    "callrec_recordings_recovered_total",
    "Rows written from the file because the daemon missed the call's end.",
    ["register", "interrupted"],
    registry=REGISTRY,
)
STRAY_FILES = Counter(
    "callrec_stray_files_total",
    "Recordings found in recordings_dir with no journal entry or row (recording/strays.py).",
    ["outcome"],  # recovered: a recovered row is written | unclaimed: no register, left alone
    registry=REGISTRY,
)
DISK_LOW = Gauge(
    "callrec_recordings_dir_low",
    "1 while free space in recordings_dir is below [daemon] disk_low_bytes.",
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "callrec_api_requests_total",
    "Access API and web page requests, by audit action and outcome (ok, denied, not_found, ...).",
    ["action", "outcome"],  # both closed sets: route actions and audit outcomes
    registry=REGISTRY,
)
AUDIT_WRITE_FAILURES = Counter(
    "callrec_audit_write_failures_total",
    "Audit rows that could not be written; each one refused an access.",
    registry=REGISTRY,
)

# --- retention --------------------------------------------------------------------------------
RETENTION_DESTROYED = Counter(
    "callrec_retention_destroyed_total",
    "Recordings destroyed, and orphan audio files.",
    ["reason"],  # retention | erasure | orphan
    registry=REGISTRY,
)
RETENTION_DESTROYED_BYTES = Counter(
    "callrec_retention_destroyed_bytes_total",
    "Bytes of the recordings destroyed (registered size; an orphan's size on disk).",
    ["reason"],
    registry=REGISTRY,
)
RETENTION_ERRORS = Counter(
    "callrec_retention_errors_total",
    "Retention passes that failed, and files that could not be deleted (retried next pass).",
    registry=REGISTRY,
)
RETENTION_LAST_PASS_SECONDS = Gauge(
    "callrec_retention_last_pass_seconds",
    "Duration of the last retention pass.",
    registry=REGISTRY,
)
RETENTION_LAST_SUCCESS = Gauge(
    "callrec_retention_last_success_timestamp_seconds",
    "When the last retention pass finished without any error; alert when it stops moving.",
    registry=REGISTRY,
)

DISPOSALS_WAITING = Gauge(
    "callrec_disposals_waiting_for_other_nodes",
    "Destroyed recordings (row and key gone) whose file only another node can delete.",
    registry=REGISTRY,
)
DISPOSALS_WAITING_OLDEST = Gauge(
    "callrec_disposals_waiting_oldest_seconds",
    "Age of the oldest of those; grows while their node is gone (a renamed or retired host).",
    registry=REGISTRY,
)

# --- archive (docs/archive.md) ---------------------------------------------------------------
ARCHIVE_BACKLOG = Gauge(
    "callrec_archive_backlog",
    "Recordings whose WAV waits for the archive step (database or store down, a burst).",
    registry=REGISTRY,
)
ARCHIVE_OLDEST_SECONDS = Gauge(
    "callrec_archive_oldest_seconds",
    "Age of the oldest recording waiting for the archive step; 0 when none waits.",
    registry=REGISTRY,
)
ARCHIVED = Counter(
    "callrec_archived_total",
    "Recordings archived (transcoded, sealed, stored, read back, WAV deleted).",
    ["format"],
    registry=REGISTRY,
)
ARCHIVE_SECONDS = Histogram(
    "callrec_archive_seconds",
    "Wall time of one archive step, WAV to confirmed object.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
ARCHIVE_FAILURES = Counter(
    "callrec_archive_failures_total",
    "Archive attempts that failed: store or database down (retried), or a WAV that cannot be"
    " archived (kept as it is).",
    ["reason"],  # store | database | bad_audio | no_file | readback
    registry=REGISTRY,
)
ARCHIVE_CORRUPT = Counter(
    "callrec_archive_corrupt_total",
    "Archived objects that failed their check (authentication tag, size or sha256) when read.",
    ["where"],  # serve | verify | export
    registry=REGISTRY,
)

# --- the tracker's sizes (read at each scrape; docs/operations.md#staying-flat) ----------------
TRACKER_CHANNELS = Gauge(
    "callrec_tracker_channels",
    "Channels the call tracker follows now.",
    registry=REGISTRY,
)
TRACKER_CALLS = Gauge(
    "callrec_tracker_calls",
    "Calls (channels grouped by linkedid) the call tracker follows now.",
    registry=REGISTRY,
)
TRACKER_RECORDINGS = Gauge(
    "callrec_tracker_recordings",
    "Calls the tracker holds as recorded (MixMonitor asked for, recorded channel not yet gone).",
    registry=REGISTRY,
)

# --- operations -------------------------------------------------------------------------------
RETENTION_INTERVAL = Gauge(
    "callrec_retention_interval_seconds",
    "[retention] interval: seconds between two retention passes; alerts compare staleness to it.",
    registry=REGISTRY,
)


def init_series(registers: Iterable[str], retention_interval: float) -> None:
    """Create at zero the series that dashboards and alerts expect before the first call.

    A labelled series exists only once it is first touched, and Prometheus' increase() cannot see
    the step from "absent" to 1, so an idle register would show no data instead of 0 and its
    first recording would not count in a rate."""
    for register in registers:
        RECORDINGS_STARTED.labels(register=register)
        RECORDINGS_COMPLETED.labels(register=register)
    for connection in ("ari", "ami", "database", "store"):
        CONNECTION_UP.labels(connection=connection)
    for reason in ("store", "database", "bad_audio", "no_file", "readback"):
        ARCHIVE_FAILURES.labels(reason=reason)
    for where in ("serve", "verify", "export"):
        ARCHIVE_CORRUPT.labels(where=where)
    for outcome in ("recovered", "unclaimed"):
        STRAY_FILES.labels(outcome=outcome)
    RETENTION_INTERVAL.set(retention_interval)


class TrackerSizes(Protocol):
    @property
    def channel_count(self) -> int: ...
    @property
    def call_count(self) -> int: ...
    @property
    def recording_count(self) -> int: ...


def watch_tracker(tracker: TrackerSizes) -> None:
    """The tracker gauges read ``tracker`` at each scrape: nothing on the event path."""
    TRACKER_CHANNELS.set_function(lambda: tracker.channel_count)
    TRACKER_CALLS.set_function(lambda: tracker.call_count)
    TRACKER_RECORDINGS.set_function(lambda: tracker.recording_count)
