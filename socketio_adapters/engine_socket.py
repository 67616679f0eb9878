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
one: :meth:`QueueSocket.send` hands the packet's frame to the driver, which writes
the first frame of a loop turn at once and the rest of the turn's in one write, and
the writer task is not woken. That is
the path of a session that gets one event at a time (a room's members, an emit
awaited each time). The order is kept: a packet goes through the queue whenever one
is queued or the writer is sending, and the driver writes its frames in the order
given. The writer's timeout (no packet for ``ping_interval + ping_timeout``, then
``QueueEmpty``) counts the packets written this way.

A websocket session also runs with fewer tasks than python-engineio's
(``_websocket_handler``): python-engineio reads each packet the client sends in a
task of its own, waited for with ``asyncio.wait_for``, and sleeps until each ping in
another task; :class:`QueueSocket` reads in the connection's own task under one
:class:`socketio_adapters.deadline.TaskDeadline` and pings from a timer. A websocket
session is then three tasks (aiohttp's connection and request, engine.io's writer)
instead of five, with a sixth fewer objects for Python's cycle collector to walk
at each full collection (125 against 152 per socket, measured with 2,500 sockets).
The protocol is python-engineio's (the upgrade's probe and UPGRADE, the writer, the
end of the session when the client closes or is silent for ``ping_interval +
ping_timeout``), with three differences: a frame that is not an engine.io packet
closes the session, counted in :data:`BAD_FRAMES` and said in this module's log (the
first ten, then every thousandth: a client cannot flood it; python-engineio's handler
raised, and the session lingered until its ping timed out); an upgrade attempt that
stays silent ends after the same time (python-engineio's waited for ever); and an
upgrade whose probe fails leaves the session on long-polling able to upgrade again
(python-engineio's kept it "upgrading", answering its polls with NOOPs).
When python-engineio's methods were replaced on its class (python-socketio's Admin
UI, ``sio.instrument()``, wraps the handler and the ping to count packets), these
step aside and python-engineio's run, wrapped.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket

from .cluster.counters import Drops
from .deadline import TaskDeadline

__all__ = ["BAD_FRAMES", "QueueSocket", "engineio_replaced", "wait_without_tasks"]

_log = logging.getLogger(__name__)

BAD_FRAMES = Drops(_log, "a websocket session on a frame that is not an engine.io "
                         "packet or is too large")
"""Sessions closed on a bad frame from their client, counted over the process
(logged: the first ten, then every thousandth)."""

def engineio_replaced(name: str) -> bool:
    """Whether python-engineio's method ``name`` is replaced on its class now
    (python-socketio's Admin UI, ``sio.instrument()``, wraps the websocket handler and
    the ping to count packets, before or after this module is imported): our own
    versions then step aside."""
    method = AsyncSocket.__dict__.get(name)
    return not (inspect.isfunction(method)
                and method.__qualname__ == f"AsyncSocket.{name}")


class QueueSocket(AsyncSocket):  # type: ignore[misc]
    """python-engineio's session, waiting for its first packet without a task."""

    # python-engineio's session state (set in its __init__), as used here
    connected: bool
    upgraded: bool
    upgrading: bool
    closing: bool
    closed: bool
    last_ping: float | None

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
        if self.write_now is None or pkt is None or not self._writes_now():
            await super().send(pkt)
            return
        if not await self.check_ping_timeout():
            return
        self._put(pkt)

    def _put(self, pkt: Any) -> None:
        """Hand ``pkt`` to :attr:`write_now` if it may skip the queue and the driver
        takes it, else queue it (an exception from the driver included: the writer
        meets it and closes the socket); then log it as python-engineio's ``send``."""
        write = self.write_now
        written = False
        if write is not None and self._writes_now():
            try:
                written = write(pkt.encode())
            except Exception:  # the writer meets it and closes the socket, as before
                written = False
        if written:
            self._written_at = time.monotonic()
        else:
            self.queue.put_nowait(pkt)  # python-engineio's queue has no size limit
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
        ``ping_interval + ping_timeout`` seconds without one (packets written past
        the queue count), or when cancelled."""
        deadline = TaskDeadline(self.server.ping_interval + self.server.ping_timeout,
                                self._last_written)
        # only the websocket writer polls once the session is upgraded (a long-poll
        # then gets a NOOP without polling)
        self._writer_waiting = bool(self.upgraded)
        try:
            with deadline:
                return await self.queue.get()
        except (asyncio.TimeoutError, asyncio.CancelledError):
            raise eio_exceptions.QueueEmpty() from None
        finally:
            self._writer_waiting = False
            deadline.cancel()

    def _last_written(self) -> float:
        return self._written_at

    def schedule_ping(self) -> None:
        """python-engineio's ping cycle (a PING ``ping_interval`` after the client's
        PONG, once the previous PING was answered), with a timer where it starts a
        task that sleeps."""
        if engineio_replaced("_send_ping"):
            super().schedule_ping()
        elif self.last_ping:
            self.last_ping = None
            asyncio.get_running_loop().call_later(self.server.ping_interval, self._ping)

    def _ping(self) -> None:
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self._put(eio_packet.Packet(eio_packet.PING))

    async def _websocket_handler(self, ws: Any) -> None:
        """python-engineio's websocket session, reading in the connection's own task:
        the upgrade of a long-polling session (probe, then UPGRADE), the writer task,
        then every packet the client sends until it closes, sends what is not an
        engine.io packet, or is silent for ``ping_interval + ping_timeout``; then the
        session closes. python-engineio's starts a task for each packet it reads and
        waits for it with ``asyncio.wait_for``."""
        if engineio_replaced("_websocket_handler"):
            await super()._websocket_handler(ws)
            return
        deadline = TaskDeadline(self.server.ping_interval + self.server.ping_timeout)
        try:
            if self.connected:
                if not await self._upgrade_to(ws, deadline):
                    return
            else:
                self.connected = True
                self.upgraded = True
            writer = asyncio.ensure_future(self._write_to(ws))
            self.server.logger.info('%s: Upgrade to websocket successful', self.sid)
            await self._read_from(ws, deadline)
        finally:
            deadline.cancel()
        self.queue.put_nowait(None)  # the writer's end
        await writer
        await self.close(wait=False, abort=True,
                         reason=self.server.reason.TRANSPORT_CLOSE)

    async def _upgrade_to(self, ws: Any, deadline: TaskDeadline) -> bool:
        """Whether the client upgraded its session to ``ws``: it sends PING "probe",
        gets PONG "probe", then sends UPGRADE. Its long-poll gets a NOOP meanwhile."""
        self.upgrading = True  # a long-poll is answered with a NOOP from now on
        try:
            probe = await self._read_one(ws, deadline)
            if probe is None or probe.packet_type != eio_packet.PING \
                    or probe.data != "probe":
                self.server.logger.info('%s: Failed websocket upgrade, no PING packet',
                                        self.sid)
                return False
            try:
                await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
            except Exception:
                return False  # the websocket closed: the session stays on long-polling
            self.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))  # ends the poll
            done = await self._read_one(ws, deadline)
            if done is None or done.packet_type != eio_packet.UPGRADE:
                self.server.logger.info('%s: Failed websocket upgrade, expected UPGRADE '
                                        'packet, received %s instead.', self.sid,
                                        done and done.encode())
                return False
            self.upgraded = True
            return True
        finally:
            self.upgrading = False

    async def _read_one(self, ws: Any, deadline: TaskDeadline) -> Any:
        """The next packet ``ws`` brings, or None: closed, silent past the deadline,
        cancelled, too large or not an engine.io packet (said in the log)."""
        try:
            with deadline:
                data = await ws.wait()
        except (Exception, asyncio.CancelledError):
            return None  # closed, a read error, the deadline, the server stopping
        return self._packet_from(data)

    def _packet_from(self, data: str | bytes | None) -> Any:
        """The engine.io packet a frame holds, or None: no frame (the end), too
        large or not an engine.io packet (said in the log)."""
        if data is None:
            return None
        if len(data) > self.server.max_http_buffer_size:
            BAD_FRAMES.drop(f"session {self.sid}: a packet of {len(data)} bytes is over "
                            "max_http_buffer_size")
            return None
        try:
            return eio_packet.Packet(encoded_packet=data)
        except Exception:
            BAD_FRAMES.drop(f"session {self.sid}: not an engine.io packet "
                            f"({data[:40]!r})")
            return None

    async def _read_from(self, ws: Any, deadline: TaskDeadline) -> None:
        """Every packet the client sends, to python-engineio's ``receive`` (the read
        written out here, not a call to :meth:`_read_one`: one coroutine less for
        each session's life; and with this project's aiohttp driver, its
        ``receive_message`` awaited here rather than its ``wait``: one more)."""
        # a wrapped ``wait`` (as the Admin UI wraps ``send``) must see every read
        receive = None if "wait" in vars(ws) else getattr(ws, "receive_message", None)
        while True:
            try:
                with deadline:
                    if receive is None:
                        data = await ws.wait()
                    else:
                        data = (await receive()).data
            except (Exception, asyncio.CancelledError):
                return  # closed, a read error, the deadline, the server stopping
            if not isinstance(data, (bytes, str)):
                return  # closed, or an error frame (aiohttp's message holds no text)
            pkt = self._packet_from(data)
            if pkt is None:
                return
            try:
                await self.receive(pkt)
            except eio_exceptions.UnknownPacketError:
                pass
            except eio_exceptions.SocketIsClosedError:
                self.server.logger.info('Receive error -- socket is closed')
                return
            except asyncio.CancelledError:
                return  # the server stopping: the session closes
            except Exception:
                self.server.logger.exception('Unknown receive error')
            del data, pkt  # not held while waiting for the next one

    async def _write_to(self, ws: Any) -> None:
        """The writer task: every packet queued, in order, until the end (None), an
        error writing, or no packet for ``ping_interval + ping_timeout``."""
        while True:
            try:
                packets = await self.poll()
            except eio_exceptions.QueueEmpty:
                break
            if not packets:
                break
            try:
                for pkt in packets:
                    await ws.send(pkt.encode())
            except Exception:
                break
            del packets, pkt  # not held while waiting for the next ones
        try:
            await ws.close()
        except Exception:  # the connection is gone already
            self.server.logger.debug('%s: closing the websocket failed', self.sid,
                                     exc_info=True)


def wait_without_tasks(socket: Any) -> None:
    """Make ``socket`` (python-engineio's own session class, nothing else) a
    :class:`QueueSocket`."""
    if type(socket) is AsyncSocket:
        socket.__class__ = QueueSocket
