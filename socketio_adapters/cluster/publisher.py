"""Publishing: messages encoded once, checked against the backend's limit, and
queued in order on the outbox, to every node, to one node, or to the durable log."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from ..backends.base import LOG, Backend, Destination
from ..errors import NotStarted, PayloadTooLarge
from ..protocol import Message, MessageType, encode
from .counters import PublishCounters
from .outbox import Outbox

__all__ = ["Publisher", "Wire"]


class Wire(Protocol):
    """A typed payload (see :mod:`socketio_adapters.protocol.payloads`)."""

    def to_wire(self) -> Any: ...


class Publisher:
    """The publish side of one node: an outbox while the manager runs, and counters
    that last as long as the manager."""

    def __init__(self, uid: str, backend: Backend, logger: logging.Logger,
                 max_buffer: int, max_bytes: int = 64 * 2**20,
                 buffer_timeout: float = 10.0) -> None:
        self.uid = uid
        self.backend = backend
        self.logger = logger
        self.max_buffer = max_buffer
        self.max_bytes = max_bytes
        self.buffer_timeout = buffer_timeout
        self.outbox: Outbox | None = None
        self.counters = PublishCounters()

    def open(self) -> Outbox:
        """Create the outbox (answers to early messages queue there until the backend
        is up); :meth:`Outbox.start` starts sending."""
        self.outbox = Outbox(self.backend, self.logger, max_buffer=self.max_buffer,
                             counters=self.counters, max_bytes=self.max_bytes,
                             timeout=self.buffer_timeout)
        return self.outbox

    def require(self) -> Outbox:
        if self.outbox is None:
            raise NotStarted("the ClusterManager is not started: `await manager.start()`"
                             " first (or use socketio_adapters.lifecycle)")
        return self.outbox

    def encode(self, kind: MessageType, nsp: str, payload: Wire | dict[str, Any] | None
               ) -> bytes:
        data = payload.to_wire() if payload is not None and not isinstance(
            payload, dict) else payload
        encoded = encode(Message(self.uid, nsp, kind, data))
        limit = self.backend.capabilities.max_payload
        if limit is not None and len(encoded) > limit:
            raise PayloadTooLarge(
                f"{kind.name} message of {len(encoded)} bytes is over the "
                f"{self.backend.name} backend's limit of {limit} bytes")
        if len(encoded) > self.max_bytes:  # it would fill the outbox alone
            raise PayloadTooLarge(
                f"{kind.name} message of {len(encoded)} bytes is over the outbox's "
                f"limit of {self.max_bytes} bytes (the max_buffer_bytes option)")
        return encoded

    def publish(self, kind: MessageType, nsp: str,
                payload: Wire | dict[str, Any] | None = None,
                target: str | None = None) -> None:
        """Queue for every node (``target`` None) or one node."""
        self.require().put(target, self.encode(kind, nsp, payload))

    def publish_urgent(self, kind: MessageType, payload: Wire,
                       target: str | None = None) -> None:
        """Send before anything queued, even while the outbox is held after an outage
        (see :mod:`socketio_adapters.cluster.resume`)."""
        self.require().put_urgent(target, self.encode(kind, "/", payload))

    async def publish_and_wait(self, kind: MessageType, nsp: str,
                               payload: Wire | None = None) -> None:
        """Queue for every node and wait until the broker accepted it."""
        await self.require().put_and_wait(None, self.encode(kind, nsp, payload))

    async def send(self, kind: MessageType, nsp: str, payload: Wire | None, *,
                   target: Destination = None, ordered: bool, timeout: float) -> bool:
        """An application's message (an emit): wait for room in the outbox
        (backpressure, :meth:`Outbox.wait_writable`), queue it for ``target`` (None:
        every node; :data:`LOG`: the durable log; a room key: the nodes subscribed
        to it), and, when ``ordered`` and the broker is reachable, wait until the
        broker accepted it: True then, False when it returned earlier (fire and
        forget, or the broker is away: the message is buffered and sent in order on
        its return)."""
        outbox = self.require()
        encoded = self.encode(kind, nsp, payload)
        if outbox.blocked(len(encoded)):
            await outbox.wait_writable(len(encoded))
        if ordered and outbox.reachable:
            return await outbox.put_ordered(target, encoded, timeout)
        outbox.put(target, encoded)
        return False

    def append(self, kind: MessageType, nsp: str,
               payload: Wire | dict[str, Any] | None) -> None:
        """Queue for the durable log."""
        self.require().put(LOG, self.encode(kind, nsp, payload))

    async def append_and_wait(self, kind: MessageType, nsp: str,
                              payload: Wire | dict[str, Any] | None) -> None:
        """Append to the durable log and wait until the broker accepted it."""
        await self.require().put_and_wait(LOG, self.encode(kind, nsp, payload))
