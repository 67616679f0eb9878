"""The deadlines of ordered emits waiting for the broker: one timer for all of them
(the oldest deadline first), not a ``wait_for`` each, which under 100 concurrent
emitters cost more than the rest of the emit (see cluster/outbox.py)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

__all__ = ["EmitWatchdog"]


class EmitWatchdog:
    """Watches the futures of waiting emits, each with its deadline; when the oldest
    still waiting reaches it, calls ``expired(timeout)`` (which releases the
    waiters), then watches the next."""

    def __init__(self, expired: Callable[[float], None]) -> None:
        self._expired = expired
        self._deadlines: deque[tuple[float, float, asyncio.Future[bool]]] = deque()
        """(deadline, timeout, future) of the waiting emits, oldest first."""
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, future: asyncio.Future[bool], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self._deadlines.append((loop.time() + timeout, timeout, future))
        if self._timer is None:
            self._timer = loop.call_at(self._deadlines[0][0], self._check)

    def forget_answered(self) -> None:
        """Drop the answered ones at the front (they are answered in order)."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].done():
            deadlines.popleft()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        self.forget_answered()
        if not self._deadlines:
            return
        loop = asyncio.get_running_loop()
        deadline, timeout, _ = self._deadlines[0]
        if deadline <= loop.time():
            self._expired(timeout)
            self.forget_answered()
        if self._deadlines:
            self._timer = loop.call_at(self._deadlines[0][0], self._check)
