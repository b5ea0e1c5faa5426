"""contrib/: the Grafana dashboard and the Prometheus alert rules against a real daemon.

Every metric their PromQL names must exist on a real daemon's ``/metrics`` (scraped while
a job runs and after jobs with a success, a failure and handler metrics), with the labels
their selectors and groupings use; the dashboard must be a Grafana import file whose
panels all query something; promtool must parse every dashboard query, accept the rules
and pass their unit tests (contrib/prometheus/batchd-alerts.test.yml). `make promtool`
installs promtool; as root or on CI its tests fail without it, elsewhere they skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from testkit.launcher import Daemon, close_all
from tests import promql
from tests.conftest import DEFAULT_TEST_CONFIG, REPO, wait_for, wait_job

DASHBOARD = REPO / "contrib" / "grafana" / "batchd.json"
RULES = REPO / "contrib" / "prometheus" / "batchd-alerts.yml"
RULE_TESTS = REPO / "contrib" / "prometheus" / "batchd-alerts.test.yml"

# Series Prometheus makes itself: no exporter has them.
PROMETHEUS_MADE = frozenset({"up"})

# The handler metrics the daemon's test job records, as the dashboard's variables list them.
HANDLER_VARIABLES = {
    "handler_counter": ["batchd_handler_items_total"],
    "handler_gauge": ["batchd_handler_loaded"],
    "handler_histogram": ["batchd_handler_latency"],
}

# Fails the batch ["bad"]; holds the batch ["hold"] until the file `release` exists.
HANDLER = """
import os, time

class Handler:
    def __init__(self, config, metrics_client):
        self.metrics = metrics_client
        self.release = config["release"]

    def handle_batch(self, payload):
        self.metrics.increment("items", value=len(payload))
        self.metrics.gauge("loaded", value=1)
        self.metrics.histogram("latency", value=0.2)
        if payload == ["bad"]:
            raise ValueError("bad batch")
        while payload == ["hold"] and not os.path.exists(self.release):
            time.sleep(0.01)
        return payload
"""

# Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = frozenset({"instance", "job"})
# Families with no series on the test daemon (no GPU, nothing dropped): their labels
# cannot be checked against a sample.
NO_SERIES = frozenset(
    {
        "batchd_gpu_workers",
        "batchd_job_log_lines_dropped_total",
        "batchd_handler_series_dropped_total",
        "batchd_handler_metrics_invalid_total",
    }
)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions(board: dict[str, Any]) -> list[str]:
    return [
        target["expr"] for panel in dashboard_panels(board) for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


# -- the dashboard and the rules, as files -----------------------------------------------


def test_dashboard_is_a_grafana_import_file_whose_panels_all_query_prometheus() -> None:
    board = dashboard()
    assert [entry["name"] for entry in board["__inputs"]] == ["DS_PROMETHEUS"]
    assert board["__inputs"][0]["pluginId"] == "prometheus"
    assert board["uid"] == "batchd" and board["schemaVersion"] >= 36
    panels = list(dashboard_panels(board))
    queried = [panel for panel in panels if panel["type"] != "row"]
    assert len(queried) >= 20
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in queried:
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == panel["datasource"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert set(variables) == {"instance", "api", *HANDLER_VARIABLES}
    for variable in variables.values():
        # Grafana runs `query`; `definition` is what its editor shows, and what is checked.
        assert variable["query"]["query"] == variable["definition"], variable["name"]
        assert variable["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for name in HANDLER_VARIABLES:
        assert [panel["repeat"] for panel in queried if panel.get("repeat") == name] == [name]


def test_every_alert_has_for_severity_summary_and_description_and_a_unit_test() -> None:
    rules = alert_rules()
    fired = {
        case["alertname"]
        for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in group["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert {rule["alert"] for rule in rules} == fired
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert {rule["alert"] for rule in rules} >= {
        "BatchdDown",
        "BatchdBatchesFailing",
        "BatchdJobsFailed",
        "BatchdQueueNotDraining",
        "BatchdWorkersRestarting",
        "BatchdStateDiskFillingUp",
    }


# -- against a real daemon ---------------------------------------------------------------


@dataclass
class Scrape:
    """Two scrapes of one daemon: while a batch was out with a worker, and after."""

    during: str
    after: str
    state_dir: Path

    def families(self) -> Iterator[Metric]:
        for text in (self.during, self.after):
            yield from text_string_to_metric_families(text)


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    """One daemon's /metrics during and after jobs with a success, a failure and handler
    metrics: a job (a success, a failure) finishes, then another holds a batch."""
    root = tmp_path_factory.mktemp("contrib")
    project = root / "project"
    project.mkdir()
    (project / "handler.py").write_text(HANDLER)
    release = root / "release"
    (project / "batchd.toml").write_text(
        f'name = "ops"\n[handler]\npath = "handler.py"\nconfig = {{ release = "{release}" }}\n'
    )
    daemon = Daemon(
        state_dir=root / "state",
        config_path=root / "batchd.toml",
        config=DEFAULT_TEST_CONFIG,
        log_path=root / "daemon.log",
    )

    def metrics(containing: str = "") -> str | None:
        with urllib.request.urlopen(daemon.url + "/metrics", timeout=30) as response:
            text = str(response.read().decode())
        return text if containing in text else None

    try:
        daemon.start()
        client = daemon.client
        client.deploy(project)
        items = {"max_receive_count": 1, "item_list": {"items": ["a", "bad"], "batch_size": 1}}
        job = client.submit("ops", items)
        assert wait_job(client, "ops", job["job_id"])["status"] == "completed_with_failures"
        held = client.submit("ops", {"item_list": {"items": ["hold"], "batch_size": 1}})
        leased = 'batchd_queue_depth{api="ops",state="leased"} 1.0'
        during = wait_for(lambda: metrics(leased), what=leased)
        release.touch()
        assert wait_job(client, "ops", held["job_id"])["status"] == "succeeded"
        yield Scrape(during, metrics() or "", daemon.state_dir)
    finally:
        close_all([daemon])


def variable_values(board: dict[str, Any], exposed: set[str]) -> dict[str, list[str]]:
    """What each dashboard variable that lists metric names would offer, on `exposed`."""
    values = {}
    for variable in board["templating"]["list"]:
        query = promql.label_values(variable["definition"])
        assert query is not None, variable["name"]
        selector, label = query
        if label != "__name__":
            continue
        (matchers,) = promql.read(selector).name_matchers
        regex = variable["regex"].strip("/")
        found = []
        for name in sorted(exposed):
            if promql.selects(matchers, name):
                match = re.fullmatch(regex, name) if regex else None
                found.append(match[1] if match else name)
        values[variable["name"]] = found
    return values


def expand(expressions: list[str], values: dict[str, list[str]]) -> list[str]:
    """A repeated panel's query names its metric by a variable: one query per value."""
    for name, listed in values.items():
        expressions = [
            expanded
            for expr in expressions
            for expanded in (
                [re.sub(rf"\$\{{{name}\}}|\${name}\b", value, expr) for value in listed]
                if name in expr
                else [expr]
            )
        ]
    return expressions


