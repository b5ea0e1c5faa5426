"""The worker process: ``python -m batchd.worker`` (standard library only).

It may run under an API's own interpreter, which has none of the daemon's
dependencies, so nothing here imports beyond the standard library and
``batchd.protocol``/``batchd.constants``.

    daemon ──init──▶ load handler file, Handler(config, job_spec) ──ready──▶ daemon
    daemon ──batches──▶ handle_batch(payload, batch_id) … ──next(outcomes)──▶ daemon
    daemon ──complete──▶ on_job_complete([status]) ──completed──▶ daemon
    daemon ──exit──▶ return 0

The daemon is the only one that touches the queue; a worker only reports outcomes.
"""

from __future__ import annotations

import ctypes
import importlib.util
import inspect
import json
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchd import worker_log
from batchd.constants import (
    ENV_MEMORY_LIMIT,
    ENV_WORKER_FD,
    WORKER_EXIT_INIT_FAILED,
    WORKER_EXIT_OUT_OF_MEMORY,
)
from batchd.protocol import BlockingChannel, ChannelClosed
from batchd.worker_log import logger

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
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return function(**available)
    positional = [
        available[p.name]
        for p in parameters
        if p.kind is inspect.Parameter.POSITIONAL_ONLY and p.name in available
    ]
    named = {
        p.name: available[p.name]
        for p in parameters
        if p.kind is not inspect.Parameter.POSITIONAL_ONLY and p.name in available
    }
    return function(*positional, **named)


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
    return {
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(exc)),
    }


class Worker:
    def __init__(self, channel: BlockingChannel) -> None:
        self.channel = channel
        self.handler: Any = None

    def start(self, init: dict[str, Any]) -> bool:
        sys.path.insert(0, os.getcwd())
        try:
            handler_class = load_handler_class(init["handler_path"])
            self.handler = call_with_declared(
                handler_class, config=init["config"], job_spec=init["job_spec"]
            )
            if not callable(getattr(self.handler, "handle_batch", None)):
                raise TypeError("Handler has no handle_batch method")
        except MemoryError:
            os._exit(WORKER_EXIT_OUT_OF_MEMORY)
        except Exception as exc:
            logger.error("Handler failed to initialise", exc_info=exc)
            self.channel.send({"op": "init_failed", **describe_exception(exc)})
            return False
        has_on_complete = callable(getattr(self.handler, "on_job_complete", None))
        self.channel.send({"op": "ready", "has_on_complete": has_on_complete})
        return True

    def handle(self, batch: dict[str, Any]) -> dict[str, Any]:
        outcome: dict[str, Any] = {"seq": batch["seq"], "token": batch["token"]}
        started = time.monotonic()
        worker_log.labels["batchID"] = batch["batch_id"]
        try:
            result = call_with_declared(
                self.handler.handle_batch, payload=batch["payload"], batch_id=batch["batch_id"]
            )
            if result is not None:
                # Encode now so a result that is not JSON fails this batch, not the channel.
                json.dumps(result, allow_nan=False)
                outcome["result"] = result
            outcome["ok"] = True
        except MemoryError:
            # Over [compute] mem: this process cannot be trusted to go on.
            os._exit(WORKER_EXIT_OUT_OF_MEMORY)
        except Exception as exc:
            logger.error("handle_batch failed", exc_info=exc)
            outcome.update(ok=False, **describe_exception(exc))
        finally:
            worker_log.labels.pop("batchID", None)
        outcome["duration"] = time.monotonic() - started
        return outcome

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
        self.channel.send({"op": "next", "outcomes": []})
        while True:
            message = self.channel.recv()
            op = message["op"]
            if op == "batches":
                outcomes = [self.handle(batch) for batch in message["batches"]]
                self.channel.send({"op": "next", "outcomes": outcomes})
            elif op == "complete":
                self.channel.send(self.complete(message["status"]))
            elif op == "exit":
                return
            else:
                raise ValueError(f"unknown op {op!r}")


def bound_memory() -> None:
    limit = os.environ.get(ENV_MEMORY_LIMIT)
    if limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))


def main() -> int:
    die_with_parent()
    start_group_guard()
    bound_memory()
    sock = socket.socket(fileno=int(os.environ[ENV_WORKER_FD]))
    channel = BlockingChannel(sock)
    printed = worker_log.capture_prints()
    try:
        worker = Worker(channel)
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


if __name__ == "__main__":
    sys.exit(main())
