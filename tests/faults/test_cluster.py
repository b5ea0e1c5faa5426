"""Scenario 14: three daemons on one PostgreSQL, one of them failing (tests/faults/cluster.py
runs them, tests/faults/cluster_checks.py holds the checks).

Every node runs at most 2 workers and the job asks for 6, so the work spreads over all three.
node_timeout is 3 s; lease_timeout is 30 s, longer than any of these waits, so a recovery
within it is the node sweep's doing, not a lease running out. `make test` runs them all at
a small size (so CI runs three daemons through every fault); `make faults` at full size.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import pg
from tests.conftest import wait_for
from tests.faults.cluster import (
    NODE_NAMES,
    Cluster,
    running_cluster,
    write_project,
)
from tests.faults.cluster_checks import (
    API,
    HEARTBEAT,
    LEASE_TIMEOUT,
    NODE_TIMEOUT,
    SETTINGS,
    StartCluster,
    check_exact,
    check_hooks_once,
    check_no_worker_channel_failed,
    check_rejoined,
    check_unchanged,
    job,
    late_outcomes_refused,
    recovery,
    thaw_and_rejoin,
    wait_ended,
    while_running,
)
from tests.faults.conftest import size
from tests.faults.netns import NetNamespace


@pytest.fixture
def start_cluster(tmp_path: Path) -> Iterator[StartCluster]:
    """start(dsns, prefixes=...): one node per DSN, the project deployed on the first;
    every node ended at teardown (ask for the database's fixture first: it must outlive
    them)."""
    with contextlib.ExitStack() as stack:

        def start(dsns: list[str], **options: Any) -> Cluster:
            project = write_project(tmp_path, API)
            return stack.enter_context(
                running_cluster(tmp_path, dsns, project, API, **options, **SETTINGS)
            )

        yield start


@pytest.fixture
def schema(postgres_cluster: pg.Cluster) -> Iterator[str]:
    with postgres_cluster.fresh_schema() as dsn:
        yield dsn


@pytest.fixture
def own_postgres() -> Iterator[pg.Cluster]:
    """A PostgreSQL cluster of the test's own, to restart or to reconfigure."""
    with pg.cluster() as cluster:
        yield cluster


def test_kill9_of_one_node(
    schema: str, start_cluster: StartCluster, figures: dict[str, Any]
) -> None:
    """14a. Cluster of 3 on one PostgreSQL: kill -9 of one node mid-job
    The other two sweep it after node_timeout and finish its batches: the job succeeds with
    one result per batch (0 lost), 1 to max_receive_count calls per batch, on_job_complete
    once, results from more than one node; recovery well inside lease_timeout.
    """
    total = size(60, 600)
    cluster = start_cluster([schema] * 3)
    started = time.monotonic()
    job_id = cluster.submit(job(total), via="node-b")
    cluster.wait_done_by("node-c", size(3, 20), job_id)
    # Stopped first, so that it is caught running a batch; killed at once.
    killed, running = while_running(
        cluster, "node-c", lambda: cluster.freeze("node-c"), lambda: cluster.thaw("node-c")
    )
    cluster.kill("node-c")
    final = wait_ended(cluster, job_id, figures, ["node-a", "node-b"], size(30, 120))
    figures.update(
        cut_off_batches=len(running),
        recovery_s=recovery(cluster, "node-c", running, killed),
        job_s=round(time.monotonic() - started, 1),
    )
    check_exact(cluster, job_id, final, total, ["node-a", "node-b"], figures)
    results = cluster.results(job_id)
    assert all(results[key]["node"] != "node-c" for key in running), running
    assert NODE_TIMEOUT - HEARTBEAT <= figures["recovery_s"] < LEASE_TIMEOUT
    check_hooks_once(cluster)


def test_sigstop_past_node_timeout(
    schema: str, start_cluster: StartCluster, figures: dict[str, Any]
) -> None:
    """14b. Cluster of 3: SIGSTOP of one node's daemon past node_timeout, then SIGCONT
    The others sweep the silent node and finish its batches (0 lost, exact counts, 1 to
    max_receive_count calls per batch, on_job_complete once); the outcomes its workers
    finished meanwhile are refused after SIGCONT (the kept result of each is another
    node's, and nothing changes); it rejoins and runs part of the next job.
    """
    total = size(60, 600)
    cluster = start_cluster([schema] * 3)
    started = time.monotonic()
    job_id = cluster.submit(job(total), via="node-a")
    cluster.wait_done_by("node-b", size(3, 20), job_id)
    frozen, running = while_running(
        cluster, "node-b", lambda: cluster.freeze("node-b"), lambda: cluster.thaw("node-b")
    )
    final = wait_ended(cluster, job_id, figures, ["node-a", "node-c"], size(30, 120))
    figures["recovery_s"] = recovery(cluster, "node-b", running, frozen)
    check_exact(cluster, job_id, final, total, ["node-a", "node-c"], figures)
    assert NODE_TIMEOUT - HEARTBEAT <= figures["recovery_s"] < LEASE_TIMEOUT
    late, before = late_outcomes_refused(cluster, job_id, "node-b", frozen, running)
    figures["late_outcomes_refused"] = len(late)
    # Its workers ran on while it was stopped: what they were running came back late.
    assert running <= late, (running, late)

    figures["stopped_s"] = round(time.time() - frozen, 1)
    thaw_and_rejoin(cluster, "node-b", job_id, final, before, figures)
    figures["job_s"] = round(time.monotonic() - started, 1)
    check_hooks_once(cluster)


