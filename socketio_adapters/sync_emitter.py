"""SyncEmitter: emit to a cluster's clients from code that is not async (a Celery task,
a Django view, a cron script), through the same broker URL as its servers.

>>> with SyncEmitter("redis://127.0.0.1:6379/0") as emitter:
...     emitter.emit("job", {"id": 7}, to="room")

It runs an :class:`~socketio_adapters.emitter.Emitter` on an event loop of its own, in
a daemon thread started on first use (so one built at import time in a process that
forks, such as a Celery prefork worker, connects in each child). ``emit`` returns once
the broker has the message, so a script may exit right after it; several threads may
emit at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from .cluster import Room
from .emitter import Emitter, create_emitter
from .errors import NotStarted

__all__ = ["SyncEmitter"]

T = TypeVar("T")
_STOP_SECONDS = 30.0
"""Bound on stopping the emitter through its loop (the manager's stop is bounded)."""
log = logging.getLogger("socketio_adapters.emitter")


class _LoopThread:
    """An event loop in a daemon thread, which never holds up interpreter exit."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=_serve, args=(self.loop,), daemon=True,
                                       name="socketio-adapters-emitter")
        self.thread.start()

    def run(self, work: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``work`` on the loop; its result or its exception, in this thread."""
        try:
            future = asyncio.run_coroutine_threadsafe(work, self.loop)
        except BaseException:
            work.close()
            raise
        return future.result(timeout)


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


_halting: set[asyncio.Task[None]] = set()


async def _stop_then_halt(emitter: Emitter, loop: asyncio.AbstractEventLoop) -> None:
    try:
        await emitter.manager.stop()
    finally:
        loop.stop()


def _shutdown(runner: _LoopThread, emitter: Emitter) -> None:
    """Stop the emitter and its loop: from ``close()``, or when the SyncEmitter is
    garbage-collected or the interpreter exits without it being closed."""
    if os.getpid() != runner.pid or not runner.thread.is_alive():
        return  # a forked child: that thread belongs to the parent
    if threading.current_thread() is runner.thread:  # collected inside its own loop
        task = runner.loop.create_task(_stop_then_halt(emitter, runner.loop))
        _halting.add(task)
        task.add_done_callback(_halting.discard)
        return
    try:
        runner.run(emitter.manager.stop(), _STOP_SECONDS)
    except Exception as exc:
        log.warning("emitter did not stop cleanly: %r", exc)
    finally:
        runner.loop.call_soon_threadsafe(runner.loop.stop)
        runner.thread.join(_STOP_SECONDS)


class SyncEmitter:
    """Emit to a cluster's clients from synchronous code.

    :param url: the broker URL of the servers (``redis://``, ``nats://``, ...;
        default: as :func:`~socketio_adapters.create_manager`).
    :param timeout: seconds :meth:`emit` waits for the broker to take a message
        before it raises :class:`~socketio_adapters.EmitTimeout` (the message stays
        queued and is sent if the broker returns before :meth:`close`).
    :param options: :func:`~socketio_adapters.create_manager`'s options, such as
        ``channel``, ``connect_timeout`` (how long the first :meth:`emit` waits to
        connect before it raises :class:`~socketio_adapters.BrokerUnavailable`, on
        backends that connect an emitter when it starts; see docs/README.md) and
        ``connection_state_recovery``, which an emitter of servers that recover
        sessions must set like them, so its events get offsets and a client that was
        away gets them back.

    Errors raised on the emitter's loop are raised in the calling thread. Call
    :meth:`close` (or use ``with``) when done; one left open is closed when it is
    garbage-collected or at interpreter exit. In async code use
    ``async with create_emitter(url)``: this class blocks the calling thread, and an
    event loop running there, for a round trip to the broker. The ``memory://``
    backend only reaches managers on the same event loop, so not from here.
    """

    def __init__(self, url: str | None = None, *, timeout: float = 10.0,
                 **options: Any) -> None:
        self._url, self._timeout, self._options = url, timeout, options
        self._emitter = create_emitter(url, timeout=timeout, **options)  # checks them
        self._lock = threading.Lock()
        self._runner: _LoopThread | None = None
        self._finalizer: weakref.finalize[[_LoopThread, Emitter], SyncEmitter] | None = None
        self._closed = False
        _live.add(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        """Connect now (the first :meth:`emit` does it otherwise); raises
        :class:`~socketio_adapters.BrokerUnavailable` after ``connect_timeout``."""
        self._ready()

    def emit(self, event: str, data: Any = None, to: Room = None, room: Room = None,
             skip_sid: Room = None, namespace: str | None = None) -> None:
        """Emit to every client, a room, several rooms (union) or one sid, on every
        node; ``skip_sid`` takes sids or rooms to leave out. ``data`` is one argument,
        a tuple of several, or None for none. Returns once the broker has the
        message; raises :class:`~socketio_adapters.EmitTimeout` after ``timeout``,
        :class:`~socketio_adapters.EmitFailed` if it was dropped."""
        runner = self._ready()
        runner.run(self._emitter.emit_and_wait(event, data, to=to, room=room,
                                               skip_sid=skip_sid, namespace=namespace))

    def stats(self) -> dict[str, Any]:
        """The emitter's counters (published, queued, dropped; see
        :meth:`ClusterManager.stats`)."""
        return self._emitter.manager.stats()

    def close(self) -> None:
        """Wait until the broker has every message, then disconnect and end the
        thread. Safe to call twice; an emitter cannot be used after it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            runner, finalizer = self._runner, self._finalizer
        if runner is None or finalizer is None:
            return
        error: Exception | None = None
        if threading.current_thread() is not runner.thread and runner.pid == os.getpid():
            try:
                runner.run(self._emitter.close())
            except Exception as exc:
                error = exc
        finalizer()
        if error is not None:
            raise error

    def __enter__(self) -> SyncEmitter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if error is None:
            self.close()
            return
        try:  # what was emitted before the error is still sent
            self.close()
        except Exception as failure:  # the block's own error is the one to raise
            log.warning("emitter closed after %r: %s", error, failure)

    def _ready(self) -> _LoopThread:
        """The running loop with the emitter started (starting both if needed)."""
        runner = self._runner
        if runner is not None and threading.current_thread() is runner.thread:
            raise RuntimeError(
                "a SyncEmitter was called from its own event loop's thread, where it "
                "would wait for itself; in async code use "
                "`async with socketio_adapters.create_emitter(url)`")
        with self._lock:
            if self._closed:
                raise NotStarted("this SyncEmitter is closed")
            runner = self._runner
            if runner is None:
                runner = self._runner = _LoopThread()
                self._finalizer = weakref.finalize(self, _shutdown, runner, self._emitter)
            if not self._emitter.manager.started:
                runner.run(self._emitter.start())
            return runner

    def _forked(self) -> None:
        """In a child process: the parent's thread and connections are not ours."""
        self._lock = threading.Lock()
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._runner is not None:
            self._runner = self._finalizer = None
            self._emitter = create_emitter(self._url, timeout=self._timeout,
                                           **self._options)


_live: weakref.WeakSet[SyncEmitter] = weakref.WeakSet()


def _after_fork() -> None:
    for emitter in list(_live):
        emitter._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
