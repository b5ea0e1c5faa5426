"""The ``batchd`` command line: the parser (``parser``), one module of commands per group
(``commands/``: the daemon, APIs, jobs), and how results are shown to people (``render``).

The top layer: it may import anything in batchd. Only ``batchd serve`` and ``check-config``
import the daemon side (``batchd.daemon``, ``batchd.config``, ``batchd.pool``), inside the
command; every other command uses the standard-library client and imports `rich` only when it
prints a table or a progress bar, so a light command starts fast.
"""
