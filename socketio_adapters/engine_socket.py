"""An engine.io session that waits for its packets without a task per wait.

python-engineio's session (``engineio.async_socket.AsyncSocket``) hands its packets to
the websocket writer, or to a long-poll, through ``poll()``, which waits for the first
one with ``asyncio.wait_for(queue.get(), ping_interval + ping_timeout)``. Before
Python 3.12, ``wait_for`` runs the wait in a task of its own: every time an idle
session gets a packet (every broadcast, for each of its recipients) a task is made,
scheduled and woken, about 8 µs of a node's CPU per recipient on this project's
2-core machine, more than the rest of the delivery to that socket.

:class:`QueueSocket` waits on the queue itself, with one timer for the same timeout;
what a poll returns, and when it gives up (:class:`engineio.exceptions.QueueEmpty`,
after the timeout or when cancelled), is python-engineio's. A session becomes one
(:func:`wait_without_tasks`) when :class:`socketio_adapters.AsyncServer` accepts
it, or when its websocket opens with this project's aiohttp driver
(:mod:`socketio_adapters.websocket`). Like :mod:`.polling` and cluster/local.py, a
module that touches python-engineio's internals (the session's ``queue``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from engineio import exceptions as eio_exceptions
from engineio.async_socket import AsyncSocket

__all__ = ["QueueSocket", "wait_without_tasks"]


class QueueSocket(AsyncSocket):  # type: ignore[misc]
    """python-engineio's session, waiting for its first packet without a task."""

    poll_limit: int | None = None
    """At most this many packets per poll (None: every packet queued)."""

    async def poll(self) -> list[Any]:
        queue = self.queue
        if queue.empty():
            first = await self._next()
        else:
            first = queue.get_nowait()
        queue.task_done()
        if first is None:
            return []
        packets = [first]
        limit = self.poll_limit
        while limit is None or len(packets) < limit:
            try:
                pkt = queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            queue.task_done()
            if pkt is None:
                queue.put_nowait(None)  # the end: the next poll sees it
                break
            packets.append(pkt)
        return packets

    async def _next(self) -> Any:
        """The next packet, as python-engineio waits for it: QueueEmpty after
        ``ping_interval + ping_timeout`` seconds without one, or when cancelled."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - poll() always runs in a task
            raise RuntimeError("poll() outside a task")
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = asyncio.get_running_loop().call_later(
            self.server.ping_interval + self.server.ping_timeout, expire)
        try:
            return await self.queue.get()
        except asyncio.CancelledError:
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+
            if expired and uncancel is not None:
                uncancel()  # our own cancellation: nobody else asked for it
            raise eio_exceptions.QueueEmpty() from None
        finally:
            timer.cancel()


def wait_without_tasks(socket: Any) -> None:
    """Make ``socket`` (python-engineio's own session class, nothing else) a
    :class:`QueueSocket`."""
    if type(socket) is AsyncSocket:
        socket.__class__ = QueueSocket
