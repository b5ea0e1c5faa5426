"""batchd: Cortex-style Batch API jobs on one machine.

Kept free of heavy imports: handlers running under another interpreter import
``batchd`` (for ``batchd.client()`` and ``batchd.logger``) without the daemon's
dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchd.client import Client


def client(url: str | None = None, token: str | None = None) -> Client:
    """A client for the daemon; inside a worker it already points at the daemon running it."""
    from batchd.client import client as make_client

    return make_client(url=url, token=token)


def __getattr__(name: str) -> object:
    # `from batchd import logger` loads the handler logger only when asked for; the version
    # likewise, so importing batchd alone loads nothing else of it.
    if name == "__version__":
        from batchd.constants import VERSION

        return VERSION
    if name == "logger":
        from batchd.worker.log import logger

        return logger
    raise AttributeError(f"module 'batchd' has no attribute {name!r}")
