"""How the CLI shows things to people: aligned tables, one job's details, a progress bar,
log lines, and short human forms of times and durations.

`rich` is imported inside the functions that draw with it, so importing this module is cheap.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from batchd.client import SERVE_HINT, Client, JobStatus, Record

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

# Wide enough that a table written to a pipe or file is never wrapped.
_UNWRAPPED_WIDTH = 10_000

# How a status is coloured on a terminal (never in a pipe, nor with NO_COLOR set).
STATUS_STYLES = {
    "pending": "yellow",
    "enqueuing": "yellow",
    "running": "cyan",
    "paused": "magenta",
    "succeeded": "green",
    "completed_with_failures": "yellow",
    "worker_error": "red",
    "worker_oom": "red",
    "timed_out": "red",
    "enqueue_failed": "red",
    "unexpected_error": "red",
    "stopped": "bright_black",
}
# The table column, and the key of a key-value listing, whose cells are statuses.
_STATUS_HEADER = "STATUS"
_STATUS_KEY = "status"


def make_console() -> Console:
    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(
        markup=False,
        highlight=False,
        emoji=False,
        width=None if tty else _UNWRAPPED_WIDTH,
    )


def print_table(header: list[str] | None, rows: Iterable[list[str]]) -> None:
    """Aligned columns two spaces apart; a header line when `header` is given."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False, show_header=header is not None)
    for name in header or []:
        table.add_column(name, header_style="bold")
    if header is None:
        table.add_column(style="bold")
        table.add_column()
    status_column = header.index(_STATUS_HEADER) if header and _STATUS_HEADER in header else None
    for row in rows:
        if header is None and row[0] == _STATUS_KEY:
            status_column = 1
        cells: list[str | Text] = list(row)
        if status_column is not None:
            cells[status_column] = styled_status(row[status_column])
        table.add_row(*cells)
        if header is None:
            status_column = None
    console = make_console()
    with console.capture() as captured:
        console.print(table)
    lines = captured.get().splitlines()
    sys.stdout.write("".join(line.rstrip() + "\n" for line in lines))


def styled_status(status: str) -> Text:
    from rich.text import Text

    return Text(status, style=STATUS_STYLES.get(status, ""))


