"""systemd's notify protocol: one datagram per state change to $NOTIFY_SOCKET.

No library is needed for it. READY=1 is sent once recovery is done and the API
listens; WATCHDOG=1 from the event loop itself, so a blocked loop stops the pings
and systemd restarts the daemon; STOPPING=1 when the drain begins.
"""

from __future__ import annotations

import asyncio
import os
import socket


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

    async def watchdog(self) -> None:
        if self.watchdog_interval is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval)
