"""The huey peer: the same handlers as huey tasks, on SqliteHuey (WAL, fsync on commit, as
batchd's default sqlite_synchronous = "full"). The database file comes from BENCH_HUEY_DB."""

import os
import time

from huey import SqliteHuey

huey = SqliteHuey(
    "bench",
    filename=os.environ.get("BENCH_HUEY_DB", "huey.db"),
    journal_mode="wal",
    fsync=True,
    # The enqueuer and both workers contend for the write lock: wait, as batchd's store does.
    timeout=60,
)


@huey.task()
def noop(payload):
    # A value, so that huey's result store holds one row per finished task.
    return True


@huey.task()
def burn(payload, ms_per_item):
    seconds = ms_per_item / 1000
    for _ in payload:
        until = time.process_time() + seconds
        while time.process_time() < until:
            pass
    return True
