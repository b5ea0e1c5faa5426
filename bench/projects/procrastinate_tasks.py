"""The procrastinate peer: the no-op handler as a procrastinate task, on the PostgreSQL
server of the scale section (the libpq URL comes from BENCH_PROCRASTINATE_DSN)."""

import os

from procrastinate import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ.get("BENCH_PROCRASTINATE_DSN", "")))


@app.task(name="noop")
def noop(payload):
    return None