def test_sigstop_inside_a_transaction(
    schema: str, start_cluster: StartCluster, figures: dict[str, Any]
) -> None:
    """14e. Cluster of 3: SIGSTOP of a node inside a transaction holding a jobs row lock
    Stopped past node_timeout, then SIGCONT. The others commit again within 5 s
    (docs/several-machines.md: the server ends the stopped session's transaction, and its
    lock with it); they sweep it and finish the job (0 lost, exact counts, 1 to
    max_receive_count calls per batch, on_job_complete once); after SIGCONT nothing it
    sends changes the job, and it rejoins.
    """
    total = size(60, 600)
    cluster = start_cluster([schema] * 3)
    started = time.monotonic()
    job_id = cluster.submit(job(total), via="node-a")
    cluster.wait_done_by("node-b", size(3, 20), job_id)
    frozen = cluster.freeze_in_transaction("node-b")
    running = cluster.side.running_at("node-b", frozen)
    # Held up: until the others' successes (4 workers, 0.1 s a batch) count again.
    at_stop = succeeded(cluster, job_id)
    wait_for(
        lambda: succeeded(cluster, job_id) >= at_stop + 8,
        timeout=size(30, 60),
        what="the other nodes to commit again",
    )
    figures["held_up_s"] = round(time.time() - frozen, 2)
    assert figures["held_up_s"] < HELD_UP_LIMIT + 1, figures
    final = wait_ended(cluster, job_id, figures, ["node-a", "node-c"], size(30, 60))
    figures["ended_after_stop_s"] = round(time.time() - frozen, 1)
    check_exact(cluster, job_id, final, total, ["node-a", "node-c"], figures)
    late, before = late_outcomes_refused(cluster, job_id, "node-b", frozen, running)
    figures["late_outcomes_refused"] = len(late)
    assert running <= late, (running, late)

    thaw_and_rejoin(cluster, "node-b", job_id, final, before, figures)
    figures["job_s"] = round(time.monotonic() - started, 1)
    check_hooks_once(cluster)


# docs/several-machines.md: a node stopped mid-transaction holds the others up this long
# at most (the server's idle_in_transaction_session_timeout for the daemons' sessions).
HELD_UP_LIMIT = 5.0


def succeeded(cluster: Cluster, job_id: str) -> int:
    status = cluster.status(job_id, "node-a")
    return -1 if status is None else int(status["batch_metrics"]["succeeded"])


