"""Event handlers started at once, without a task when they need none.

python-socketio runs the handler of every event a client sends in a task of its own
(``async_handlers``, on by default, so that one slow handler does not hold up the
client's next packets): a task made, scheduled and run a loop turn later, for a
handler that is often a few lines that never wait. That task is a sixth of what a
node spends on an event it receives (measured: 22.7 to 25.4 against 18.5 to 21.0 µs of CPU
per event, one node, one client sending 20,000).

:func:`start_eagerly` runs a handler's first step at once, in the caller's turn, and
makes a task only if it has to wait; what it returns is a future like the task's.
Python 3.12's ``eager_start`` does that for any coroutine, with the handler its own
task from its first line. Before 3.12 there is no such task, and code run in that
first step sees the caller's task as ``asyncio.current_task()`` (an
``asyncio.timeout`` there would cancel the wrong task), so :class:`AsyncServer
<socketio_adapters.AsyncServer>` starts only the handlers that are plain functions
this way (python-socketio calls them inline; they cannot ``await``); coroutine
handlers get their task as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["EAGER_TASKS", "start_eagerly"]

T = TypeVar("T")

EAGER_TASKS = sys.version_info >= (3, 12)
"""Whether asyncio starts a task eagerly itself (``eager_start``, Python 3.12+)."""


def start_eagerly(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Run ``coro`` now, up to its first wait: a done future if it finished (with its
    result or error), else a task that goes on from there. In a copy of the current
    context, as a task would run it (on Python 3.10, whose tasks take no context, the
    rest runs in a copy of its own: what the first step set there is not seen)."""
    loop = asyncio.get_running_loop()
    if EAGER_TASKS:  # pragma: no cover - this project's machine runs 3.11
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg]
    context = contextvars.copy_context()
    try:
        pending = context.run(coro.send, None)
    except StopIteration as stop:
        done: asyncio.Future[T] = loop.create_future()
        done.set_result(stop.value)
        return done
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        failed: asyncio.Future[T] = loop.create_future()
        if isinstance(exc, asyncio.CancelledError):
            failed.cancel()
        else:
            failed.set_exception(exc)
        return failed
    if sys.version_info >= (3, 11):
        return loop.create_task(_Resumed(coro, pending), context=context)
    return loop.create_task(_Resumed(coro, pending))  # pragma: no cover - 3.10


class _Resumed(Coroutine[Any, Any, T]):
    """The rest of ``coro``, for a task, from where its first step stopped. The task's
    first step gets what that step waits for (a future, or None for a bare yield);
    after that, what the task sends and throws goes to ``coro``. A cancellation before
    the task's first step also reaches ``coro``, at its wait, and cancels what it
    waits for, as cancelling a task that waits does."""

    __slots__ = ("_coro", "_pending", "_started")

    def __init__(self, coro: Coroutine[Any, Any, T], pending: Any) -> None:
        self._coro = coro
        self._pending = pending
        self._started = False

    def send(self, value: Any) -> Any:
        if not self._started:
            self._started = True
            pending, self._pending = self._pending, None
            return pending
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if not self._started:
            self._started = True
            pending, self._pending = self._pending, None
            if isinstance(pending, asyncio.Future):
                pending.cancel()
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)  # pragma: no cover - asyncio throws one

    def close(self) -> None:
        self._pending = None
        self._coro.close()

    def __await__(self) -> Generator[Any, None, T]:
        raise TypeError("the rest of a started coroutine runs as a task's, not awaited")
