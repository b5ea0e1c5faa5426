"""``batchd migrate``: move a SQLite state dir's APIs and unfinished jobs to PostgreSQL
(the move itself is :mod:`batchd.store.migrate`). It runs only while no daemon uses the
state dir: it takes the daemon's own lock on it for the whole move."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from batchd.cli.exits import EXIT_USAGE, CliError
from batchd.cli.render import print_json
from batchd.constants import DB_FILENAME

if TYPE_CHECKING:
    from batchd.store.migrate import ArchiveOf
    from batchd.store.records import ApiRecord

# The file `batchd serve` holds an exclusive flock on while it runs (daemon/run.py).
DAEMON_LOCK = "daemon.lock"


def migrate(args: argparse.Namespace) -> int:
    state = Path(args.state_dir).resolve()
    source = state / DB_FILENAME
    if not source.is_file():
        raise CliError(f"{source}: no SQLite queue there (is {state} a batchd state dir?)")
    dsn = _target(args)
    try:
        import asyncpg

        from batchd.store import DatabaseUnavailable
        from batchd.store.migrate import Refused, migrate
    except ImportError as exc:
        raise CliError(
            f"{exc}: moving to PostgreSQL needs the postgres extra (pip install 'batchd[postgres]')"
        ) from None
    with _daemon_lock(state):
        try:
            moved = asyncio.run(migrate(source, dsn, _snapshot_archive(state)))
        except (Refused, DatabaseUnavailable) as exc:
            raise CliError(str(exc)) from None
        except sqlite3.Error as exc:
            raise CliError(f"cannot read the queue database {source}: {exc}") from None
        except asyncpg.PostgresError as exc:
            # The transaction rolled back.
            raise CliError(f"the database refused the move, nothing was moved: {exc}") from None
        except (asyncpg.InterfaceError, OSError) as exc:
            raise CliError(
                f"lost the database mid-move ({exc}): run it again (a move that did commit "
                "is refused, naming what the database holds)"
            ) from None
    if args.output == "json":
        return print_json(vars(moved))
    print(
        f"moved {len(moved.apis)} API(s) ({moved.versions} version(s)) and "
        f"{len(moved.jobs)} unfinished job(s) ({moved.batches} batch(es): {moved.queued} "
        f"queued, {moved.succeeded} succeeded, {moved.dead} dead; {moved.failures} failed "
        f"attempt(s)) to PostgreSQL"
    )
    if moved.refunded:
        print(f"{moved.refunded} batch(es) leased when the daemon stopped are queued again")
    if moved.finished_left:
        print(
            f"{moved.finished_left} finished job(s) stay in {source}: a daemon without "
            "`database` on this state dir still serves their results"
        )
    return 0


def _target(args: argparse.Namespace) -> str:
    """The PostgreSQL URL, read from --to-file by the daemon's database_file rules."""
    from batchd.config import DATABASE_SCHEMES, ConfigError, DaemonConfig

    if args.to is not None:
        if not args.to.startswith(DATABASE_SCHEMES):
            raise CliError("--to: must be a postgresql:// URL", EXIT_USAGE)
        return str(args.to)
    try:
        url = DaemonConfig(database=None, database_file=args.to_file).database_url()
    except ConfigError as exc:
        raise CliError(str(exc).replace("database_file:", "--to-file:"), EXIT_USAGE) from None
    assert url is not None, "a database_file gives a URL or an error"
    return url


@contextlib.contextmanager
def _daemon_lock(state: Path) -> Iterator[None]:
    """The state dir's daemon lock, held for the whole move: a running daemon refuses the
    move, and no daemon starts on the state dir until it is over."""
    path = state / DAEMON_LOCK
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
    except OSError as exc:
        raise CliError(f"cannot open {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CliError(f"a batchd daemon is running on {state}: stop it first") from None
        yield
    finally:
        os.close(descriptor)


def _snapshot_archive(state: Path) -> ArchiveOf:
    """The archive of a live API version, rebuilt from its snapshot folder and its row."""
    from batchd.apis.rebuild import NotRebuilt, rebuilt_archive
    from batchd.apis.registry import DIGEST_KEY, SNAPSHOT_KEY
    from batchd.errors import DomainError

    def archive_of(api: ApiRecord) -> bytes | None:
        if DIGEST_KEY not in api.spec:
            # Deployed before digests were kept: no node could check an archive of it.
            return None
        folder = state / "apis" / api.name / str(api.spec.get(SNAPSHOT_KEY))
        which = f"API {api.name} version {api.version}"
        if not folder.is_dir():
            raise CliError(f"{which}: its snapshot {folder} is missing")
        try:
            return rebuilt_archive(folder, api.spec, api.dotenv)
        except (NotRebuilt, DomainError, OSError) as exc:
            message = exc.message if isinstance(exc, DomainError) else str(exc)
            raise CliError(
                f"{which}: cannot rebuild its project from {folder}: {message}"
            ) from None

    return archive_of
