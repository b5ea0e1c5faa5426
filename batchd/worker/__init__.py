"""batchd.worker: the worker process (``python -m batchd.worker``) and what runs in it.

Owns the batch loop (``main``), loading and calling an API's Handler (``loading``, shared
with the deploy-time ``probe``), the process's confinement (``isolation``), the
handler's logger (``log``: ``batchd.logger``) and its ``metrics_client``
(``metrics_client``). ``cortex_path/`` is no package of batchd: Cortex's module names
(``cortex``, ``cortex_internal``), put on the path of the APIs that ask for them.

It runs under an API's own interpreter, which has none of the daemon's dependencies:
standard library only, and of batchd only ``batchd`` itself, ``batchd.constants``,
``batchd.wire`` and ``batchd.worker`` (tests/test_lifecycle.py checks what a real worker
loaded). Nothing is imported here: a handler's ``batchd.logger`` loads ``log`` alone.
"""
