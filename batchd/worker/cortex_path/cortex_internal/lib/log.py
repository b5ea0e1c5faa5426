"""``from cortex_internal.lib.log import logger``: batchd's structured handler logger.

Its records are the job's log lines, with the job's labels, one JSON object each; the
keys of ``extra`` are flattened one level, as Cortex's were.
"""

from __future__ import annotations

from batchd.worker.log import logger

__all__ = ["logger"]
