"""`batchd serve`: wire the store, registry, scheduler and HTTP API, run until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import grp
import logging
import os
import signal
import sqlite3
import stat
import sys
from collections.abc import Coroutine, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from batchd.apis.registry import ApiRegistry
from batchd.apis.spec import pack_project
from batchd.config import ConfigError, DaemonConfig, check_exposure
from batchd.constants import DB_FILENAME
from batchd.daemon.fdlimit import connection_cap, raise_open_file_limit
from batchd.daemon.logsetup import READY_MESSAGE
from batchd.daemon.sdnotify import Notifier, status_line
from batchd.errors import DomainError
from batchd.http.app import Services, build_app
from batchd.http.auth import Tokens, load_tokens
from batchd.http.connections import ConnectionGuard, GuardedAppRunner
from batchd.observe.joblogs import JobLogFiles, JobLogs
from batchd.observe.metrics import Metrics
from batchd.observe.retention import Pruner
from batchd.pool.gpus import detect_gpus
from batchd.pool.memlimit import MemoryLimiter
from batchd.scheduler.core import Scheduler
from batchd.store import DatabaseUnavailable, NodeNameTaken, named_connections, open_store
from batchd.store.roles import Store

log = logging.getLogger("batchd.daemon")

# In-flight HTTP requests get this long to finish once the daemon stops.
HTTP_SHUTDOWN_TIMEOUT = 5.0

# Exit codes of `batchd serve` that fail the start: a problem the state cannot get over by
# itself (a damaged database; the systemd unit does not restart on it), and any other.
EXIT_STATE_DAMAGED = 3
EXIT_START_FAILED = 1
# SQLite's names for a file that is not, or no longer, a readable database.
DAMAGED_DATABASE_ERRORS = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


class StartError(Exception):
    """The daemon cannot start; the message is the one line to print, `code` the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def database_error(path: Path, exc: sqlite3.DatabaseError) -> StartError:
    code = getattr(exc, "sqlite_errorname", "")
    if code in DAMAGED_DATABASE_ERRORS:
        return StartError(
            f"the queue database {path} is damaged ({exc}); move it aside and restore a "
            "backup (docs/systemd.md: Troubleshooting, a damaged database)",
            EXIT_STATE_DAMAGED,
        )
    return StartError(f"cannot use the queue database {path}: {exc}", EXIT_START_FAILED)


async def serve(
    config: DaemonConfig, deploy_dirs: Sequence[Path] = (), tokens: Tokens | None = None
) -> int:
    tokens = tokens or Tokens(None, None)
    state = config.state_path
    database = config.database_url()
    if database is not None:
        database = named_connections(database, f"batchd {config.node_name}")
    _prepare_state_dir(state)
    lock = _lock_state_dir(state)
    # Every connection and worker holds descriptors: take all the system allows.
    open_files = raise_open_file_limit()
    metrics = Metrics()
    try:
        store = open_store(state, config.sqlite_synchronous, metrics.observe_commit, database)
        await store.open()
    except sqlite3.DatabaseError as exc:
        lock.close()
        raise database_error(state / DB_FILENAME, exc) from None
    except DatabaseUnavailable as exc:
        lock.close()
        raise StartError(f"database: {exc}", EXIT_START_FAILED) from None
    worker_token = tokens.full.decode() if tokens.full else None
    registry = ApiRegistry(config, store, worker_token)
    joblogs = await _job_logs(config, database, state)
    pruner = Pruner(store, joblogs, config.retention_days)
    gpus = await asyncio.to_thread(detect_gpus, config)
    memory = await asyncio.to_thread(MemoryLimiter.for_daemon)
    log.info("worker memory limits", extra={"memory_limits": memory.choice.describe()})
    scheduler = Scheduler(
        config,
        store,
        registry.launch_for,
        registry.init_for,
        joblogs,
        gpus=gpus,
        memory=memory,
        metrics=metrics,
    )
    notifier = Notifier()
    stop_requested = asyncio.Event()

    def on_signal() -> None:
        # The first signal drains; a second one stops waiting for in-flight batches.
        if stop_requested.is_set():
            log.warning("second stop signal: killing workers now")
            scheduler.force_stop()
        stop_requested.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    runner: GuardedAppRunner | None = None
    watchdog = asyncio.create_task(notifier.watchdog(), name="systemd-watchdog")
    pruning = asyncio.create_task(pruner.run_forever(), name="retention")
    reporting: asyncio.Task[None] | None = None
    try:
        try:
            # Recovery reads every unfinished job: damage the header hid shows up here.
            await scheduler.start()
        except sqlite3.DatabaseError as exc:
            raise database_error(state / DB_FILENAME, exc) from None
        except NodeNameTaken as exc:
            raise StartError(str(exc), EXIT_START_FAILED) from None
        for directory in deploy_dirs:
            await _deploy_local(registry, config, directory)
        await registry.sweep_venvs()
        services = Services(config, store, registry, scheduler, joblogs, pruner, metrics)
        app = build_app(services, tokens)
        guard = ConnectionGuard(
            connection_cap(config.max_connections, config.max_workers, open_files),
            config.header_timeout,
        )
        runner = GuardedAppRunner(
            app,
            guard,
            shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT,
            access_log=None,
            keepalive_timeout=config.keepalive_timeout,
            # Bodies are decoded by read_body, in steps that stop at max_request_size.
            auto_decompress=False,
        )
        await runner.setup()
        await _start_site(runner, config)
        # The first status before READY=1: `systemctl start` returns with it shown.
        status = partial(_status_line, scheduler, store)
        sent = await notifier.send_status(status)
        notifier.notify("READY=1")
        reporting = asyncio.create_task(notifier.report_status(status, sent), name="sd-status")
        log.info(
            READY_MESSAGE,
            extra={
                "listen": config.listen,
                "state_dir": str(state),
                "url": config.base_url,
                "gpus": gpus,
            },
        )
        await stop_requested.wait()
        reporting.cancel()
        reporting = None
        notifier.notify("STOPPING=1")
        notifier.notify("STATUS=stopping: draining workers")
        log.info("stopping: draining workers")
    finally:
        joblogs.close_readers()
        try:
            if runner is not None:
                await runner.cleanup()
            await scheduler.stop()
        finally:
            # What the workers logged last is stored before the database is let go.
            await joblogs.close()
            # The store's threads would keep the process alive if it stayed open.
            await store.close()
        watchdog.cancel()
        pruning.cancel()
        if reporting is not None:
            reporting.cancel()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
    lock.close()
    log.info("batchd stopped")
    return 0


