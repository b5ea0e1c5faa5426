"""Group commit for any store: writes reported while a commit is under way wait for the
next one and share it, so a durable commit (an fsync) is paid once per group, not once
per write. Each writer returns once its own write is durable, told what it changed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Write = TypeVar("Write")

# Commits a group of writes in one transaction: how many rows each one changed.
CommitGroup = Callable[[list[Write]], Awaitable[list[int]]]


class GroupCommit(Generic[Write]):
    def __init__(self, commit: CommitGroup[Write]) -> None:
        self._commit = commit
        self._pending: list[tuple[Write, asyncio.Future[int]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, write: Write) -> int:
        """What `write` changed, once it is committed (with whatever joined its group)."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((write, done))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-commit")
        return await done

    async def drain(self) -> None:
        """Wait for the commits under way (a store closing)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            while self._pending:
                group, self._pending = self._pending, []
                try:
                    changed = await self._commit([write for write, _ in group])
                except Exception as exc:
                    for _, done in group:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for (_, done), count in zip(group, changed, strict=True):
                    if not done.done():
                        done.set_result(count)
        finally:
            self._task = None
