"""monitoring/: the alert rules and the Grafana dashboard match the metrics the daemon exports.

An alert on a misspelt metric never fires and a panel on one stays empty, and neither says so;
these tests are what notices. promtool (Debian package ``prometheus``) checks the PromQL itself.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase

from callrec.ops import metrics

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
RULES = MONITORING / "callrec.rules.yml"
RULE_TESTS = MONITORING / "callrec.rules.test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"

# Labels Prometheus adds to every scraped series, and its own per-target metric.
TARGET_LABELS = {"instance", "job"}
PROMETHEUS_SERIES = {"up"}
_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_CALLREC_NAME = re.compile(r"\bcallrec_[a-z0-9_]+\b")


def declared_series() -> dict[str, set[str]]:
    """Series name -> label names, for every metric in callrec.metrics, as Prometheus stores them."""
    series: dict[str, set[str]] = {}
    for obj in vars(metrics).values():
        if isinstance(obj, metrics.HotCounter):
            series[obj.name + "_total"] = set()
        if isinstance(obj, MetricWrapperBase):
            # prometheus-client keeps these private; its public describe() drops the label names.
            kind, name, labels = obj._type, obj._name, set(obj._labelnames)
            if kind == "info":
                series[f"{name}_info"] = labels | {"version"}
                continue
            for suffix in _SUFFIXES[kind]:
                series[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: apt-get install prometheus (tests/harness/apt-deps.sh does)")
    return path


def rule_exprs(text: str) -> Iterator[tuple[str, str]]:
    """(alert, expr) of a rules file: ``expr: ...`` on one line or as a ``|`` block. The format
    is ours and simple; a YAML library would be a dependency for this one test."""
    alert, lines = "", text.splitlines()
    for i, line in enumerate(lines):
        if m := re.match(r"\s*- alert:\s*(\S+)", line):
            alert = m.group(1)
        m = re.match(r"(\s*)expr:\s*(.*)$", line)
        if not m:
            continue
        if m.group(2) != "|":
            yield alert, m.group(2)
            continue
        indent, block = len(m.group(1)), []
        for follow in lines[i + 1 :]:
            if follow.strip() and len(follow) - len(follow.lstrip()) <= indent:
                break
            block.append(follow.strip())
        yield alert, " ".join(b for b in block if b)


def dashboard_exprs(dashboard: dict[str, object]) -> Iterator[tuple[str, str]]:
    def panels(items: object) -> Iterator[dict[str, object]]:
        for panel in items if isinstance(items, list) else []:
            yield panel
            yield from panels(panel.get("panels"))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):  # type: ignore[attr-defined]
            yield str(panel["title"]), target["expr"]
    for var in dashboard["templating"]["list"]:  # type: ignore[index]
        if var["type"] == "query":
            yield f"variable {var['name']}", var["definition"]


def unknown_references(expr: str, series: dict[str, set[str]]) -> list[str]:
    problems = []
    for name in _CALLREC_NAME.findall(expr):
        if name not in series:
            problems.append(f"unknown metric {name}")
    for name, matchers in _SELECTOR.findall(expr):
        known = series.get(name, set()) if name not in PROMETHEUS_SERIES else set()
        for label in _MATCHER.findall(matchers):
            if label not in known | TARGET_LABELS:
                problems.append(f"{name} has no label {label}")
    return problems


def test_the_reference_check_catches_a_misspelt_metric_and_label() -> None:
    series = declared_series()
    assert unknown_references('callrec_connection_up{connection="ami"} == 0', series) == []
    assert unknown_references("callrec_conection_up == 0", series) == ["unknown metric callrec_conection_up"]
    assert unknown_references('callrec_connection_up{conection="ami"}', series) == [
        "callrec_connection_up has no label conection"
    ]
    assert unknown_references("rate(callrec_reconnects[5m])", series) == ["unknown metric callrec_reconnects"]


def test_rules_pass_promtool_check() -> None:
    res = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_rules_unit_tests_pass() -> None:
    # The tests cover the connection, failure, retention and outbox alerts, including the first
    # failure of a kind, which a plain increase() would miss.
    res = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name], cwd=MONITORING, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_rules_reference_only_exported_metrics() -> None:
    series = declared_series()
    exprs = list(rule_exprs(RULES.read_text()))
    alerts = {alert for alert, _ in exprs}
    for needed in (
        "CallrecConnectionDown",
        "CallrecRecordingsFailing",
        "CallrecRetentionStalled",
        "CallrecRecordingsDiskLow",
        "CallrecOutboxGrowing",
    ):
        assert needed in alerts
    for alert, expr in exprs:
        assert unknown_references(expr, series) == [], f"{alert}: {expr}"


def test_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]
        if panel["type"] != "row":
            assert refs, f"{panel['title']}: a panel without a query"


def test_dashboard_queries_reference_only_exported_metrics() -> None:
    series = declared_series()
    for where, expr in dashboard_exprs(json.loads(DASHBOARD.read_text())):
        assert unknown_references(expr, series) == [], f"{where}: {expr}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses PromQL only inside rules, so each panel query becomes a recording rule,
    # with Grafana's variables replaced by what Grafana would send.
    exprs = [
        e.replace("$__rate_interval", "5m").replace("$instance", ".*")
        for _, e in dashboard_exprs(json.loads(DASHBOARD.read_text()))
        if not e.startswith("label_values(")
    ]
    rules = [{"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
    res = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{len(exprs)} rules found" in res.stdout


def test_init_series_shows_idle_registers_at_zero() -> None:
    # A register nobody has called yet is 0 on the dashboard, not "no data", and its first
    # recording counts in rate() and increase().
    metrics.init_series(["idle-register"], retention_interval=600.0)
    text = generate_latest(metrics.REGISTRY).decode()
    for name in ("callrec_recordings_started_total", "callrec_recordings_completed_total"):
        assert f'{name}{{register="idle-register"}} 0.0' in text
    assert "callrec_retention_interval_seconds 600.0" in text


def test_process_and_tracker_sizes_are_exported() -> None:
    # Memory, CPU and descriptors of the daemon itself, and the tracker's sizes read at the
    # scrape: what shows a leak over days (docs/operations.md#staying-flat).
    class Sizes:
        channel_count, call_count, recording_count = 7, 3, 2

    metrics.watch_tracker(Sizes())
    text = generate_latest(metrics.REGISTRY).decode()
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"):
        assert re.search(rf"^{name} [0-9.e+]+$", text, re.M), name
    assert "callrec_tracker_channels 7.0" in text
    assert "callrec_tracker_calls 3.0" in text
    assert "callrec_tracker_recordings 2.0" in text


def test_ari_events_are_counted_without_a_lock_and_exported_as_a_counter() -> None:
    # The event path bumps a plain int (metrics.HotCounter); the scrape reads it.
    from callrec.asterisk.ari import AriClient, AriSettings
    from callrec.asterisk.ari_events import irrelevant_raw

    before = metrics.REGISTRY.get_sample_value("callrec_ari_events_total") or 0.0
    client = AriClient(AriSettings("http://127.0.0.1:1", "u", "p", "callrec", skip_raw=irrelevant_raw))
    skipped = b'{"variable":"DIALSTATUS","value":"ANSWER","type":"ChannelVarset"}'
    for data in (b'{"type":"StasisStart"}', skipped, b"not json"):
        client._deliver(data, lambda event: None)
    assert metrics.REGISTRY.get_sample_value("callrec_ari_events_total") == before + 2
    text = generate_latest(metrics.REGISTRY).decode()
    assert "# TYPE callrec_ari_events_total counter" in text
