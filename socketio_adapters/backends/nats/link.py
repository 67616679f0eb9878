"""One nats-py client and what the parts of the NATS backend share about it.

nats-py keeps its connection (it reconnects by itself and subscribes again); a
:class:`Link` adds a future resolved when the connection drops, the confirmation of
a batch (a PING answered by a PONG), and the reply subject on which the stream's
acks of appended log records arrive (:class:`Acks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from ...options import redact
from ..base import Backend
from .naming import NatsNames

__all__ = ["Acks", "Link", "LinkEvents", "NatsBase", "connect", "server_name"]


class Acks:
    """The stream's acks of one batch of appended log records."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.count = 0
        """Records appended (known once the batch is written)."""
        self.received = 0
        self.last_seq = 0
        self.error: Exception | None = None
        self.done: asyncio.Future[None] = loop.create_future()
        self._written = False

    def sent(self) -> None:
        self._written = True
        self._check()

    def feed(self, msg: Msg) -> None:
        self.received += 1
        try:
            if (msg.headers or {}).get(api.Header.STATUS) == "503":  # no responders
                raise nats.js.errors.NoStreamResponseError
            answer = json.loads(msg.data)
            if "error" in answer:
                nats.js.errors.APIError.from_error(answer["error"])  # raises it
            self.last_seq = max(self.last_seq, int(answer["seq"]))
        except (ValueError, KeyError, TypeError, nats.errors.Error) as exc:
            if self.error is None:
                self.error = exc
        self._check()

    def _check(self) -> None:
        if self._written and self.received >= self.count and not self.done.done():
            self.done.set_result(None)


def server_name(nc: NatsClient) -> str:
    """host:port of the server ``nc`` is (or was last) connected to, for logs."""
    uri = nc.connected_url
    return f"{uri.hostname}:{uri.port}" if uri is not None else "the server"


async def written(nc: NatsClient, timeout: float) -> None:
    """Wait until what nats-py holds in its buffer now (publishes, SUBs, UNSUBs) is
    on the socket, or the connection is down, or ``timeout`` passed.

    nats-py's ``flush()`` writes its PING straight to the socket, ahead of what is
    still in that buffer: its PONG would then come back before the server saw those
    commands, and a subscription "confirmed" that way could miss the next message
    published to it. nats-py's flusher task writes the whole buffer each time it
    takes a request from its queue: an empty buffer means it was all written. If it
    is not empty after a few loop turns (the flusher waits for the socket to drain,
    or other tasks keep adding to it), a request queued here is done once everything
    buffered before it was written, whatever is added meanwhile. A flusher that
    stopped (the connection dropped) never answers it, hence the timeout.
    """
    for _ in range(8):  # the flusher usually writes it all within a turn or two
        if not nc.pending_data_size or not nc.is_connected:
            return
        await asyncio.sleep(0)
    flusher, queue = nc._flusher_task, nc._flush_queue
    if not nc.pending_data_size or not nc.is_connected or queue is None or (
            flusher is None or flusher.done()):
        return
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def queued() -> None:
        await queue.put(done)
        await done

    try:
        await asyncio.wait_for(queued(), timeout)
    except asyncio.TimeoutError:
        pass  # the PING that follows is not answered either: the caller hears of it


class _Client(NatsClient):
    """nats-py's client, with a PONG for a given-up PING taken in stride.

    nats-py (2.16) resolves the waiter of the oldest PING when a PONG arrives; when
    that waiter was cancelled (a ``flush()`` that timed out, or was cancelled), it
    raises InvalidStateError in its read loop, which then ends ("nats: encountered
    error") while the connection stays up: every subscription is deaf, no callback
    says so, and only the missing PONGs end it some pings later. Here such a PONG
    goes to a fresh waiter in its place, so the bookkeeping stays as nats-py has it.
    """

    async def _process_pong(self) -> None:
        pongs = self._pongs
        if pongs and pongs[0].done():
            pongs[0] = asyncio.get_running_loop().create_future()
        await super()._process_pong()


