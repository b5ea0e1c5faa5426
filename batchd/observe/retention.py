"""Months of uptime: finished jobs' batches, results, dead letters and logs are pruned
after the retention period, and the database gives the space back in small steps.

Below the HTTP layer, which serves ``/admin/prune`` and the disk use in ``/status`` from it;
the daemon runs :meth:`Pruner.run_forever`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from batchd import constants
from batchd.observe.joblogs import JobLogs
from batchd.store import DatabaseUnavailable
from batchd.store.roles import Store

log = logging.getLogger("batchd.retention")


@dataclass
class PruneReport:
    dry_run: bool
    retention_days: float
    jobs: list[str] = field(default_factory=list)
    rows_deleted: int = 0
    log_bytes: int = 0


class Pruner:
    def __init__(self, store: Store, joblogs: JobLogs, retention_days: float) -> None:
        self.store = store
        self.joblogs = joblogs
        self.retention_days = retention_days
        self._lock = asyncio.Lock()

    async def _retention_by_api(self) -> dict[str, float]:
        """An API's `[retention] days` (its latest version) overrides the daemon's."""
        return {
            api.name: float(days)
            for api in await self.store.list_apis()
            if (days := (api.spec.get("retention") or {}).get("days")) is not None
        }

    async def prune(self, dry_run: bool = False, now: float | None = None) -> PruneReport:
        now = now or time.time()
        by_api = await self._retention_by_api()
        shortest = min([self.retention_days, *by_api.values()])
        report = PruneReport(dry_run=dry_run, retention_days=self.retention_days)
        async with self._lock:
            for job in await self.store.prunable_jobs(now - shortest * 86400):
                days = by_api.get(job.api_name, self.retention_days)
                if job.end_time is None or job.end_time >= now - days * 86400:
                    continue
                report.jobs.append(job.job_id)
                report.log_bytes += await self.joblogs.size(job.job_id)
                if dry_run:
                    continue
                report.rows_deleted += await self.store.prune_job(job.job_id)
                await self.joblogs.remove(job.job_id)
            if report.jobs and not dry_run:
                await self._reclaim()
        return report

    async def _reclaim(self) -> None:
        # One step at a time, yielding between steps, so requests are never held up.
        while await self.store.reclaim_space(constants.VACUUM_STEP_PAGES) > 0:
            await asyncio.sleep(0)
        # In WAL mode the file shrinks when the freed pages are checkpointed.
        await self.store.checkpoint()

    async def run_forever(self) -> None:
        while True:
            # First pass after an interval, not at start-up: recovery comes first.
            await asyncio.sleep(constants.PRUNE_INTERVAL)
            try:
                report = await self.prune()
            except DatabaseUnavailable:
                pass  # the store logs an outage once; the next interval tries again
            except Exception:
                log.exception("pruning failed")
            else:
                if report.jobs:
                    log.info(
                        "pruned finished jobs",
                        extra={"jobs": len(report.jobs), "rows": report.rows_deleted},
                    )


def disk_usage(state_dir: Path) -> dict[str, int]:
    """Bytes used under the state dir, by part (blocking: walks the tree).

    Walked with a stack, not recursion (a handler can nest its workspace thousands of
    folders deep), and a folder that goes mid-walk (a workspace removed as its worker
    exits) or cannot be read is skipped: Path.rglob raised out of its walk for either."""
    usage = {"database": 0, "logs": 0, "apis": 0, "other": 0}
    # (folder, the state dir's entry it is under; "" for the state dir itself)
    stack = [(str(state_dir), "")]
    while stack:
        folder, top = stack.pop()
        try:
            entries = os.scandir(folder)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                part = top or entry.name
                if stat.S_ISDIR(info.st_mode):
                    stack.append((entry.path, part))
                elif stat.S_ISREG(info.st_mode):
                    usage[_usage_part(part)] += info.st_size
    usage["total"] = sum(usage.values())
    return usage


def _usage_part(top: str) -> str:
    if top.startswith(constants.DB_FILENAME):
        return "database"
    return top if top in ("logs", "apis") else "other"
