"""batchd.scheduler: runs jobs. It gives waiting jobs workers (allocator), runs each
worker's conversation and accounts for its exit (driver, hook), and decides grant sizes,
idling, the charges of a death and how a job ends (policy: pure functions). The daemon and
the HTTP layer see only the Scheduler facade (core); metrics and status read its snapshot.

May import: pool, observe, store, wire, worker.log, and config, constants, errors.
Nothing is imported here.
"""