class Link:
    """One nats-py client, and a future that is resolved when its connection drops."""

    def __init__(self, nc: NatsClient, lost: asyncio.Future[None]) -> None:
        self.nc = nc
        self.lost = lost
        self.server = "the server"
        """host:port of the server it is (or was last) connected to, for logs."""
        self.js: JetStreamContext = nc.jetstream()
        self.stream_ready = False
        """The log stream was found or created on this connection."""
        self.kv: KeyValue | None = None
        self.writing = asyncio.Lock()
        """Held while a batch is handed to nats-py, which may yield meanwhile."""
        self.revived = asyncio.Event()
        """Set when nats-py reconnected (so the log reader replaces its consumer)."""
        self._acks: dict[str, Acks] = {}
        self._ack_prefix: str | None = None
        self._batches = itertools.count()

    async def expect(self, acks: Acks) -> str:
        """The reply subject for appends whose stream acks go to ``acks``."""
        if self._ack_prefix is None:
            prefix = self.nc.new_inbox()
            await self.nc.subscribe(f"{prefix}.*", cb=self._on_ack)
            self._ack_prefix = prefix
        token = str(next(self._batches))
        self._acks[token] = acks
        return f"{self._ack_prefix}.{token}"

    def forget(self, acks: Acks) -> None:
        self._acks = {k: v for k, v in self._acks.items() if v is not acks}

    async def _on_ack(self, msg: Msg) -> None:
        acks = self._acks.get(msg.subject.rpartition(".")[2])
        if acks is not None:
            acks.feed(msg)

    @property
    def live(self) -> bool:
        """nats-py is connected and said nothing of a drop since its last reconnect.
        Between a drop and its reconnected callback nats-py may already be connected
        again while :attr:`lost` is the old connection's, resolved: a wait on it
        would end at once."""
        return self.nc.is_connected and not self.lost.done()

    def lose(self) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def revive(self) -> None:
        """nats-py reconnected: a new future for the next drop."""
        self.lost = asyncio.get_running_loop().create_future()
        self.server = server_name(self.nc)
        self.revived.set()  # the log reader's consumer may be gone: replace it

    async def confirm(self, timeout: float) -> None:
        """Wait until the server has processed everything published so far (a PING
        answered by a PONG); raise a connection error if the connection drops first,
        since nats-py then forgets that PING."""
        nc, lost = self.nc, self.lost
        if lost.done():
            raise ConnectionError("nats connection lost before the server confirmed "
                                  "the batch")
        await written(nc, timeout)
        pong = asyncio.ensure_future(nc.flush(timeout))  # type: ignore[arg-type]
        try:
            await asyncio.wait((pong, lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not pong.done():
                pong.cancel()
                await asyncio.gather(pong, return_exceptions=True)
        if not pong.done() or pong.cancelled():
            raise ConnectionError("nats connection lost before the server confirmed "
                                  "the batch")
        pong.result()

    async def discard(self) -> None:
        self.lose()
        with contextlib.suppress(Exception):
            await self.nc.close()


class LinkEvents(Protocol):
    """What the owner of a link hears from nats-py."""

    def link_down(self, link: Link) -> None: ...
    def link_up(self, link: Link) -> None: ...
    def link_error(self, exc: Exception) -> None: ...
    def refusal(self, exc: BaseException) -> str | None: ...


async def connect(options: Mapping[str, Any], events: LinkEvents,
                  on_closed: Callable[[], None] | None) -> Link:
    """A client connected with nats-py's ``options``; nats-py then keeps it
    connected on its own, telling ``events``; ``on_closed`` is called when it closes
    for good. If the server refuses the credentials, or its certificate fails
    verification, while connecting, that error is raised at once (nats-py would retry
    until its attempts run out)."""
    nc = _Client()
    link = Link(nc, asyncio.get_running_loop().create_future())
    refused: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()
    connecting = True

    async def disconnected() -> None:
        link.lose()
        events.link_down(link)

    async def reconnected() -> None:
        link.revive()
        events.link_up(link)

    async def closed() -> None:
        link.lose()
        if on_closed is not None:
            on_closed()

    async def error(exc: Exception) -> None:
        if connecting and events.refusal(exc) is not None:
            if not refused.done():
                refused.set_result(exc)
            return
        events.link_error(exc)

    attempt = asyncio.ensure_future(nc.connect(
        **options, disconnected_cb=disconnected, reconnected_cb=reconnected,
        closed_cb=closed, error_cb=error))
    try:
        await asyncio.wait((attempt, refused), return_when=asyncio.FIRST_COMPLETED)
        if refused.done():
            raise refused.result()
        attempt.result()
    except BaseException:
        attempt.cancel()
        await asyncio.gather(attempt, return_exceptions=True)
        await link.discard()
        raise
    finally:
        connecting = False
    link.server = server_name(nc)
    return link


class NatsBase(Backend):
    """What the parts of the NATS backend share: the current link and the names."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.names = NatsNames.of(self.channel)
        self._link: Link | None = None
        self._order = asyncio.Lock()
        """Held while a payload or log record is delivered, so one goes at a time."""

    @property
    def where(self) -> str:
        """The URL, redacted, for logs."""
        return redact(self.url)

    def ready_link(self) -> Link:
        """The connected link; a connection error when there is none."""
        link = self._link
        if link is None or link.nc.is_closed:
            raise ConnectionError("nats backend is not connected")
        return link