async def _status_line(scheduler: Scheduler, store: Store) -> str:
    """The jobs and workers as the scheduler holds them; the queue from one read."""
    queued, leased = await store.queue_depth()
    snapshot = scheduler.snapshot()
    return status_line(
        len(snapshot.active_jobs), queued, leased, len(snapshot.workers), snapshot.max_workers
    )


async def _job_logs(config: DaemonConfig, database: str | None, state: Path) -> JobLogs:
    """One file per job in the state dir; on a shared database, a table every node reads
    (docs/handler.md: Logs)."""
    if database is None:
        return JobLogFiles(state / "logs")
    from batchd.observe.pglogs import PostgresJobLogs

    return await PostgresJobLogs.open(database, config.node_name)


def _prepare_state_dir(state: Path) -> None:
    """The queue, the snapshots and the job logs are the service user's alone (0700).

    A state dir that belongs to someone else is refused: files that root once wrote
    there would break the unit's unprivileged daemon later, one EACCES at a time.
    """
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = state.stat()
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"state_dir: {state} belongs to uid {info.st_uid}, not to this daemon's user "
            f"(uid {os.geteuid()}); chown -R it to the user that runs batchd"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(state, 0o700)


def _lock_state_dir(state: Path) -> TextIO:
    """One daemon per state dir: two writers would break the one-writer design."""
    lock = (state / "daemon.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ConfigError(f"state_dir: another batchd is already using {state}") from None
    return lock


async def _start_site(runner: web.AppRunner, config: DaemonConfig) -> None:
    path = config.unix_socket
    if path is None:
        await web.TCPSite(runner, config.host, config.port, reuse_address=True).start()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # A socket file left by a daemon that was killed: nobody listens on it any more.
    path.unlink(missing_ok=True)
    await web.UnixSite(runner, str(path)).start()
    os.chmod(path, int(config.socket_mode, 8))
    if config.socket_group is not None:
        os.chown(path, -1, grp.getgrnam(config.socket_group).gr_gid)


async def _deploy_local(registry: ApiRegistry, config: DaemonConfig, directory: Path) -> None:
    try:
        archive = await asyncio.to_thread(pack_project, directory, config.max_project_size)
        deployments = await registry.deploy(archive)
    except DomainError as exc:
        raise SystemExit(f"cannot deploy {directory}: {exc.message}") from exc
    for deployed in deployments:
        where = {"api": deployed.record.name, "path": str(directory)}
        log.info(
            "deployed" if deployed.new else "deployed: unchanged",
            extra={**where, "version": deployed.record.version},
        )
        for warning in deployed.warnings:
            log.warning(warning, extra=where)


def run(config: DaemonConfig, deploy_dirs: Sequence[Path] = ()) -> int:
    try:
        tokens = load_tokens(config)
        check_exposure(config)
        return _run_loop(serve(config, deploy_dirs, tokens))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
