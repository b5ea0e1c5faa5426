"""batchd.pool: worker processes, node-local. The handle (``process``: spawn, the channel,
signals, wait), the spare interpreter started ahead of need (``spares``), a worker's output
as log records (``output``), how it died (``exits``), and what confines it: its workspace
(``workspace``), its memory (``memlimit``, ``cgroups``) and its GPUs (``gpus``).

Below the scheduler, which decides what a worker does; the pool only runs it. May import
store records, wire, the worker's logging format, config and constants; nothing above.
"""
