"""Waiting for background work with a bound that a misbehaving task cannot break."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["BackgroundTasks", "settle", "wait_while", "within"]

T = TypeVar("T")


async def wait_while(blocked: Callable[[], bool], changed: asyncio.Event,
                     seconds: float) -> bool:
    """Wait while ``blocked()`` is true, checking again each time ``changed`` is set
    (cleared before each wait), for at most ``seconds``; whether it ended unblocked."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while blocked():
        left = deadline - loop.time()
        if left <= 0:
            return False
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), left)
        except asyncio.TimeoutError:
            return not blocked()
    return True


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


async def within(work: Awaitable[T], seconds: float | None) -> T:
    """``await asyncio.wait_for(work, seconds)`` without its lost cancellation.

    Before Python 3.12, ``wait_for`` returns the result, and drops the cancellation,
    when its task is cancelled in the very loop turn in which ``work`` completed: a
    loop around it (a listener reading on until it is cancelled) then never ends,
    and whoever awaits it after cancelling waits forever. Here a cancellation always
    propagates (the result of ``work``, if it had one, is dropped with it); on a
    timeout ``work`` is cancelled, awaited, and :class:`asyncio.TimeoutError`
    raised."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait((task,), timeout=seconds)
    except BaseException:
        task.cancel()
        raise
    if not done:
        task.cancel()
        await asyncio.wait((task,))  # as wait_for: no work left running on a timeout
        if not task.cancelled():
            return task.result()  # it finished before it saw the cancellation
        raise asyncio.TimeoutError
    return task.result()


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
