"""The worker process: ``python -m batchd.worker`` (standard library only).

It may run under an API's own interpreter, which has none of the daemon's
dependencies, so nothing here imports beyond the standard library and ``batchd.worker``,
``batchd.wire`` and ``batchd.constants``. Its messages are batchd.wire.messages' records.

    daemon ──init──▶ load handler file, Handler(config, job_spec) ──ready──▶ daemon
    daemon ──batches──▶ handle_batch(payload, batch_id) … ──progress(outcomes)──▶ daemon
                                                        … ──next(outcomes)──▶ daemon
    daemon ──complete──▶ on_job_complete([status]) ──completed──▶ daemon
    daemon ──exit──▶ return 0

The daemon is the only one that touches the queue; a worker only reports outcomes.
Outcomes of a long run of batches are reported every few milliseconds (``progress``)
so little is lost with the worker, and the sequence number of the batch under way is
kept in a shared memory word the daemon reads when the worker dies: the batch that
killed it is the one charged.
"""

from __future__ import annotations

import inspect
import json
import mmap
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from batchd.constants import (
    ENV_LOG_FD,
    ENV_PROGRESS_FD,
    ENV_SPARE,
    ENV_WORKER_FD,
    PREFETCH_MIN_BATCHES,
    PROGRESS_FLUSH_SECONDS,
    REPORT_FLUSH_BYTES,
    WORKER_EXIT_INIT_FAILED,
    WORKER_EXIT_OUT_OF_MEMORY,
)
from batchd.wire.framing import BlockingChannel, ChannelClosed
from batchd.wire.ids import batch_id
from batchd.wire.messages import (
    Batches,
    Complete,
    Completed,
    Exit,
    Init,
    InitFailed,
    Launch,
    Next,
    Progress,
    Ready,
    failure,
    success,
)
from batchd.worker import log as worker_log
from batchd.worker.isolation import bound_memory, die_with_parent, join_cgroup, start_group_guard
from batchd.worker.loading import (
    call_with_declared,
    declared_caller,
    describe_exception,
    drop_own_frames,
    load_handler_class,
)
from batchd.worker.log import logger
from batchd.worker.metrics_client import MetricsClient
from batchd.worker.models import ENV_MODELS


class UnsendableResult(ValueError):
    """A result the channel cannot carry; only its own batch fails."""


# Results are measured as the channel will send them: compact UTF-8 JSON.
_RESULT_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def result_size(result: Any, limit: int | None) -> int:
    """The bytes `result` takes on the channel; UnsendableResult when it is over `limit`
    or holds text UTF-8 cannot encode (ValueError/TypeError when it is not JSON)."""
    try:
        size = len(_RESULT_ENCODER.encode(result).encode("utf-8"))
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        raise UnsendableResult(
            f"the result holds a lone surrogate ({bad!r}), which UTF-8 cannot encode "
            "(text decoded with errors='surrogateescape'?); return bytes as base64, or "
            "decode them with errors='replace'"
        ) from None
    if limit is not None and size > limit:
        raise UnsendableResult(
            f"the result is {size} bytes of JSON, over the daemon's max_result_size of "
            f"{limit} bytes"
        )
    return size


_SEQ = struct.Struct("<Q")


class CurrentSeq:
    """The sequence number of the batch under way, in memory the daemon shares."""

    def __init__(self, fd: int | None) -> None:
        self.set: Callable[[int], None] = lambda seq: None
        if fd is not None:
            # Written once per batch: one C call.
            self.set = partial(_SEQ.pack_into, mmap.mmap(fd, 8), 0)


# What the daemon may send once the handler is ready.
Order = Batches | Complete | Exit
_ORDERS: dict[str, Callable[[dict[str, Any]], Order]] = {
    order.op: order.decode for order in (Batches, Complete, Exit)
}
# The first ask for batches, right after `ready`.
_FIRST_ASK = Next(0, [], []).encode()


