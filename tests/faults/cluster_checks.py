"""The checks every cluster scenario (tests/faults/test_cluster.py) makes, and the
settings they share."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from batchd.constants import CLUSTER_SYNC_INTERVAL
from tests.conftest import wait_for
from tests.faults.cluster import NODE_NAMES, Cluster, JobDidNotEnd
from tests.faults.conftest import size

NODE_TIMEOUT = 3.0
# A node heartbeats this often: the sweep counts node_timeout from its last heartbeat,
# which may come up to this long before the fault.
HEARTBEAT = min(CLUSTER_SYNC_INTERVAL, NODE_TIMEOUT / 5)
LEASE_TIMEOUT = 30.0
MAX_RECEIVE_COUNT = 3
SETTINGS: dict[str, Any] = {
    "max_workers": 2,
    "node_timeout": NODE_TIMEOUT,
    "lease_timeout": LEASE_TIMEOUT,
}
DELAY = 0.1
API = "spread"

StartCluster = Callable[..., Cluster]


class HookNotOnce(AssertionError):
    """on_job_complete ran other than once for a job."""


class WorkerChannelFailed(AssertionError):
    """A node lost a worker's channel to a store error (its slot and lease with it)."""


def check_no_worker_channel_failed(cluster: Cluster, figures: dict[str, Any]) -> None:
    """No node lost a worker to the database going away: the store's errors are retried,
    the workers keep running."""
    failed = {n.name: n.daemon.output().count('"worker channel failed"') for n in cluster.nodes}
    figures["worker_channels_failed"] = "/".join(str(failed[name]) for name in NODE_NAMES)
    if any(failed.values()):
        raise WorkerChannelFailed(f"worker channels failed per node: {failed}")


def check_hooks_once(cluster: Cluster) -> None:
    """on_job_complete ran exactly once for every job that ran. Checked last: a run that
    fails it has gone through (and recorded the figures of) every other check."""
    jobs = {e.key.rsplit("-", 1)[0] for e in cluster.side.of("call")}
    hooks = Counter(e.key for e in cluster.side.of("hook"))
    wrong = {job_id: hooks[job_id] for job_id in sorted(jobs) if hooks[job_id] != 1}
    if wrong:
        raise HookNotOnce(f"on_job_complete runs per job: {wrong}")


def job(total: int, workers: int = 6) -> dict[str, Any]:
    return {
        "workers": workers,
        "item_list": {"items": list(range(total)), "batch_size": 1},
        "max_receive_count": MAX_RECEIVE_COUNT,
        "config": {"delay": DELAY},
    }


def shared(status: dict[str, Any]) -> dict[str, Any]:
    """What every node must answer alike about a job (worker counts are each node's own)."""
    keys = ("status", "end_time", "total_batch_count", "batches_in_queue", "batch_metrics")
    return {key: status[key] for key in keys}


def wait_ended(
    cluster: Cluster, job_id: str, figures: dict[str, Any], via: list[str], timeout: float
) -> dict[str, Any]:
    """The job's final status, through `via`; a stall is noted in the figures."""
    try:
        return cluster.wait_terminal(job_id, via=via, timeout=timeout)
    except JobDidNotEnd as stalled:
        metrics = (stalled.last or {}).get("batch_metrics", {})
        figures["stalled_at"] = f"{metrics.get('succeeded')} succeeded after {timeout:g}s"
        raise


def check_exact(
    cluster: Cluster,
    job_id: str,
    final: dict[str, Any],
    total: int,
    via: list[str],
    figures: dict[str, Any],
    prefix: str = "",
) -> None:
    """The job succeeded with exactly one result per batch, each batch called 1 to
    max_receive_count times, the work done by more than one node, and every node in `via`
    answering the same (on_job_complete: check_hooks_once, at the end). Its figures go
    into `figures` (names prefixed) before anything is checked: a failed run reports
    them too."""
    metrics = final["batch_metrics"]
    results = cluster.results(job_id, via=via[0])
    calls = Counter(
        {key: n for key, n in cluster.side.calls().items() if key.startswith(f"{job_id}-")}
    )
    hooks = [e for e in cluster.side.of("hook") if e.key == job_id]
    per_node = Counter(row["node"] for row in results.values())
    found = {
        "batches": total,
        "lost": total - len(results),
        "calls": sum(calls.values()),
        "reruns": sum(calls.values()) - len(calls),
        "max_calls_per_batch": max(calls.values(), default=0),
        "failed_attempts": metrics["failed_attempts"],
        "results_per_node": "/".join(str(per_node[name]) for name in NODE_NAMES),
        "hook_runs": len(hooks),
    }
    # A second job (rejoining) reports only its losses, its spread and its hook runs.
    kept = found if not prefix else {k: found[k] for k in ("lost", "results_per_node", "hook_runs")}
    figures.update({f"{prefix}{name}": value for name, value in kept.items()})
    assert final["status"] == "succeeded", final
    assert (metrics["succeeded"], metrics["failed"], metrics["in_progress"]) == (total, 0, 0)
    assert final["batches_in_queue"] == 0, final
    expected = {f"{job_id}-{i + 1}": i for i in range(total)}
    assert {key: row["item"] for key, row in results.items()} == expected
    assert set(calls) == set(expected)
    assert all(1 <= n <= MAX_RECEIVE_COUNT for n in calls.values()), calls.most_common(3)
    assert len(per_node) >= 2, per_node
    for name in via[1:]:
        seen = cluster.status(job_id, name)
        assert seen is not None and shared(seen) == shared(final), (name, seen)


