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

Once its websocket is open, a session whose driver can write a frame at once
(:class:`socketio_adapters.websocket.AiohttpWebSocket`, uncompressed, sets
:attr:`QueueSocket.write_now`) skips the queue while its writer waits on an empty
one: :meth:`QueueSocket.send` hands the packet's frame to the driver, which joins the
frames of one loop turn into one write, and the writer task is not woken. That is
the path of a session that gets one event at a time (a room's members, an emit
awaited each time). The order is kept: a packet goes through the queue whenever one
is queued or the writer is sending, and the driver writes its frames in the order
given. The writer's timeout (no packet for ``ping_interval + ping_timeout``, then
``QueueEmpty``) counts the packets written this way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket

__all__ = ["QueueSocket", "wait_without_tasks"]


class QueueSocket(AsyncSocket):  # type: ignore[misc]
    """python-engineio's session, waiting for its first packet without a task."""

    poll_limit: int | None = None
    """At most this many packets per poll (None: every packet queued)."""

    write_now: Callable[[str | bytes], bool] | None = None
    """Set by the websocket driver once its websocket is the session's transport (and
    cleared when it ends): writes one encoded packet's frame without waiting, or
    returns False (it cannot now: the packet goes through the queue, as it does when
    this raises)."""

    _writer_waiting = False
    """The websocket writer waits on the empty queue (:meth:`_next`)."""

    _written_at = 0.0
    """``time.monotonic()`` of the last packet written through :attr:`write_now`."""

    async def send(self, pkt: Any) -> None:
        write = self.write_now
        if write is None or pkt is None or not self._writes_now():
            await super().send(pkt)
            return
        if not await self.check_ping_timeout():
            return
        try:
            written = self._writes_now() and write(pkt.encode())
        except Exception:  # the writer meets it and closes the socket, as before
            written = False
        if written:
            self._written_at = time.monotonic()
        else:
            await self.queue.put(pkt)
        self.server.logger.info('%s: Sending packet %s data %s', self.sid,
                                eio_packet.packet_names[pkt.packet_type],
                                pkt.data if not isinstance(pkt.data, bytes)
                                else '<binary>')

    def _writes_now(self) -> bool:
        """Whether a packet may skip the queue: the writer waits on it, and it is
        empty (a packet put there since stays until the writer wakes: those after it
        must wait their turn)."""
        return self._writer_waiting and self.queue.empty()

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
        loop = asyncio.get_running_loop()
        timeout = self.server.ping_interval + self.server.ping_timeout
        timer: asyncio.TimerHandle

        def expire() -> None:
            nonlocal expired, timer
            # packets written past the queue count: wait on from the last of them
            left = self._written_at + timeout - time.monotonic()
            if left > 0:
                timer = loop.call_later(left, expire)
                return
            expired = True
            task.cancel()

        timer = loop.call_later(timeout, expire)
        # only the websocket writer polls once the session is upgraded (a long-poll
        # then gets a NOOP without polling)
        self._writer_waiting = bool(self.upgraded)
        try:
            return await self.queue.get()
        except asyncio.CancelledError:
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+
            if expired and uncancel is not None:
                uncancel()  # our own cancellation: nobody else asked for it
            raise eio_exceptions.QueueEmpty() from None
        finally:
            self._writer_waiting = False
            timer.cancel()


def wait_without_tasks(socket: Any) -> None:
    """Make ``socket`` (python-engineio's own session class, nothing else) a
    :class:`QueueSocket`."""
    if type(socket) is AsyncSocket:
        socket.__class__ = QueueSocket