@pytest.fixture
def netns() -> Iterator[NetNamespace]:
    """A network namespace of the test's own (root and iproute2, or the test skips)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns (CI runs as root)")
    if shutil.which("ip") is None:
        pytest.skip("needs ip (iproute2): make test and make faults install it")
    namespace = NetNamespace()
    try:
        try:
            namespace.create()
        except RuntimeError as exc:
            # A container may deny it even to root; on CI the scenario must run, so fail.
            if os.environ.get("CI"):
                raise
            pytest.skip(f"cannot create a network namespace here: {exc}")
        yield namespace
    finally:
        namespace.delete()


@pytest.fixture
def reachable_dsn(own_postgres: pg.Cluster, netns: NetNamespace) -> Iterator[str]:
    """A fresh schema on the test's own server, which also listens on the host's end of
    the namespace's link (and lets the tests' role in from there)."""
    own_postgres.listen_also(netns.host_address, netns.network)
    with own_postgres.fresh_schema() as dsn:
        yield dsn


def test_network_partition_of_one_node(
    netns: NetNamespace,
    reachable_dsn: str,
    start_cluster: StartCluster,
    figures: dict[str, Any],
) -> None:
    """14c. Cluster of 3: network partition (node-c in its own netns, link cut, restored)
    The link is cut mid-job and restored past node_timeout. The others sweep it and finish
    its batches (0 lost, exact counts, 1 to max_receive_count calls per batch,
    on_job_complete once); what node-c's workers finished while cut off is refused once
    the link is back; node-c rejoins and runs part of the next job.
    """
    total = size(60, 600)
    inside = reachable_dsn.replace("@127.0.0.1:", f"@{netns.host_address}:")
    cluster = start_cluster(
        [reachable_dsn, reachable_dsn, inside], prefixes={"node-c": netns.prefix}
    )
    started = time.monotonic()
    job_id = cluster.submit(job(total), via="node-c")
    cluster.wait_done_by("node-c", size(3, 20), job_id)
    try:
        cut, running = while_running(cluster, "node-c", netns.cut, netns.restore)
        final = wait_ended(cluster, job_id, figures, ["node-a", "node-b"], size(30, 120))
        figures["recovery_s"] = recovery(cluster, "node-c", running, cut)
        check_exact(cluster, job_id, final, total, ["node-a", "node-b"], figures)
        assert NODE_TIMEOUT - HEARTBEAT <= figures["recovery_s"] < LEASE_TIMEOUT
        late, before = late_outcomes_refused(cluster, job_id, "node-c", cut, running)
        figures["late_outcomes_refused"] = len(late)
        assert running <= late, (running, late)
    finally:
        # Whatever happened: a node killed while cut off would leave its server session
        # (and any lock it holds) behind until TCP gives up on it.
        netns.restore()
    restored = time.monotonic()
    figures["cut_s"] = round(time.time() - cut, 1)
    check_rejoined(cluster, "node-c", via="node-a", figures=figures)
    figures["rejoined_s"] = round(time.monotonic() - restored, 1)
    check_unchanged(cluster, job_id, final, before)
    figures["job_s"] = round(restored - started, 1)
    check_hooks_once(cluster)


@pytest.fixture
def own_schema(own_postgres: pg.Cluster) -> Iterator[str]:
    with own_postgres.fresh_schema() as dsn:
        yield dsn


@pytest.mark.parametrize("down_s", [0.0, 2 * NODE_TIMEOUT], ids=["restart", "down_6s"])
def test_postgresql_restart_mid_job(
    own_postgres: pg.Cluster,
    own_schema: str,
    start_cluster: StartCluster,
    figures: dict[str, Any],
    down_s: float,
) -> None:
    """14d. Cluster of 3: PostgreSQL stopped (-m fast) mid-job and started again
    At once, or after twice node_timeout (every node answering 503 with Retry-After
    meanwhile). Every node answers from the database again, none sweeps another, no batch
    is charged an attempt, no node loses a worker; the job completes with one result per
    batch (0 lost, none counted twice), 1 to max_receive_count calls per batch,
    on_job_complete once.
    """
    total = size(300, 1200)
    cluster = start_cluster([own_schema] * 3)
    started = time.monotonic()
    job_id = cluster.submit(job(total), via="node-a")
    for name in NODE_NAMES:
        cluster.wait_done_by(name, size(3, 20), job_id)
    stopping = time.time()
    own_postgres.shut_down("fast")
    if down_s:
        # The fault's length, not a wait for something: the server stays down this long.
        deadline = time.monotonic() + down_s
        answers = {name: unavailable_answer(cluster, job_id, name) for name in NODE_NAMES}
        figures["answers_while_down"] = "/".join(answers.values())
        time.sleep(max(0.0, deadline - time.monotonic()))
    own_postgres.serve()
    back = time.time()
    # Each node answers from the database again: it reconnected.
    answered: dict[str, float] = {}

    def all_answer() -> bool:
        for name in NODE_NAMES:
            if name not in answered and cluster.status(job_id, name) is not None:
                answered[name] = time.time() - back
        return len(answered) == len(NODE_NAMES)

    wait_for(all_answer, timeout=60, what="every node to answer after the restart")
    final = wait_ended(cluster, job_id, figures, list(NODE_NAMES), size(120, 300))
    after = Counter(e.node for e in cluster.side.of("call") if e.t > back)
    figures.update(
        down_s=round(back - stopping, 2),
        answered_after_s="/".join(f"{answered[name]:.2f}" for name in NODE_NAMES),
        calls_after_restart_per_node="/".join(str(after[name]) for name in NODE_NAMES),
        job_s=round(time.monotonic() - started, 1),
    )
    check_exact(cluster, job_id, final, total, list(NODE_NAMES), figures)
    if down_s:
        assert set(figures["answers_while_down"].split("/")) == {"503 Retry-After"}, figures
    # Held outcomes keep their leases through the outage, and no node swept another.
    assert final["batch_metrics"]["failed_attempts"] == 0, final
    assert all(after[name] > 0 for name in NODE_NAMES), after
    check_no_worker_channel_failed(cluster, figures)
    check_hooks_once(cluster)


def unavailable_answer(cluster: Cluster, job_id: str, name: str) -> str:
    """How `name` answers a status request while the database is down: its status code,
    and Retry-After when it says when to try again."""
    url = f"{cluster.node(name).daemon.url}/batch/{API}?jobID={job_id}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.status)
    except urllib.error.HTTPError as answer:
        retry = " Retry-After" if answer.headers.get("Retry-After") else ""
        return f"{answer.code}{retry}"
