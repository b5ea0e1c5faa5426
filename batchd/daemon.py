"""`batchd serve`: wire the store, registry, scheduler and HTTP API, run until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from batchd.apis import ApiRegistry
from batchd.config import ConfigError, DaemonConfig
from batchd.errors import ApiError
from batchd.gpus import detect_gpus
from batchd.http.app import Services, build_app
from batchd.http.auth import Tokens, load_tokens
from batchd.joblogs import JobLogs
from batchd.project import pack_project
from batchd.retention import Pruner
from batchd.scheduler import Scheduler
from batchd.sdnotify import Notifier
from batchd.store import open_store

log = logging.getLogger("batchd.daemon")

# In-flight HTTP requests get this long to finish once the daemon stops.
HTTP_SHUTDOWN_TIMEOUT = 5.0


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def check_exposure(config: DaemonConfig, tokens: Tokens) -> None:
    """Anyone who can reach the API can run code as batchd: off loopback, demand a token."""
    if config.host not in LOOPBACK_HOSTS and tokens.full is None:
        raise ConfigError(
            f"listen: refusing to listen on {config.listen} without authentication; "
            "set token_file (or listen on 127.0.0.1)"
        )


async def serve(
    config: DaemonConfig, deploy_dirs: Sequence[Path] = (), tokens: Tokens | None = None
) -> int:
    tokens = tokens or Tokens(None, None)
    state = config.state_path
    state.mkdir(parents=True, exist_ok=True)
    store = open_store(state, config.sqlite_synchronous)
    await store.open()
    worker_token = tokens.full.decode() if tokens.full else None
    registry = ApiRegistry(config, store, worker_token)
    joblogs = JobLogs(state / "logs")
    pruner = Pruner(store, joblogs, config.retention_days)
    gpus = await asyncio.to_thread(detect_gpus, config)
    scheduler = Scheduler(config, store, registry.launch_for, registry.init_for, joblogs, gpus=gpus)
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
    runner: web.AppRunner | None = None
    watchdog = asyncio.create_task(notifier.watchdog(), name="systemd-watchdog")
    pruning = asyncio.create_task(pruner.run_forever(), name="retention")
    try:
        await scheduler.start()
        for directory in deploy_dirs:
            await _deploy_local(registry, config, directory)
        app = build_app(Services(config, store, registry, scheduler, joblogs, pruner), tokens)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
        await site.start()
        notifier.notify("READY=1")
        log.info(
            "batchd ready",
            extra={
                "listen": config.listen,
                "state_dir": str(state),
                "url": config.base_url,
                "gpus": gpus,
            },
        )
        await stop_requested.wait()
        notifier.notify("STOPPING=1")
        log.info("stopping: draining workers")
    finally:
        joblogs.close_readers()
        try:
            if runner is not None:
                await runner.cleanup()
            await scheduler.stop()
        finally:
            # The store's threads would keep the process alive if it stayed open.
            await store.close()
        watchdog.cancel()
        pruning.cancel()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
    log.info("batchd stopped")
    return 0


async def _deploy_local(registry: ApiRegistry, config: DaemonConfig, directory: Path) -> None:
    try:
        archive = await asyncio.to_thread(pack_project, directory, config.max_project_size)
        api, new = await registry.deploy(archive)
    except ApiError as exc:
        raise SystemExit(f"cannot deploy {directory}: {exc.message}") from exc
    log.info(
        "deployed" if new else "deployed: unchanged",
        extra={"api": api.name, "version": api.version, "path": str(directory)},
    )


def run(config: DaemonConfig, deploy_dirs: Sequence[Path] = ()) -> int:
    try:
        tokens = load_tokens(config)
        check_exposure(config, tokens)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(config, deploy_dirs, tokens))
    return uvloop.run(serve(config, deploy_dirs, tokens))