def recovery(cluster: Cluster, lost_node: str, keys: set[str], since: float) -> float:
    """Seconds from `since` to the first call by another node of one of `keys` (batches
    the lost node had begun)."""
    again = [e.t for e in cluster.side.of("call") if e.key in keys and e.node != lost_node]
    assert again, f"no other node re-ran {sorted(keys)[:5]}..."
    return round(min(again) - since, 3)


def late_outcomes_refused(
    cluster: Cluster, job_id: str, node: str, since: float, running: set[str]
) -> tuple[set[str], dict[str, dict[str, Any]]]:
    """Batches `node`'s workers finished after `since` (cut off from the queue by then),
    and those of `running` (what while_running caught) they finished at all: none of
    their results may be the one kept.

    A worker stamps its "done" line before writing it, so a line stamped just before
    `since` can land after while_running read the file: that batch counts as running,
    and its outcome reached the pipe only after the cut, yet its stamp is not "after"."""
    late = {
        e.key
        for e in cluster.side.done_by(node)
        if e.key.startswith(job_id) and (e.t > since or e.key in running)
    }
    results = cluster.results(job_id)
    accepted = sorted(key for key in late if results[key]["node"] == node)
    assert not accepted, f"{node}'s late outcomes were kept for {accepted}"
    return late, results


def while_running(
    cluster: Cluster, node: str, fault: Callable[[], object], undo: Callable[[], object]
) -> tuple[float, set[str]]:
    """`fault()` while one of `node`'s workers is inside handle_batch; when, and the
    batches it was running (their outcomes cannot have been recorded before). A worker
    may finish just before the fault: then `undo()` at once and try again."""
    for _ in range(20):
        cluster.wait_in_flight(node)
        fault()
        moment = time.time()
        running = cluster.side.running_at(node, moment)
        if running:
            return moment, running
        undo()
    raise AssertionError(f"{node} was never caught running a batch")


def check_unchanged(
    cluster: Cluster, job_id: str, final: dict[str, Any], results: dict[str, Any]
) -> None:
    """Every node answers the ended job's status and results as they were."""
    for name in NODE_NAMES:
        status = cluster.status(job_id, name)
        assert status is not None and shared(status) == shared(final), (name, status)
        assert cluster.results(job_id, via=name) == results, name


def thaw_and_rejoin(
    cluster: Cluster,
    node: str,
    job_id: str,
    final: dict[str, Any],
    results: dict[str, Any],
    figures: dict[str, Any],
) -> None:
    """SIGCONT of the stopped `node`: it rejoins (runs part of a job submitted through
    it), and nothing it sent changed the ended job, seen from any node."""
    cluster.thaw(node)
    thawed = time.monotonic()
    check_rejoined(cluster, node, via=node, figures=figures)
    figures["rejoined_s"] = round(time.monotonic() - thawed, 1)
    check_unchanged(cluster, job_id, final, results)


def check_rejoined(cluster: Cluster, node: str, via: str, figures: dict[str, Any]) -> None:
    """A second job, submitted through `via`, completes exactly with `node` taking part."""
    total = size(120, 300)
    second = cluster.submit(job(total), via=via)
    wait_for(
        lambda: any(e.key.startswith(f"{second}-") for e in cluster.side.done_by(node)),
        what=f"{node} to run a batch of the next job",
    )
    final = wait_ended(cluster, second, figures, [via], size(30, 120))
    check_exact(cluster, second, final, total, list(NODE_NAMES), figures, prefix="next_job_")
