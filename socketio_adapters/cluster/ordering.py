"""Ordered emits: an emit whose ``await`` returned is delivered, at every client,
before any emit that starts afterwards on any node.

Publishing waits until the broker accepted the message (the outbox's group commit:
concurrent emits share one round trip). That orders what other nodes receive, but a
node delivers its own emits to its own clients itself, while a message another node
got accepted just before may still be on its way here. So before its local delivery
a node makes sure its subscription caught up: when the emit starts it sends a marker
(``SYNC``) to itself through the broker, in the same batch as the message, and waits
for the marker to come back; the broker hands this node everything it accepted
before the marker first, so every emit that returned before this one started.
Emits waiting in the same event-loop turn share one marker; an emit that selects none of
this node's clients sends none (it has nothing to deliver here).
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from ..errors import AdapterError
from ..protocol import MessageType, Sync
from .publisher import Publisher

__all__ = ["SelfSync"]


class SelfSync:
    """Waits until this node's subscription has read what the broker accepted so far
    (see the module doc). A marker that does not come back within ``timeout`` is
    logged and the wait ends: the caller delivers anyway, out of order at worst."""

    def __init__(self, uid: str, publisher: Publisher, timeout: float,
                 logger: logging.Logger) -> None:
        self.uid = uid
        self.publisher = publisher
        self.timeout = timeout
        self.logger = logger
        self._next: asyncio.Future[None] | None = None
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._echoes: dict[int, asyncio.Future[None]] = {}
        self._markers = itertools.count(1)
        self._echo_markers = itertools.count(1)
        self.late = 0
        """Markers that did not come back in time."""

    @property
    def waiting(self) -> bool:
        return bool(self._waiting or self._echoes)

    def mark(self) -> asyncio.Future[None]:
        """Queue a marker now (emits of one event-loop turn share it); its future
        completes when it comes back. Queued before the caller's message, in the same
        batch: one round trip for both."""
        future = self._next
        if future is not None:
            return future
        loop = asyncio.get_running_loop()
        future = self._next = loop.create_future()
        loop.call_soon(self._turn_ended)
        # one timer per marker, not per waiting emit (a wait_for each cost more than
        # the rest of an emit under 100 concurrent emitters)
        expiry = loop.call_later(self.timeout, self._expire, future)
        future.add_done_callback(lambda _: expiry.cancel())
        marker = next(self._markers)
        try:
            self.publisher.publish(MessageType.SYNC, "/", Sync(marker), target=self.uid)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: each waiter handles it in caught_up
            return future
        self._waiting[marker] = future
        if len(self._waiting) > 1000:  # markers lost (an outage): forget the oldest
            for old in list(self._waiting)[:500]:
                forgotten = self._waiting.pop(old)
                if not forgotten.done():
                    forgotten.set_result(None)
        return future

    def echo(self) -> asyncio.Future[None]:
        """Send a marker before anything queued (even while the outbox is held after
        an outage); its future completes when it comes back, which proves this node's
        subscription hears again, and nothing else: it overtook what is queued. Cancel
        the future to forget a marker that did not come back."""
        marker = -next(self._echo_markers)  # below 0: never taken for an emit's marker
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.publisher.publish_urgent(MessageType.SYNC, Sync(marker), target=self.uid)
        self._echoes[marker] = future
        future.add_done_callback(lambda _: self._echoes.pop(marker, None))  # cancelled
        return future

    async def caught_up(self, future: asyncio.Future[None]) -> None:
        """Return once the marker of :meth:`mark` came back (or its timeout)."""
        try:
            await asyncio.shield(future)  # shared by the emits of one turn
        except (AdapterError, ConnectionError):
            pass  # not sent (the manager stops, the outbox is full): deliver anyway

    def _expire(self, future: asyncio.Future[None]) -> None:
        """A marker's timeout: its emits deliver to this node's clients anyway."""
        if future.done():
            return
        self.late += 1
        if self.late == 1 or self.late % 100 == 0:
            self.logger.warning(
                "ordered emit: this node's marker did not come back through the "
                "broker within %ss (%d times so far); delivering to this node's "
                "clients anyway", self.timeout, self.late)
        future.set_result(None)

    def _turn_ended(self) -> None:
        self._next = None

    def arrived(self, marker: int) -> None:
        """Marker ``marker`` came back: everything accepted before it was read (for
        an ordered emit's marker; an echo's proves only itself)."""
        if marker < 0:
            echo = self._echoes.pop(marker, None)
            if echo is not None and not echo.done():
                echo.set_result(None)
            return
        for old in [m for m in self._waiting if m <= marker]:
            future = self._waiting.pop(old)
            if not future.done():
                future.set_result(None)
