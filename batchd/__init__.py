"""batchd: Cortex-style Batch API jobs on one machine.

Kept free of heavy imports: handlers running under another interpreter import
``batchd`` (for ``batchd.client()`` and, later, ``batchd.logger``) without the
daemon's dependencies.
"""

from __future__ import annotations

__version__ = "0.1.0"
