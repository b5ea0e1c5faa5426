"""Several daemons on one PostgreSQL schema, for the cluster fault scenarios (14a-e).

Each node is a real ``batchd serve`` (testkit's Daemon) with a state dir, port and
``node_name`` of its own, all sharing one ``database``; the project is deployed once, on
the first node. The handler appends one line per event to a shared side file,
``<key> <event> <node> <pid> <unix time>``, opened with O_APPEND (a line is one write, so
the lines of several processes never interleave), and returns ``{"item", "node"}``: a
result names the node whose outcome was accepted. A node can be killed (-9), frozen
(SIGSTOP, at any moment or inside a transaction) and thawed, or run with a command
prefix (``ip netns exec``: tests/faults/netns.py) on a Unix socket.
:meth:`Cluster.close` ends every process whatever happened (frozen ones are thawed
first, so they can be stopped).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from batchd.client import BatchdError, Client
from testkit.launcher import Daemon, close_all
from tests.conftest import DEFAULT_TEST_CONFIG
from tests.faults.pgprobes import database_activity, locking_sessions

NODE_NAMES = ("node-a", "node-b", "node-c")
TERMINAL = {"succeeded", "completed_with_failures", "worker_error", "worker_oom", "timed_out"}
TERMINAL |= {"stopped", "unexpected_error"}

CLUSTER_HANDLER = """
import os, time

SIDE = os.environ["SIDE"]
NODE = os.environ["BATCHD_TEST_NODE"]


def record(key, event):
    line = f"{key} {event} {NODE} {os.getpid()} {time.time():.6f}\\n"
    fd = os.open(SIDE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class Handler:
    def __init__(self, config, job_spec):
        self.job_id = job_spec["job_id"]
        self.delay = float(config.get("delay", 0))

    def handle_batch(self, payload, batch_id):
        record(batch_id, "call")
        if self.delay:
            time.sleep(self.delay)
        record(batch_id, "done")
        return {"item": payload[0], "node": NODE}

    def on_job_complete(self, status):
        record(self.job_id, "hook")
"""


class JobDidNotEnd(AssertionError):
    """No node answered that the job ended in time; `last` is the last status seen."""

    def __init__(self, message: str, last: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.last = last


@dataclass(frozen=True)
class Event:
    key: str
    event: str
    node: str
    pid: int
    t: float


class ClusterSide:
    """What every node's workers recorded, read back by the test."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self) -> list[Event]:
        if not self.path.exists():
            return []
        found = []
        # The last piece is empty, or a line still being written: complete lines only.
        for line in self.path.read_text().split("\n")[:-1]:
            key, event, node, pid, t = line.split(" ")
            found.append(Event(key, event, node, int(pid), float(t)))
        return found

    def of(self, event: str) -> list[Event]:
        return [e for e in self.events() if e.event == event]

    def calls(self) -> Counter[str]:
        """handle_batch calls per batch id, every node's."""
        return Counter(e.key for e in self.of("call"))

    def done_by(self, node: str, after: float = 0.0) -> list[Event]:
        return [e for e in self.of("done") if e.node == node and e.t > after]

    def running_at(self, node: str, moment: float) -> set[str]:
        """Batches the node's workers had begun by `moment` and not finished by then: their
        outcomes cannot have reached the queue before it."""
        open_calls: dict[int, str] = {}
        for e in self.events():
            if e.node != node or e.t > moment:
                continue
            if e.event == "call":
                open_calls[e.pid] = e.key
            elif e.event == "done" and open_calls.get(e.pid) == e.key:
                del open_calls[e.pid]
        return set(open_calls.values())

    def in_flight(self, node: str) -> set[str]:
        """Batches the node's workers have begun and not finished."""
        return self.running_at(node, float("inf"))


@dataclass
class Node:
    name: str
    daemon: Daemon
    frozen: bool = False

    @property
    def client(self) -> Client:
        # Short: a frozen or cut-off node must not hold a poll up for minutes.
        return Client(self.daemon.url, timeout=5)

    def processes(self) -> list[psutil.Process]:
        """The daemon and every process under it."""
        if self.daemon.process is None:
            return []
        return [psutil.Process(self.daemon.pid), *self.daemon.descendants()]


class Cluster:
    """The nodes, the project `api` deployed on the first of them, and the side file."""

    def __init__(self, nodes: Sequence[Node], api: str, side: ClusterSide, dsn: str) -> None:
        self.nodes = list(nodes)
        self.api = api
        self.side = side
        self.dsn = dsn

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def submit(self, job: dict[str, Any], via: str = NODE_NAMES[0]) -> str:
        return str(self.node(via).client.submit(self.api, job)["job_id"])

    def status(self, job_id: str, via: str) -> dict[str, Any] | None:
        """The job's status as `via` answers it; None while it cannot (frozen, cut off,
        or its database unreachable: 503)."""
        try:
            answer = self.node(via).client.get_job(self.api, job_id)
        except BatchdError:
            return None
        status: dict[str, Any] = answer["job_status"]
        return status

    def wait_terminal(
        self, job_id: str, via: Sequence[str] = NODE_NAMES, timeout: float = 60
    ) -> dict[str, Any]:
        """Until one of the nodes `via` answers that the job has ended; that status."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            for name in via:
                status = self.status(job_id, name)
                if status is not None:
                    last = status
                    if status["status"] in TERMINAL:
                        return status
            time.sleep(0.05)
        raise JobDidNotEnd(
            f"job {job_id} did not end in {timeout}s; last seen: {last}\n"
            f"sessions on the database:\n{database_activity(self.dsn)}",
            last,
        )

    def wait_done_by(self, node: str, count: int, job_id: str, timeout: float = 60) -> None:
        """Until `node`'s workers have finished `count` batches of the job; fails at once,
        saying why, when the job ends first."""
        deadline = time.monotonic() + timeout
        polled = 0.0
        while sum(1 for e in self.side.done_by(node) if e.key.startswith(f"{job_id}-")) < count:
            now = time.monotonic()
            if now > deadline:
                raise AssertionError(f"{node} did not finish {count} batches in {timeout}s")
            if now - polled > 0.5:
                polled = now
                status = self.status(job_id, NODE_NAMES[0])
                if status is not None and status["status"] in TERMINAL:
                    raise AssertionError(f"the job ended before {node} ran {count}: {status}")
            time.sleep(0.02)

    def wait_in_flight(self, node: str, timeout: float = 60) -> set[str]:
        """Until `node` is inside handle_batch; the batches it is running."""
        deadline = time.monotonic() + timeout
        while not (running := self.side.in_flight(node)):
            if time.monotonic() > deadline:
                raise AssertionError(f"{node} ran no batch in {timeout}s")
            time.sleep(0.01)
        return running

    def results(self, job_id: str, via: str = NODE_NAMES[0]) -> dict[str, dict[str, Any]]:
        """batch id -> result, asserting there is one row per batch."""
        rows = list(self.node(via).client.results(self.api, job_id))
        by_id = {row["batch_id"]: row["result"] for row in rows}
        assert len(by_id) == len(rows), "a batch has two results"
        return by_id

    def kill(self, name: str) -> float:
        """kill -9 of the node's daemon (frozen or not); when."""
        node = self.node(name)
        node.daemon.kill()
        node.frozen = False
        return time.time()

    def freeze(self, name: str) -> float:
        """SIGSTOP of the node's daemon (its workers run on, their outcomes wait in the
        pipe); when it was seen stopped."""
        node = self.node(name)
        node.frozen = True
        os.kill(node.daemon.pid, signal.SIGSTOP)
        process = psutil.Process(node.daemon.pid)
        while process.status() != psutil.STATUS_STOPPED:
            time.sleep(0.001)
        return time.time()

    def freeze_in_transaction(self, name: str, tries: int = 500) -> float:
        """SIGSTOP of the node's daemon at a moment its session is inside a transaction
        holding a jobs row lock (thawed at once and tried again otherwise); when."""
        port = int(str(urlsplit(self.dsn).port))
        for _ in range(tries):
            frozen = self.freeze(name)
            process = psutil.Process(self.node(name).daemon.pid)
            ports = {
                c.laddr.port
                for c in process.net_connections(kind="tcp")
                if c.raddr and c.raddr.port == port
            }
            if locking_sessions(self.dsn, ports):
                return frozen
            self.thaw(name)
        raise AssertionError(f"{name} was never caught inside a transaction")

    def thaw(self, name: str) -> None:
        node = self.node(name)
        if node.frozen and node.daemon.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.daemon.pid, signal.SIGCONT)
        node.frozen = False

    def close(self) -> None:
        for node in self.nodes:
            self.thaw(node.name)
        close_all(node.daemon for node in self.nodes)


