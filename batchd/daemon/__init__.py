"""The daemon's composition root: ``run`` builds the store, registry, scheduler, pool and
HTTP app from the config, runs them until a signal, and stops them in order.

Also what only the running process needs: ``logsetup`` (JSON logs), ``sdnotify`` (systemd
readiness and watchdog) and ``fdlimit`` (the open-file limit and the connection cap it allows).
It may import everything below it; nothing imports it but the CLI (``batchd serve``).
"""
