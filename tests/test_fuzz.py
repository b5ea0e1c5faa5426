"""Thousands of malformed requests to every endpoint: never a 5xx, always the error shape."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import EXAMPLE, Daemon

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)
KEYS = st.sampled_from(
    [
        "workers",
        "item_list",
        "items",
        "batch_size",
        "delimited_files",
        "file_path_lister",
        "paths",
        "s3_paths",
        "includes",
        "excludes",
        "config",
        "timeout",
        "batch_timeout",
        "max_receive_count",
        "sqs_dead_letter_queue",
        "priority",
    ]
)
# Bodies that look like submissions, so the fuzzing reaches deep into validation.
SUBMISSION_LIKE = st.recursive(
    JSON,
    lambda inner: st.dictionaries(KEYS | st.text(max_size=8), inner, max_size=6),
    max_leaves=40,
)
BODIES = st.one_of(
    SUBMISSION_LIKE.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
)
QUERY_VALUES = st.text(max_size=30)
ENDPOINTS = st.sampled_from(
    [
        ("POST", "/batch/hello"),
        ("POST", "/batch/nope"),
        ("GET", "/batch/hello"),
        ("DELETE", "/batch/hello"),
        ("GET", "/batch/hello/results"),
        ("GET", "/batch/hello/failed"),
        ("POST", "/batch/hello/retry"),
        ("GET", "/batch/hello/logs"),
        ("POST", "/apis"),
        ("GET", "/apis/hello"),
        ("DELETE", "/apis/nope"),
        ("POST", "/admin/prune"),
        ("GET", "/status"),
    ]
)
CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "application/gzip", "text/xml", None]
)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def fuzzed_daemon(tmp_path_factory: pytest.TempPathFactory) -> Daemon:
    from testkit.launcher import free_port, write_config
    from tests.conftest import DEFAULT_TEST_CONFIG

    root = tmp_path_factory.mktemp("fuzz")
    daemon = Daemon(
        state_dir=root / "state",
        config_path=write_config(root / "batchd.toml", **DEFAULT_TEST_CONFIG),
        port=free_port(),
        log_path=root / "daemon.log",
    )
    daemon.start()
    daemon.client.deploy(EXAMPLE)
    yield daemon
    daemon.stop(timeout=20)


SEEN: list[int] = []


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    endpoint=ENDPOINTS,
    body=BODIES,
    content_type=CONTENT_TYPES,
    query=st.dictionaries(
        st.sampled_from(["jobID", "dryRun", "limit", "follow", "level", "batchID", "x"]),
        QUERY_VALUES,
        max_size=4,
    ),
)
def test_malformed_requests_never_cause_a_5xx(
    fuzzed_daemon: Daemon,
    endpoint: tuple[str, str],
    body: bytes,
    content_type: str | None,
    query: dict[str, str],
) -> None:
    method, path = endpoint
    url = fuzzed_daemon.url + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = body if method in ("POST", "DELETE") else None
    request = urllib.request.Request(url, data=data, method=method)
    if content_type and data is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    SEEN.append(status)
    assert status < 500, (method, url, body[:200], raw[:500])
    if status >= 400:
        error = json.loads(raw)["error"]
        assert isinstance(error["message"], str) and error["message"]


def test_no_memory_growth_under_fuzzing(fuzzed_daemon: Daemon) -> None:
    # Runs after the fuzzing above (same module, same daemon).
    assert fuzzed_daemon.process is not None
    assert len(SEEN) >= 1000, len(SEEN)
    # Most requests are malformed; the rest (reads without a body) may succeed.
    assert sum(400 <= status < 500 for status in SEEN) > len(SEEN) / 2
    before = rss_kib(fuzzed_daemon.process.pid)
    test_malformed_requests_never_cause_a_5xx(fuzzed_daemon)
    assert rss_kib(fuzzed_daemon.process.pid) - before < 50 * 1024