def node_daemon(
    root: Path,
    name: str,
    dsn: str,
    side: Path,
    prefix: Sequence[str] = (),
    unix_socket: bool = False,
    **settings: Any,
) -> Daemon:
    """A daemon named `name` on `dsn`, not started; on a Unix socket instead of loopback
    TCP when `unix_socket` (reachable from a network namespace other than its own)."""
    return Daemon(
        state_dir=root / name / "state",
        config_path=root / name / "batchd.toml",
        config={
            **DEFAULT_TEST_CONFIG,
            "database": dsn,
            "node_name": name,
            **settings,
        },
        log_path=root / name / "daemon.log",
        prefix=prefix,
        socket_path=root / name / "batchd.sock" if unix_socket else None,
        env={"BATCHD_TEST_NODE": name, "SIDE": str(side)},
    )


@contextlib.contextmanager
def running_cluster(
    root: Path,
    dsns: Sequence[str],
    project: Path,
    api: str,
    prefixes: dict[str, Sequence[str]] | None = None,
    **settings: Any,
) -> Iterator[Cluster]:
    """One node per DSN (node-a, node-b...), started one after another, `project`
    deployed on the first as `api`; every process ended afterwards."""
    side = ClusterSide(root / "side.log")
    nodes = []
    for name, dsn in zip(NODE_NAMES, dsns, strict=False):
        (root / name).mkdir(parents=True)
        daemon = node_daemon(
            root,
            name,
            dsn,
            side.path,
            prefix=(prefixes or {}).get(name, ()),
            unix_socket=name in (prefixes or {}),
            **settings,
        )
        nodes.append(Node(name, daemon))
    cluster = Cluster(nodes, api, side, dsns[0])
    try:
        for node in nodes:
            node.daemon.start()
        nodes[0].daemon.client.deploy(project)
        yield cluster
    finally:
        cluster.close()


def write_project(root: Path, api: str) -> Path:
    """The cluster handler as a project named `api`."""
    project = root / "projects" / api
    project.mkdir(parents=True)
    (project / "handler.py").write_text(CLUSTER_HANDLER)
    (project / "batchd.toml").write_text(
        f'name = {json.dumps(api)}\n[handler]\npath = "handler.py"\n'
    )
    return project
