"""systemd's notify protocol: one datagram per state change to $NOTIFY_SOCKET.

No library is needed for it. READY=1 is sent once recovery is done and the API
listens; WATCHDOG=1 from the event loop itself, so a blocked loop stops the pings
and systemd restarts the daemon; STOPPING=1 when the drain begins; STATUS= (what
`systemctl status` shows) with the jobs, the queue and the workers, when it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable

# STATUS= is sent at most this often (seconds), and only when it changed.
STATUS_INTERVAL = 1.0


class Notifier:
    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        # An abstract socket is written with a leading "@".
        self._address = "\0" + address[1:] if address.startswith("@") else address
        watchdog_usec = os.environ.get("WATCHDOG_USEC", "")
        watchdog_pid = os.environ.get("WATCHDOG_PID", "")
        mine = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_interval = (
            int(watchdog_usec) / 1_000_000 / 2 if watchdog_usec.isdigit() and mine else None
        )

    def notify(self, state: str) -> None:
        if not self._address:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(state.encode(), self._address)
            except OSError:
                # systemd gone or socket unreachable: nothing useful to do about it.
                return

    @property
    def active(self) -> bool:
        return bool(self._address)

    async def send_status(
        self, status: Callable[[], Awaitable[str]], sent: str | None = None
    ) -> str | None:
        """STATUS=`status()`, unless that is `sent` already; what was sent last."""
        if not self.active:
            return None
        with contextlib.suppress(Exception):  # the database down: said next time
            text = await status()
            if text != sent:
                self.notify(f"STATUS={text}")
                sent = text
        return sent

    async def report_status(self, status: Callable[[], Awaitable[str]], sent: str | None) -> None:
        """Send STATUS= whenever it changes, looking once per STATUS_INTERVAL."""
        while self.active:
            await asyncio.sleep(STATUS_INTERVAL)
            sent = await self.send_status(status, sent)

    async def watchdog(self) -> None:
        if self.watchdog_interval is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval)


def status_line(active_jobs: int, queued: int, leased: int, busy: int, max_workers: int) -> str:
    """e.g. "3 jobs active, 1,204 batches queued, 4 leased, 4/4 workers busy"."""
    jobs = "job" if active_jobs == 1 else "jobs"
    batches = "batch" if queued == 1 else "batches"
    return (
        f"{active_jobs:,} {jobs} active, {queued:,} {batches} queued, {leased:,} leased, "
        f"{busy}/{max_workers} workers busy"
    )
