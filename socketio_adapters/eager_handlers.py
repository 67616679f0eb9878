"""The handlers of the events clients send, started at once: the part of
:class:`socketio_adapters.AsyncServer` that chooses which (see
:mod:`socketio_adapters.eager`) and keeps each client's events in the order they
arrive."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import socketio

from .eager import EAGER_TASKS, start_eagerly

__all__ = ["EagerHandlers"]


def _reported(future: asyncio.Future[Any]) -> asyncio.Future[Any]:
    """``future``, a handler's started at once, whose error (if its first step failed)
    the loop's exception handler gets now: python-socketio reads no handler's
    outcome, and its task, freed when done, has the loop report the error at once.
    Read here, it is not reported again when the future is freed."""
    if future.done() and not future.cancelled():
        error = future.exception()
        if error is not None:
            future.get_loop().call_exception_handler({
                "message": "Task exception was never retrieved",
                "exception": error, "future": future})
    return future


class EagerHandlers(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server, whose event handlers start at once, with no task
    unless they wait."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._unstarted: dict[str, int] = {}
        """Tasks made for event handlers whose first step has not run yet, by engine.io
        session (before Python 3.12; see :meth:`_not_started`)."""
        super().__init__(*args, **kwargs)

    def start_background_task(self, target: Callable[..., Any], *args: Any,
                              **kwargs: Any) -> asyncio.Future[Any]:
        """python-socketio's, but the handler of an event a client sent starts at
        once, with no task unless it waits (:mod:`socketio_adapters.eager`)."""
        if target != self._handle_event_internal:
            return super().start_background_task(target, *args, **kwargs)  # type: ignore[no-any-return]
        if self._eager(args):
            return _reported(start_eagerly(target(*args, **kwargs)))
        task: asyncio.Future[Any] = super().start_background_task(target, *args, **kwargs)
        self._not_started(args)
        return task

    def _eager(self, args: tuple[Any, ...]) -> bool:
        """Whether an event's handler may start in the caller's turn: any handler
        from Python 3.12, before only one python-socketio calls inline (a plain
        function, not a coroutine function or a namespace class), and only when no
        earlier event of the client waits for its task's first step: the events of
        a client start in the order they arrive."""
        if EAGER_TASKS:  # pragma: no cover - this project's machine runs 3.11
            return True
        try:
            _server, _sid, eio_sid, data, namespace, _id = args
            if eio_sid in self._unstarted:
                return False
            handler, _ = self._get_event_handler(data[0], namespace, data[1:])
        except Exception:  # python-socketio changed its internals: as it does
            return False
        return handler is not None and not inspect.iscoroutinefunction(handler)

    def _not_started(self, args: tuple[Any, ...]) -> None:
        """Count the task just made for an event's handler as not started until its
        first step has run: the callback queued now runs right after that step (the
        loop runs its callbacks in the order they were queued). Meanwhile
        :meth:`_eager` sends the client's next events to tasks too, which start after
        it."""
        if len(args) != 6:  # not python-socketio's arguments: _eager said no already
            return
        eio_sid = args[2]
        self._unstarted[eio_sid] = self._unstarted.get(eio_sid, 0) + 1
        asyncio.get_running_loop().call_soon(self._started, eio_sid)

    def _started(self, eio_sid: str) -> None:
        """The first step of one of the session's handler tasks has run; the session
        leaves :attr:`_unstarted` when none is left, so an ended one leaves nothing."""
        left = self._unstarted.pop(eio_sid, 1) - 1
        if left > 0:
            self._unstarted[eio_sid] = left
