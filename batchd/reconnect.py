"""Riding out a daemon that went away (standard library only, below the client).

A client that waits on a job (``Client.wait``, a followed log) keeps going through a daemon
restart, a refused connection or a 503: it tries again after a delay that doubles from
`FIRST_DELAY` up to `MAX_DELAY`, drawn at random from its upper half so that many waiters
do not come back in step, never sooner than the daemon's ``Retry-After``, and gives up once
the daemon has been gone for the reconnect timeout.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

DEFAULT_RECONNECT_TIMEOUT = 300.0
ENV_RECONNECT_TIMEOUT = "BATCHD_RECONNECT_TIMEOUT"
FIRST_DELAY = 0.2
MAX_DELAY = 5.0
# HTTP statuses that mean "the daemon (or a proxy before it) cannot serve now": waited out.
# 0 is the client's own "could not reach it".
TRANSIENT_STATUSES = frozenset({0, 502, 503, 504})

# Told `(reason, seconds left)` before each wait, and `(None, 0)` once the daemon is back.
Notify = Callable[[str | None, float], object]


def reconnect_timeout(value: float | None = None) -> float:
    """`value`, else ``BATCHD_RECONNECT_TIMEOUT``, else the default: seconds >= 0."""
    if value is None:
        raw = os.environ.get(ENV_RECONNECT_TIMEOUT, "").strip()
        if not raw:
            return DEFAULT_RECONNECT_TIMEOUT
        try:
            value = float(raw)
        except ValueError:
            message = f"{ENV_RECONNECT_TIMEOUT} must be a number of seconds, not {raw!r}"
            raise ValueError(message) from None
    if not value >= 0:
        raise ValueError(f"the reconnect timeout must be >= 0 seconds, not {value}")
    return value


class Outage:
    """One stretch without the daemon: when it began, how many tries it took so far."""

    def __init__(
        self,
        timeout: float,
        notify: Notify | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        deadline: float | None = None,
    ) -> None:
        self.began: float | None = None
        self.tries = 0
        self.timeout = timeout
        # A `clock` time past which no wait goes, however long the outage has lasted.
        self.deadline = deadline
        self._notify, self._sleep, self._clock = notify, sleep, clock

    @property
    def limit(self) -> float:
        """How long this outage may last: the timeout, cut short by the deadline."""
        if self.deadline is None or self.began is None:
            return self.timeout
        return min(self.timeout, self.deadline - self.began)

    def wait(self, reason: str, retry_after: float | None = None) -> bool:
        """Sleep before the next try; False (at once) when the daemon has been gone for
        the whole timeout."""
        now = self._clock()
        if self.began is None:
            self.began = now
        left = self.timeout - (now - self.began)
        if self.deadline is not None:
            left = min(left, self.deadline - now)
        if left <= 0:
            return False
        delay = min(MAX_DELAY, FIRST_DELAY * 2**self.tries)
        self.tries += 1
        delay = random.uniform(delay / 2, delay)
        if retry_after is not None:
            delay = max(delay, retry_after)
        if self._notify is not None:
            self._notify(reason, left)
        self._sleep(min(delay, left))
        return True

    def over(self, backoff_too: bool = True) -> None:
        """The daemon answered: the next failure starts a new outage. `backoff_too`
        False keeps the delay growing (the daemon answers but has nothing for us yet)."""
        if self.began is not None and self._notify is not None:
            self._notify(None, 0.0)
        self.began = None
        if backoff_too:
            self.tries = 0
