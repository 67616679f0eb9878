"""A deadline on a task's waits, with one timer and no task of its own.

Before Python 3.12, ``asyncio.wait_for`` runs the awaited coroutine in a task of its
own: a new task for every wait, scheduled and woken, which is most of what it costs
to wait for an engine.io session's next packet or a websocket's next frame.
:class:`TaskDeadline` cancels the waiting task itself when its wait has lasted too
long, as ``asyncio.timeout`` does from Python 3.11 on, and one deadline serves any
number of waits (one timer, moved on only when it fires), so a session that reads
or writes thousands of packets arms one timer, not one per packet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = ["TaskDeadline"]


class TaskDeadline:
    """Ends a wait (``with deadline: await ...``) with :class:`asyncio.TimeoutError`
    once it has lasted ``seconds``, counted from its start, or from ``since()`` when
    that is later (activity that keeps the wait alive). Any other cancellation of the
    task goes through as :class:`asyncio.CancelledError`, even one that lands in the
    same loop turn as the expiry (as with ``asyncio.timeout``; before Python 3.11 a task
    keeps no count of its cancellations, and the two are one TimeoutError). After a
    TimeoutError the deadline serves the next wait as before. A plain context manager, so
    a wait makes no coroutine of its own either. Made, used and cancelled
    (:meth:`cancel`, once no wait is left) inside a running loop::

        deadline = TaskDeadline(45)
        try:
            while True:
                with deadline:
                    data = await ws.wait()  # TimeoutError after 45 s
                ...
        finally:
            deadline.cancel()
    """

    __slots__ = ("_began", "_cancelling", "_done", "_expired", "_loop", "_seconds",
                 "_since", "_task", "_timer")

    def __init__(self, seconds: float, since: Callable[[], float] | None = None) -> None:
        self._seconds = seconds
        self._since = since
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[Any] | None = None
        """The task waiting now (None between waits)."""
        self._began = 0.0
        self._cancelling = 0
        """The task's cancellation requests when its wait began (Python 3.11+)."""
        self._expired = False
        self._done = False
        self._timer = self._loop.call_later(seconds, self._expire)

    def __enter__(self) -> None:
        """A wait starts (in the running task; one at a time)."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - an await always runs in a task
            raise RuntimeError("a TaskDeadline is entered inside a task")
        self._task, self._began = task, time.monotonic()
        cancelling = getattr(task, "cancelling", None)  # Python 3.11+
        self._cancelling = cancelling() if cancelling is not None else 0

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        task, self._task = self._task, None
        if not self._expired or task is None:
            return  # anything else (somebody else's cancellation too) goes through
        self._expired = False
        if not self._done:  # the timer fired: the next wait needs one
            self._timer = self._loop.call_later(self._seconds, self._expire)
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+
        # take back our own request; a count above the one at the wait's start is
        # somebody else's, which goes through as CancelledError
        others = uncancel() > self._cancelling if uncancel is not None else False
        if exc_type is asyncio.CancelledError and not others:
            raise asyncio.TimeoutError() from None

    def cancel(self) -> None:
        """Stop the timer (the deadline is not used again)."""
        self._done = True
        self._timer.cancel()

    def _expire(self) -> None:
        task = self._task
        now = time.monotonic()
        began = self._began if task is not None else now
        if self._since is not None:
            began = max(began, self._since())
        left = began + self._seconds - now
        if task is None or left > 0:  # no wait, or one that is not due yet
            self._timer = self._loop.call_later(max(left, 0.0), self._expire)
            return
        self._expired = True
        task.cancel()
