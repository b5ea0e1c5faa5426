"""batchd.observe: what users and operators read about the running daemon. Prometheus
metrics (``metrics``: fed by events, plus a scrape-time snapshot of the scheduler,
``snapshot``), the job logs (``joblogs``: written, tailed, followed; per-job files, or on
PostgreSQL a table every node reads, ``pglogs``) and retention
(``retention``: pruning finished jobs and their logs, disk usage).

Beside the pool, below the scheduler: it reads a :class:`~batchd.observe.snapshot.
SchedulerSnapshot` instead of importing the scheduler. May import the store, config and
constants; nothing above.
"""
