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
handlers get their task as before, and a plain handler of the client's next event
gets one too while that task has not started, so that events start in the order they
arrive.

:func:`step_as` runs a coroutine's first step from a callback as a step of a task
that waits meanwhile (the Redis subscriber's deliveries, started in the read callback
as steps of the listener task that ran them before; the task awaits the rest).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["EAGER_TASKS", "Continuation", "start_eagerly", "step_as"]

T = TypeVar("T")

EAGER_TASKS = sys.version_info >= (3, 12)
"""Whether asyncio starts a task eagerly itself (``eager_start``, Python 3.12+)."""


def start_eagerly(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Run ``coro`` now, up to its first wait: a done future if it finished (with its
    result or error), else a task that goes on from there. In a copy of the current
    context, as a task would run it (on Python 3.10, whose tasks take no context, the
    rest runs in a copy of its own: what the first step set there is not seen). An
    error of the first step nobody reads reaches the loop when the future is dropped,
    as a task's does."""
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
        return _failed(loop, exc)
    if sys.version_info >= (3, 11):
        return loop.create_task(_Resumed(coro, pending), context=context)
    return loop.create_task(_Resumed(coro, pending))  # pragma: no cover - 3.10


def _failed(loop: asyncio.AbstractEventLoop, exc: BaseException) -> asyncio.Future[T]:
    """A done future with the error of a first step (cancelled, for a cancellation),
    its traceback from the coroutine on, as a task's is. The dropped first entry,
    :func:`start_eagerly`'s frame, would hold the future and its callers' frames in a
    reference cycle: an error nobody reads would reach the loop when the cycle
    collector runs, not when the future is dropped, as a task's does."""
    failed: asyncio.Future[T] = loop.create_future()
    if isinstance(exc, asyncio.CancelledError):
        failed.cancel()
    elif exc.__traceback__ is not None:
        failed.set_exception(exc.with_traceback(exc.__traceback__.tb_next))
    else:  # pragma: no cover - a caught error has a traceback
        failed.set_exception(exc)
    return failed


def step_as(task: asyncio.Task[Any], coro: Coroutine[Any, Any, T]
            ) -> Continuation[T] | None:
    """Run ``coro`` now, up to its first wait, as a step of ``task`` (which waits, not
    running, meanwhile), in a copy of the current context: ``task`` is the current
    task there, so an ``asyncio.timeout`` there is ``task``'s. None if it finished
    (its error raised here); else the rest, for ``task`` to await (every step of it
    in that same context).

    For a reader that starts its deliveries in the loop's read callback where its
    own task ran them before: what a delivery reaches (an application's handler)
    sees the task it saw then. Enters the task with asyncio's own hooks
    (``_enter_task``, ``_leave_task``: what its eager tasks use on Python 3.12)."""
    if task.done():
        coro.close()
        raise RuntimeError(f"no step can run as {task!r}: it is done")
    loop = task.get_loop()
    context = contextvars.copy_context()
    try:
        _enter_task(loop, task)  # raises inside another running task
    except BaseException:
        coro.close()
        raise
    try:
        pending = context.run(coro.send, None)
    except StopIteration:
        return None
    finally:
        _leave_task(loop, task)
    return Continuation(coro, pending, context)


class _Resumed(Coroutine[Any, Any, T]):
    """The rest of ``coro``, for a task, from where its first step stopped. The task's
    first step gets what that step waits for (a future, or None for a bare yield);
    after that, what the task sends and throws goes to ``coro``. A cancellation before
    the task's first step does what cancelling a task that waits does: it cancels
    what ``coro`` waits for and the task waits for that to end, then ``coro`` gets
    its outcome (the cancellation, or a result if it would not be cancelled); with
    nothing to cancel, ``coro`` gets the cancellation at its wait. Its name, code and
    frame are ``coro``'s, for the task's repr and stack."""

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
            if _cancel_waited(pending, typ, val):
                # as a task that waits does: wait for what it waits for to end (a
                # task may take its time, or even return), then go on with that
                return pending
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)  # pragma: no cover - asyncio throws one

    def __getattr__(self, name: str) -> Any:
        """What asyncio's task repr, ``Task.get_stack()`` and debuggers read of a
        coroutine (its name, code, frame, what it awaits): the handler's."""
        if name in _SHOWN:
            return getattr(self._coro, name)
        raise AttributeError(name)

    def close(self) -> None:
        self._pending = None
        self._coro.close()

    def __await__(self) -> Generator[Any, None, T]:
        raise TypeError("the rest of a started coroutine runs as a task's, not awaited")


_SHOWN = frozenset({"__name__", "__qualname__", "cr_code", "cr_frame", "cr_running",
                    "cr_await"})
"""The attributes of a coroutine that :class:`_Resumed` shows as its own."""


class Continuation(Generator[Any, Any, T]):
    """The rest of a coroutine :func:`step_as` started, for its task to await: it
    first passes on what the first step waits for, then runs the coroutine, each step
    in the first step's context. :meth:`cancel` before it is awaited: the coroutine
    gets the cancellation at its wait (what it waits for is cancelled)."""

    __slots__ = ("_context", "_coro", "_pending", "_started")

    def __init__(self, coro: Coroutine[Any, Any, T], pending: Any,
                 context: contextvars.Context) -> None:
        self._coro = coro
        self._pending = pending
        self._context = context
        self._started = False

    def __await__(self) -> Generator[Any, Any, T]:
        return self

    def __iter__(self) -> Generator[Any, Any, T]:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        if not self._started:
            self._started = True
            pending, self._pending = self._pending, None
            if isinstance(pending, _Raise):
                return self._context.run(self._coro.throw, pending.error)
            return pending
        return self._context.run(self._coro.send, value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._started = True
        self._pending = None
        if val is None and tb is None:
            return self._context.run(self._coro.throw, typ)
        return self._context.run(self._coro.throw, typ, val, tb)  # pragma: no cover

    def close(self) -> None:
        self._pending = None
        self._context.run(self._coro.close)

    def cancel(self) -> None:
        if self._started:
            return
        if asyncio.isfuture(self._pending) and self._pending.cancel():
            return
        self._pending = _Raise(asyncio.CancelledError())


class _Raise:
    """What a :class:`Continuation` throws into its coroutine when first awaited."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _cancel_waited(pending: Any, typ: Any, val: Any) -> bool:
    """If ``throw(typ, val)`` throws a cancellation (an instance, or the class), cancel
    ``pending``, what the coroutine waits for, as cancelling a task that waits does
    (with the cancellation's message); whether that cancellation is under way."""
    exc = typ if isinstance(typ, BaseException) else val
    if isinstance(exc, asyncio.CancelledError):
        message = exc.args[0] if exc.args else None
    elif isinstance(typ, type) and issubclass(typ, asyncio.CancelledError):
        message = None
    else:
        return False
    return asyncio.isfuture(pending) and bool(pending.cancel(msg=message))
