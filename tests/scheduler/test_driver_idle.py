"""Driver._idle with a store that fails: what it leaves behind, with plain fakes."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from batchd.scheduler.driver import Driver
from batchd.store import DatabaseUnavailable
from batchd.store.records import BatchCounts


class FailingClaimStore:
    async def counts(self, job_id: str) -> BatchCounts:
        return BatchCounts(0, 0, 3, 0, failed_attempts=0, average_time=None)

    async def claim_hook(self, job_id: str) -> Any:
        raise DatabaseUnavailable("the database is down")


def test_a_hook_claim_the_store_failed_leaves_the_hook_free_for_the_retry() -> None:
    driver = Driver.__new__(Driver)
    driver.config = SimpleNamespace(max_batches_per_worker=None)  # type: ignore[assignment]
    driver.jobs = SimpleNamespace(draining=False)  # type: ignore[assignment]
    driver.store = FailingClaimStore()  # type: ignore[assignment]
    run: Any = SimpleNamespace(
        job_id="job",
        job=SimpleNamespace(paused=0),
        finished=False,
        completing=None,
        hook_done=False,
        hook_elsewhere=False,
    )
    worker: Any = SimpleNamespace(exit_requested=False, batches_done=3, has_on_complete=True)
    with pytest.raises(DatabaseUnavailable):
        asyncio.run(driver._idle(run, worker))
    # _until_stored retries the message: its _idle must still find the hook free, not
    # taken by this worker (which would then exit and leave it to a new worker).
    assert run.completing is None