class ReconnectNotice:
    """Says on `stream` (stderr) that the daemon is gone and the command reconnects: one
    line redrawn in place on a terminal; elsewhere a line when it starts and one when the
    daemon is back. Use it as a context: a line left on a terminal is ended on exit."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.shown = False

    def __call__(self, reason: str | None, left: float) -> None:
        if reason is None:
            if self.shown:
                self.stream.write("\r\x1b[K" if self.terminal else "batchd: reconnected\n")
            self.shown = False
        elif self.terminal:
            self.stream.write(f"\r\x1b[K{reconnecting(short_reason(reason), left)}")
        elif not self.shown:
            self.stream.write(f"batchd: {reconnecting(reason, left)}\n")
        if reason is not None:
            self.shown = True
        self.stream.flush()

    def __enter__(self) -> ReconnectNotice:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.shown and self.terminal:
            self.stream.write("\n")
            self.stream.flush()


def short_reason(reason: str) -> str:
    """The cause alone ("[Errno 111] Connection refused"), short enough for a line that
    is redrawn in place (one that wraps cannot be)."""
    return reason.rsplit(": ", 1)[-1]


def reconnecting(reason: str, left: float) -> str:
    # The hint is for the final error; a line redrawn while waiting stays short.
    reason = reason.partition(f"; {SERVE_HINT}")[0]
    return f"reconnecting… ({reason}; giving up in {format_seconds(left)})"


def print_json(value: Any) -> int:
    print(json.dumps(value, indent=2, ensure_ascii=False))
    return 0


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def size_text(count: int) -> str:
    """A byte count as people read it ("1.5 GiB"), the way deploy and prune print it."""
    # Imported here: packing loads tarfile and gzip, which most commands never need.
    from batchd.packing import human_size

    return human_size(count)


def dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def first_line(text: object) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0] if lines else "-"


def job_row(job: JobStatus, now: float) -> list[str]:
    metrics = job["batch_metrics"]
    return [
        job["job_id"],
        job["status"],
        f"{metrics['succeeded']}/{job['total_batch_count']}",
        str(metrics["failed"]),
        ago(job["start_time"], now),
        job_duration(job, now),
    ]


def print_job(status: JobStatus) -> None:
    now = time.time()
    metrics = status["batch_metrics"]
    workers = status.get("worker_counts") or {}
    busy = ", ".join(f"{count} {state}" for state, count in workers.items() if count)
    average = metrics.get("average_time_per_batch")
    pairs = [
        ("job id", status["job_id"]),
        ("api", f"{status['api_name']} (version {status['api_version']})"),
        ("status", status["status"]),
        (
            "batches",
            f"{metrics['succeeded']}/{status['total_batch_count']} succeeded, "
            f"{metrics['failed']} failed, {metrics.get('in_progress', 0)} in progress, "
            f"{status.get('batches_in_queue', 0)} queued",
        ),
        ("failed attempts", str(metrics.get("failed_attempts", 0))),
        ("time per batch", "-" if average is None else format_seconds(float(average))),
        ("workers", dash(status.get("workers")) + (f" ({busy})" if busy else "")),
        ("worker slots", slots_text(status.get("worker_details") or [])),
        ("started", f"{status['start_time']} ({ago(status['start_time'], now)})"),
        ("ended", "-" if status["end_time"] is None else f"{status['end_time']}"),
        ("duration", job_duration(status, now)),
        ("timeout", "-" if status.get("timeout") is None else f"{status['timeout']}s"),
        ("max receive count", dash(status.get("max_receive_count"))),
        ("priority", dash(status.get("priority"))),
        ("config", compact_json(status.get("config") or {})),
    ]
    if status.get("retry_of"):
        pairs.append(("retry of", status["retry_of"]))
    if status.get("error"):
        pairs.append(("error", str(status["error"]).rstrip()))
    print_table(None, [list(pair) for pair in pairs])


def slots_text(workers: list[dict[str, Any]]) -> str:
    shown = []
    for worker in workers:
        gpus = ",".join(map(str, worker.get("gpus") or [])) or "none"
        shown.append(f"slot {worker['slot']} pid {worker['pid']} {worker['state']} gpus {gpus}")
    return "; ".join(shown) or "-"


def slots_gpus(worker: dict[str, Any]) -> str:
    return ",".join(map(str, worker.get("gpus") or [])) or "-"


def watch_progress(
    client: Client, api: str, job_id: str, interval: float, console: Console
) -> JobStatus:
    """A rich progress bar until the job ends: live on a terminal; elsewhere one line
    each time the status or the count of finished batches changes."""
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.2f} batches/s" if speed else "- batches/s")

    live = console.is_terminal
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(compact=True),
        TextColumn("{task.fields[elapsed]}"),
        console=console,
        disable=not live,
        auto_refresh=live,
    )
    task = progress.add_task(job_id, total=None, failed=0, elapsed="")
    shown: tuple[str, int] | None = None
    notice = ReconnectNotice()

    def reconnect(reason: str | None, left: float) -> None:
        if not live:
            notice(reason, left)
        elif reason is not None:
            # The bar's own line says it: one line, redrawn.
            text = escape(reconnecting(short_reason(reason), left))
            progress.update(task, description=f"[yellow]{text}[/]")

    def update(status: JobStatus) -> None:
        nonlocal shown
        metrics = status["batch_metrics"]
        done = int(metrics["succeeded"]) + int(metrics["failed"])
        style = STATUS_STYLES.get(status["status"], "none")
        progress.update(
            task,
            description=f"[{style}]{status['status']}[/]",
            total=status["total_batch_count"] or None,
            completed=done,
            failed=metrics["failed"],
            elapsed=job_duration(status, time.time()),
        )
        if not live and shown != (status["status"], done):
            shown = (status["status"], done)
            console.print(progress.make_tasks_table(progress.tasks))

    with progress:
        return client.wait(
            api, job_id, poll_interval=interval, progress=update, on_reconnect=reconnect
        )


def log_line(record: Record) -> str:
    labels = record.get("labels") or {}
    parts = [str(record.get("asctime", "")), f"{record.get('levelname', '')!s:<8}"]
    if labels.get("batchID"):
        parts.append(f"[{labels['batchID']}]")
    parts.append(str(record.get("message", "")))
    line = " ".join(parts)
    if record.get("exc_info"):
        line += "\n" + str(record["exc_info"]).rstrip()
    return line


def parse_time(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def ago(iso: str | None, now: float) -> str:
    """ "3m ago": how long before `now` an ISO time was."""
    if not iso:
        return "-"
    seconds = max(0, int(now - parse_time(iso)))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def job_duration(job: JobStatus, now: float) -> str:
    if not job.get("start_time"):
        return "-"
    ended = parse_time(job["end_time"]) if job.get("end_time") else now
    return format_seconds(max(0.0, ended - parse_time(job["start_time"])))


def format_seconds(seconds: float) -> str:
    """ "420ms", "4.25s", "12.3s", "4m05s", "2h03m"."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole // 60 % 60:02d}m"
