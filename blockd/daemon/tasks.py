"""Owned background tasks and their cancellation (a task nobody references can be
garbage collected mid-flight; the daemons spawn through :class:`Tasks`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has finished (no-op for None)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Tasks:
    """Keeps references to background tasks so they are not garbage collected mid-flight."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def cancel_all(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        await self.drain()

    async def drain(self) -> None:
        """Wait for the tasks running now to finish (their errors are not raised)."""
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