class Worker:
    def __init__(self, channel: BlockingChannel, current: CurrentSeq | None = None) -> None:
        self.channel = channel
        self.current = current or CurrentSeq(None)
        self.handler: Any = None
        self.job_id = ""
        self._handle_batch: Callable[[Any, str], Any] = lambda payload, name: None
        self.max_result_bytes: int | None = None
        # Bytes of results handled and not yet reported.
        self.unreported_bytes = 0
        # What the handler records goes with the next report or `completed`.
        self.metrics = MetricsClient()

    def start(self, init: Init) -> bool:
        sys.path.insert(0, os.getcwd())
        self.job_id = init.job_id
        self.max_result_bytes = init.max_result_bytes
        try:
            models = os.environ.get(ENV_MODELS)
            clients = _model_clients(models) if models else {}
            handler_class = (
                load_handler_class(init.handler_path) if init.handler_path else _builtin_handler()
            )
            self.handler = call_with_declared(
                handler_class,
                config=init.config,
                job_spec=init.job_spec,
                metrics_client=self.metrics,
                **clients,
            )
            handle_batch = getattr(self.handler, "handle_batch", None)
            if not callable(handle_batch):
                raise TypeError("Handler has no handle_batch method")
            self._handle_batch = declared_caller(handle_batch, ("payload", "batch_id"))
        except MemoryError:
            os._exit(WORKER_EXIT_OUT_OF_MEMORY)
        except Exception as exc:
            logger.error("Handler failed to initialise", exc_info=drop_own_frames(exc))
            self.channel.send_frame(InitFailed(**describe_exception(exc)).encode())
            return False
        has_on_complete = callable(getattr(self.handler, "on_job_complete", None))
        self.channel.send_frame(Ready(has_on_complete).encode())
        return True

    def receive(self) -> Order:
        """The daemon's next order, checked (BadFrame); an unknown op is a ValueError."""
        message = self.channel.recv()
        op = message.get("op")
        decode = _ORDERS.get(op) if isinstance(op, str) else None
        if decode is None:
            raise ValueError(f"unknown op {op!r}")
        return decode(message)

    def handle(
        self, seq: int, payload: Any, done: list[list[Any]], failed: list[dict[str, Any]]
    ) -> None:
        """Run one batch, adding its outcome to `done` or `failed`, as reported."""
        name = batch_id(self.job_id, seq)
        self.current.set(seq)
        labels = worker_log.labels
        labels["batchID"] = name
        started = time.monotonic()
        try:
            result = self._handle_batch(payload, name)
            if result is not None:
                # Encode now so a result that is not JSON, or that the channel cannot
                # carry, fails this batch, not the channel (and the batches reported
                # with it).
                self.unreported_bytes += result_size(result, self.max_result_bytes)
            done.append(success(seq, time.monotonic() - started, result))
        except MemoryError:
            # Over [compute] mem: this process cannot be trusted to go on.
            os._exit(WORKER_EXIT_OUT_OF_MEMORY)
        except Exception as exc:
            logger.error("handle_batch failed", exc_info=drop_own_frames(exc))
            failed.append(failure(seq, time.monotonic() - started, **describe_exception(exc)))
        finally:
            labels.pop("batchID", None)

    def run_batches(self, grant: Batches) -> Order | None:
        """Handle a grant's batches in order, reporting outcomes every few milliseconds
        and at once after a failure, then ask for more.

        Halfway through a long grant the worker asks for the next one (`more`), which the
        daemon always answers, with batches or an empty grant: the pipe never runs dry.
        Returns what came instead of that answer, for the caller to act on."""
        token, batches = grant.token, grant.batches
        send, handle, metrics = self.channel.send_frame, self.handle, self.metrics.take
        done: list[list[Any]] = []
        failed: list[dict[str, Any]] = []
        flushed = time.monotonic()
        halfway = len(batches) // 2 if len(batches) >= PREFETCH_MIN_BATCHES else -1
        for index, (seq, payload) in enumerate(batches):
            if index == halfway:
                send(Progress(token, done, failed, metrics(), more=True).encode())
                done, failed, self.unreported_bytes = [], [], 0
            handle(seq, payload, done, failed)
            now = time.monotonic()
            if (
                failed
                or now - flushed >= PROGRESS_FLUSH_SECONDS
                # Large results go at once: a report must stay far below the frame limit.
                or self.unreported_bytes >= REPORT_FLUSH_BYTES
            ):
                send(Progress(token, done, failed, metrics()).encode())
                done, failed, flushed, self.unreported_bytes = [], [], now, 0
        self.unreported_bytes = 0
        if halfway < 0:
            send(Next(token, done, failed, metrics()).encode())
            return None
        answer = self.receive()
        if isinstance(answer, Batches) and not answer.batches:
            send(Next(token, done, failed, metrics()).encode())
            return None
        # The next grant (or an order to stop) is here: report this one's last outcomes.
        send(Progress(token, done, failed, metrics()).encode())
        return answer

    def complete(self, status: dict[str, Any]) -> Completed:
        hook = getattr(self.handler, "on_job_complete", None)
        try:
            if hook is not None:
                takes_status = len(inspect.signature(hook).parameters) > 0
                hook(status) if takes_status else hook()
        except Exception as exc:
            logger.error("on_job_complete failed", exc_info=drop_own_frames(exc))
            return Completed(False, **describe_exception(exc), metrics=self.metrics.take())
        return Completed(True, metrics=self.metrics.take())

    def serve(self) -> None:
        # What __init__ recorded goes with the first ask.
        recorded = self.metrics.take()
        first_ask = _FIRST_ASK if recorded is None else Next(0, [], [], recorded).encode()
        self.channel.send_frame(first_ask)
        order: Order | None = None
        while True:
            if order is None:
                order = self.receive()
            if isinstance(order, Batches):
                order = self.run_batches(order)
                continue
            if isinstance(order, Exit):
                return
            self.channel.send_frame(self.complete(order.status).encode())
            order = None


def _model_clients(settings_json: str) -> dict[str, Any]:
    # Here, not at the top: a python handler's worker never loads the model clients.
    from batchd.worker.models.setup import model_clients

    return model_clients(settings_json)


def _builtin_handler() -> type:
    from batchd.worker.models.builtin import BuiltinHandler

    return BuiltinHandler


def take_launch(channel: BlockingChannel) -> str:
    """A spare worker, started before its job: take the job's directory and environment
    (its own descriptors kept), as if it had been started with them."""
    launch = Launch.decode(channel.recv())
    own = {
        key: os.environ[key]
        for key in (ENV_WORKER_FD, ENV_LOG_FD, ENV_PROGRESS_FD, "BATCHD_DAEMON_PID")
        if key in os.environ
    }
    started_in = os.getcwd()
    os.chdir(launch.cwd)
    os.environ.clear()
    os.environ.update(launch.env)
    os.environ.update(own)
    # The time module read TZ when it was imported, before the job's environment.
    time.tzset()
    # `python -m` put the directory it started in first on the path.
    if sys.path and sys.path[0] == started_in:
        sys.path[0] = os.getcwd()
    if "tempfile" in sys.modules:
        # TMPDIR has changed (the worker's own workspace): look it up again.
        sys.modules["tempfile"].tempdir = None  # type: ignore[attr-defined]
    return started_in


def settle_pythonpath(started_in: str) -> None:
    """Relative PYTHONPATH entries (an API's python_path) name folders of the project:
    Python resolved them against the folder it started in, which for a spare was not the
    project. Resolve them against the project, in sys.path and for the handler's children."""
    entries = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if all(os.path.isabs(entry) for entry in entries if entry):
        return
    here = os.getcwd()
    for entry in entries:
        if entry and not os.path.isabs(entry):
            stale = os.path.abspath(os.path.join(started_in, entry))
            if stale in sys.path and started_in != here:
                sys.path[sys.path.index(stale)] = os.path.abspath(entry)
    os.environ["PYTHONPATH"] = os.pathsep.join(os.path.abspath(e) if e else e for e in entries)


def main() -> int:
    die_with_parent()
    sock = socket.socket(fileno=int(os.environ[ENV_WORKER_FD]))
    channel = BlockingChannel(sock)
    started_in = os.getcwd()
    if os.environ.get(ENV_SPARE):
        try:
            started_in = take_launch(channel)
        except ChannelClosed:
            return 0
    settle_pythonpath(started_in)
    join_cgroup()
    start_group_guard()
    bound_memory()
    progress_fd = os.environ.get(ENV_PROGRESS_FD)
    printed = worker_log.capture_prints()
    try:
        worker = Worker(channel, CurrentSeq(int(progress_fd) if progress_fd else None))
        if not worker.start(Init.decode(channel.recv())):
            return WORKER_EXIT_INIT_FAILED
        worker.serve()
    except ChannelClosed:
        # The daemon closed our channel: it is going away or has dropped us.
        return 0
    finally:
        for stream in printed:
            stream.finish_line()
    return 0
