"""Waiting for background work with a bound that a misbehaving task cannot break."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

__all__ = ["BackgroundTasks", "settle"]


async def settle(work: Awaitable[Any], seconds: float, logger: logging.Logger,
                 what: str) -> bool:
    """Wait at most ``seconds`` for ``work``; True if it finished. Unlike
    ``asyncio.wait_for``, this returns on time even when the work swallows its
    cancellation: it is cancelled, logged and left behind. Its errors are logged."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        logger.error("%s did not finish within %.1fs; abandoned", what, seconds)
        return False
    if not task.cancelled() and task.exception() is not None:
        logger.warning("%s failed: %r", what, task.exception())
    return True


class BackgroundTasks:
    """Tasks started on behalf of the cluster (handlers, callbacks) that nobody
    awaits: kept until they end, their failures logged, cancelled together."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.logger.error("cluster task failed", exc_info=task.exception())

    async def cancel(self, seconds: float, what: str) -> None:
        """Cancel every task and wait (at most ``seconds``) for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await settle(asyncio.gather(*tasks, return_exceptions=True), seconds,
                         self.logger, what)
