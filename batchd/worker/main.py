"""The worker process: ``python -m batchd.worker`` (standard library only).

It may run under an API's own interpreter, which has none of the daemon's
dependencies, so nothing here imports beyond the standard library and
``batchd.wire.framing``/``batchd.constants``.

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

import ctypes
import importlib.util
import inspect
import json
import mmap
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchd.constants import (
    ENV_CGROUP,
    ENV_LOG_FD,
    ENV_MEMORY_LIMIT,
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
from batchd.wire.textsafe import escape_surrogates
from batchd.worker import log as worker_log
from batchd.worker.log import logger

_PR_SET_PDEATHSIG = 1


def _on_parent_death(signum: int) -> bool:
    """Have the kernel send `signum` when our parent dies; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL us when the daemon dies, so no worker is orphaned."""
    if not _on_parent_death(signal.SIGKILL):
        return
    expected = os.environ.get("BATCHD_DAEMON_PID")
    if expected and os.getppid() != int(expected):
        # The daemon died before prctl took effect.
        os._exit(1)


def start_group_guard() -> None:
    """Fork a tiny guard that kills this worker's whole process group once the worker is
    gone (however it went, the daemon's death included), so nothing a handler started -
    a subprocess, a pool - outlives it. The worker leads its own process group."""
    worker = os.getpid()
    if not sys.platform.startswith("linux") or os.getpgrp() != worker:
        # Not a group of our own (run by hand, not by the daemon): nothing safe to kill.
        return
    if os.fork() != 0:
        return
    try:
        # Release everything inherited: the daemon must see the worker's pipes close.
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, 65536)
        # The daemon's SIGTERM to the group is meant for the worker's grace period.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGUSR2, lambda *_: os.killpg(0, signal.SIGKILL))
        if not _on_parent_death(signal.SIGUSR2) or os.getppid() != worker:
            os.killpg(0, signal.SIGKILL)
        while True:
            signal.pause()
    finally:
        os._exit(0)


def call_with_declared(function: Callable[..., Any], **available: Any) -> Any:
    """Pass only the arguments the function's signature names (Cortex behaviour)."""
    return declared_caller(function, tuple(available))(*available.values())


def declared_caller(function: Callable[..., Any], names: tuple[str, ...]) -> Callable[..., Any]:
    """A caller taking values for `names` positionally and passing on only those the
    function declares. Reading the signature once, not per call, keeps it cheap."""
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return lambda *values: function(**dict(zip(names, values, strict=True)))
    declared = {p.name: p.kind for p in parameters}
    positional = [
        i for i, name in enumerate(names) if declared.get(name) is inspect.Parameter.POSITIONAL_ONLY
    ]
    named = [
        (i, name)
        for i, name in enumerate(names)
        if name in declared and declared[name] is not inspect.Parameter.POSITIONAL_ONLY
    ]
    if not named and positional == list(range(len(positional))):
        count = len(positional)
        return lambda *values: function(*values[:count])
    if not positional and [i for i, _ in named] == list(range(len(named))):
        keys = [name for _, name in named]
        if len(keys) == 1:
            (key,) = keys
            return lambda *values: function(**{key: values[0]})
        return lambda *values: function(**dict(zip(keys, values, strict=False)))
    return lambda *values: function(
        *[values[i] for i in positional], **{name: values[i] for i, name in named}
    )


def load_handler_class(handler_path: str) -> type:
    path = Path(handler_path).resolve()
    spec = importlib.util.spec_from_file_location("handler", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {handler_path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["handler"] = module
    spec.loader.exec_module(module)
    handler_class = getattr(module, "Handler", None)
    if not isinstance(handler_class, type):
        raise TypeError(f"{handler_path} does not define class Handler")
    return handler_class


def describe_exception(exc: BaseException) -> dict[str, str]:
    # A message may hold text decoded with surrogateescape: escaped, it can be sent.
    return {
        "error": escape_surrogates(f"{type(exc).__name__}: {exc}"),
        "traceback": escape_surrogates("".join(traceback.format_exception(exc))),
    }


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


class Progress:
    """The sequence number of the batch under way, in memory the daemon shares."""

    def __init__(self, fd: int | None) -> None:
        self._memory = mmap.mmap(fd, 8) if fd is not None else None

    def set(self, seq: int) -> None:
        if self._memory is not None:
            self._memory[:8] = seq.to_bytes(8, "little")


class Worker:
    def __init__(self, channel: BlockingChannel, progress: Progress | None = None) -> None:
        self.channel = channel
        self.progress = progress or Progress(None)
        self.handler: Any = None
        self.job_id = ""
        self._handle_batch: Callable[[Any, str], Any] = lambda payload, batch_id: None
        self.max_result_bytes: int | None = None
        # Bytes of results handled and not yet reported.
        self.unreported_bytes = 0

    def start(self, init: dict[str, Any]) -> bool:
        sys.path.insert(0, os.getcwd())
        self.job_id = str(init.get("job_id") or init["job_spec"].get("job_id", ""))
        limit = init.get("max_result_bytes")
        self.max_result_bytes = int(limit) if limit is not None else None
        try:
            handler_class = load_handler_class(init["handler_path"])
            self.handler = call_with_declared(
                handler_class, config=init["config"], job_spec=init["job_spec"]
            )
            handle_batch = getattr(self.handler, "handle_batch", None)
            if not callable(handle_batch):
                raise TypeError("Handler has no handle_batch method")
            self._handle_batch = declared_caller(handle_batch, ("payload", "batch_id"))
        except MemoryError:
            os._exit(WORKER_EXIT_OUT_OF_MEMORY)
        except Exception as exc:
            logger.error("Handler failed to initialise", exc_info=exc)
            self.channel.send({"op": "init_failed", **describe_exception(exc)})
            return False
        has_on_complete = callable(getattr(self.handler, "on_job_complete", None))
        self.channel.send({"op": "ready", "has_on_complete": has_on_complete})
        return True

    def handle(self, seq: int, payload: Any) -> tuple[list[Any] | None, dict[str, Any] | None]:
        """Run one batch: ([seq, duration(, result)], None) or (None, failure)."""
        batch_id = f"{self.job_id}-{seq}"
        self.progress.set(seq)
        labels = worker_log.labels
        labels["batchID"] = batch_id
        started = time.monotonic()
        try:
            result = self._handle_batch(payload, batch_id)
            if result is not None:
                # Encode now so a result that is not JSON, or that the channel cannot
                # carry, fails this batch, not the channel (and the batches reported
                # with it).
                self.unreported_bytes += result_size(result, self.max_result_bytes)
                return [seq, time.monotonic() - started, result], None
            return [seq, time.monotonic() - started], None
        except MemoryError:
            # Over [compute] mem: this process cannot be trusted to go on.
            os._exit(WORKER_EXIT_OUT_OF_MEMORY)
        except Exception as exc:
            logger.error("handle_batch failed", exc_info=exc)
            failure = {"seq": seq, "duration": time.monotonic() - started}
            return None, {**failure, **describe_exception(exc)}
        finally:
            labels.pop("batchID", None)

    def run_batches(self, token: int, batches: list[list[Any]]) -> dict[str, Any] | None:
        """Handle a grant of [seq, payload] batches in order, reporting outcomes every
        few milliseconds and at once after a failure, then ask for more.

        Halfway through a long grant the worker asks for the next one (`more`), which the
        daemon always answers, with batches or an empty grant: the pipe never runs dry.
        Returns a message that came instead of that answer, for the caller to act on."""
        done: list[list[Any]] = []
        failed: list[dict[str, Any]] = []
        flushed = time.monotonic()
        halfway = len(batches) // 2 if len(batches) >= PREFETCH_MIN_BATCHES else -1
        for index, (seq, payload) in enumerate(batches):
            if index == halfway:
                self.channel.send(
                    {"op": "progress", "token": token, "done": done, "failed": failed, "more": True}
                )
                done, failed, self.unreported_bytes = [], [], 0
            success, failure = self.handle(seq, payload)
            if success is not None:
                done.append(success)
            else:
                assert failure is not None
                failed.append(failure)
            now = time.monotonic()
            if (
                failed
                or now - flushed >= PROGRESS_FLUSH_SECONDS
                # Large results go at once: a report must stay far below the frame limit.
                or self.unreported_bytes >= REPORT_FLUSH_BYTES
            ):
                self.channel.send(
                    {"op": "progress", "token": token, "done": done, "failed": failed}
                )
                done, failed, flushed, self.unreported_bytes = [], [], now, 0
        self.unreported_bytes = 0
        if halfway < 0:
            self.channel.send({"op": "next", "token": token, "done": done, "failed": failed})
            return None
        answer = self.channel.recv()
        if answer["op"] == "batches" and not answer["batches"]:
            self.channel.send({"op": "next", "token": token, "done": done, "failed": failed})
            return None
        # The next grant (or an order to stop) is here: report this one's last outcomes.
        self.channel.send({"op": "progress", "token": token, "done": done, "failed": failed})
        return answer

    def complete(self, status: dict[str, Any]) -> dict[str, Any]:
        hook = getattr(self.handler, "on_job_complete", None)
        try:
            if hook is not None:
                takes_status = len(inspect.signature(hook).parameters) > 0
                hook(status) if takes_status else hook()
        except Exception as exc:
            logger.error("on_job_complete failed", exc_info=exc)
            return {"op": "completed", "ok": False, **describe_exception(exc)}
        return {"op": "completed", "ok": True}

    def serve(self) -> None:
        self.channel.send({"op": "next", "token": 0, "done": [], "failed": []})
        message: dict[str, Any] | None = None
        while True:
            message = message or self.channel.recv()
            op = message["op"]
            if op == "batches":
                message = self.run_batches(message["token"], message["batches"])
                continue
            elif op == "complete":
                self.channel.send(self.complete(message["status"]))
            elif op == "exit":
                return
            else:
                raise ValueError(f"unknown op {op!r}")
            message = None


def join_cgroup() -> None:
    """Move into the cgroup v2 group the daemon made for this worker (memory.max set),
    before anything is forked or loaded. The daemon moves us too; this closes the gap
    between the spawn and its write."""
    group = os.environ.get(ENV_CGROUP)
    if not group:
        return
    try:
        with open(os.path.join(group, "cgroup.procs"), "w") as procs:
            procs.write("0")
    except OSError:
        pass


def bound_memory() -> None:
    limit = os.environ.get(ENV_MEMORY_LIMIT)
    if limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))


def take_launch(channel: BlockingChannel) -> None:
    """A spare worker, started before its job: take the job's directory and environment
    (its own descriptors kept), as if it had been started with them."""
    launch = channel.recv()
    if launch.get("op") != "launch":
        raise ValueError(f"a spare worker expected launch, not {launch.get('op')!r}")
    own = {
        key: os.environ[key]
        for key in (ENV_WORKER_FD, ENV_LOG_FD, ENV_PROGRESS_FD, "BATCHD_DAEMON_PID")
        if key in os.environ
    }
    started_in = os.getcwd()
    os.chdir(launch["cwd"])
    os.environ.clear()
    os.environ.update(launch["env"])
    os.environ.update(own)
    # The time module read TZ when it was imported, before the job's environment.
    time.tzset()
    # `python -m` put the directory it started in first on the path.
    if sys.path and sys.path[0] == started_in:
        sys.path[0] = os.getcwd()
    if "tempfile" in sys.modules:
        # TMPDIR has changed (the worker's own workspace): look it up again.
        sys.modules["tempfile"].tempdir = None  # type: ignore[attr-defined]


def main() -> int:
    die_with_parent()
    sock = socket.socket(fileno=int(os.environ[ENV_WORKER_FD]))
    channel = BlockingChannel(sock)
    if os.environ.get(ENV_SPARE):
        try:
            take_launch(channel)
        except ChannelClosed:
            return 0
    join_cgroup()
    start_group_guard()
    bound_memory()
    progress_fd = os.environ.get(ENV_PROGRESS_FD)
    printed = worker_log.capture_prints()
    try:
        worker = Worker(channel, Progress(int(progress_fd) if progress_fd else None))
        if not worker.start(channel.recv()):
            return WORKER_EXIT_INIT_FAILED
        worker.serve()
    except ChannelClosed:
        # The daemon closed our channel: it is going away or has dropped us.
        return 0
    finally:
        for stream in printed:
            stream.finish_line()
    return 0