def all_expressions() -> list[str]:
    return [*dashboard_expressions(dashboard()), *(rule["expr"] for rule in alert_rules())]


def test_every_metric_the_dashboard_and_the_alerts_use_is_on_metrics(scrape: Scrape) -> None:
    exposed = promql.series_names(scrape.families())
    board = dashboard()
    values = variable_values(board, exposed)
    assert values == HANDLER_VARIABLES
    expressions = expand(all_expressions(), values)
    used = set()
    for expr in expressions:
        read = promql.read(expr)
        used |= read.names
        for matchers in read.name_matchers:
            assert any(promql.selects(matchers, name) for name in exposed), (expr, matchers)
    for variable in board["templating"]["list"]:
        query = promql.label_values(variable["definition"])
        assert query is not None, variable["name"]
        used |= promql.read(query[0]).names
    assert used - exposed - PROMETHEUS_MADE == set()
    # The metrics each part is about are really read (the reader found them).
    assert {
        "batchd_jobs",
        "batchd_queue_depth",
        "batchd_batches_succeeded_total",
        "batchd_batches_failed_total",
        "batchd_batch_duration_seconds_bucket",
        "batchd_workers",
        "batchd_max_workers",
        "batchd_worker_restarts_total",
        "batchd_worker_oom_kills_total",
        "batchd_state_filesystem_avail_bytes",
        "batchd_state_filesystem_size_bytes",
        "batchd_handler_items_total",
        "batchd_handler_loaded",
        "batchd_handler_latency_bucket",
        "up",
    } <= used


def test_every_label_the_dashboard_and_the_alerts_use_is_on_its_metric(scrape: Scrape) -> None:
    """A selector's labels are its metric's (api on batchd's, api_name on the handlers'),
    and a by/on/without list names labels of a metric the expression reads."""
    labels: dict[str, set[str]] = {}
    for family in scrape.families():
        for sample in family.samples:
            labels.setdefault(sample.name, set(TARGET_LABELS)).update(sample.labels)
    checked = set()
    for expr in expand(all_expressions(), HANDLER_VARIABLES):
        read = promql.read(expr)
        reads = set()
        for name, matched in read.selectors:
            if name in PROMETHEUS_MADE or name in NO_SERIES:
                continue
            assert name in labels, (expr, name)
            assert matched <= labels[name], (expr, name)
            reads |= labels[name]
            checked.add(name)
        for grouped in read.groupings:
            assert grouped <= reads | {"le"} or not reads, (expr, grouped)
    assert {"batchd_queue_depth", "batchd_workers", "batchd_handler_items_total"} <= checked


def test_metrics_tell_the_state_dirs_filesystem_size_and_free_space(scrape: Scrape) -> None:
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(scrape.after)
        for sample in family.samples
    }
    stat = os.statvfs(scrape.state_dir)
    assert samples["batchd_state_filesystem_size_bytes"] == stat.f_blocks * stat.f_frsize
    # Others write to this disk meanwhile: free space agrees within 1% of its size.
    available = samples["batchd_state_filesystem_avail_bytes"]
    assert abs(available - stat.f_bavail * stat.f_frsize) < 0.01 * stat.f_blocks * stat.f_frsize
    assert 0 < available < samples["batchd_state_filesystem_size_bytes"]


# -- promtool ----------------------------------------------------------------------------


def promtool() -> str:
    """promtool's path. Skips (saying why) when it is missing, except as root or on CI,
    where it fails: there `make promtool` installs it."""
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool is missing: run `make promtool` as root (apt-get install prometheus)"
        if os.geteuid() == 0 or os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_promtool_unit_tests_fire_each_alert() -> None:
    done = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=RULE_TESTS.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """With Grafana's variables filled in as it would, every panel's and variable's query
    is a recording rule that promtool must parse."""
    board = dashboard()
    queries = expand(dashboard_expressions(board), HANDLER_VARIABLES)
    for variable in board["templating"]["list"]:
        query = promql.label_values(variable["definition"])
        assert query is not None, variable["name"]
        queries.append(query[0])
    filled = [
        re.sub(r"\$\{?(\w+)\}?", lambda m: "5m" if m[1] == "__rate_interval" else ".*", query)
        for query in queries
    ]
    rules = [{"record": f"dashboard:query{index}", "expr": q} for index, q in enumerate(filled)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout
