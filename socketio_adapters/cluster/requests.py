"""Requests to the other nodes that wait for their answers.

Each node owes a number of answers: one for fetch_sockets and server-side emits, or as
many as it has recipients for a broadcast with acks (that number arrives first, as a
client count). A request completes when every awaited node has answered in full; a node
that dies is no longer awaited, so the request completes with what arrived; at the
deadline it raises :class:`ClusterTimeout` carrying the partial answers.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ClusterTimeout
from ..protocol import Broadcast, MessageType, Target
from .callbacks import ack_value
from .local import LocalDelivery
from .nodes import NodeTable
from .publisher import Publisher, Wire

__all__ = ["PendingRequest", "RequestTable", "Requester"]


class PendingRequest:
    """One request waiting for the answers of ``nodes``: ``per_node`` answers each,
    or, when None, as many as each node announces (:meth:`expect`)."""

    def __init__(self, kind: str, nodes: Iterable[str], per_node: int | None) -> None:
        self.kind = kind
        self.expected: dict[str, int | None] = dict.fromkeys(nodes, per_node)
        self.received: dict[str, int] = dict.fromkeys(self.expected, 0)
        self.responses: list[Any] = []
        self.future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._check()

    def expect(self, node: str, count: int) -> None:
        """A node announced how many answers it will send."""
        if node in self.expected:
            self.expected[node] = count
            self._check()

    def add(self, node: str, values: Iterable[Any], answers: int = 1) -> None:
        """Answers from ``node``; values from a node that is not awaited are kept
        as long as the request is still open."""
        if self.future.done():
            return
        self.responses.extend(values)
        if node in self.received:
            self.received[node] += answers
        self._check()

    def drop(self, node: str) -> None:
        """``node`` is gone: stop waiting for it."""
        if self.expected.pop(node, None) is not None or node in self.received:
            self.received.pop(node, None)
        self._check()

    def _check(self) -> None:
        if self.future.done():
            return
        for node, count in self.expected.items():
            if count is None or self.received.get(node, 0) < count:
                return
        self.future.set_result(self.responses)

    async def wait(self, timeout: float) -> list[Any]:
        try:
            return await asyncio.wait_for(asyncio.shield(self.future), timeout)
        except asyncio.TimeoutError:
            missing = sorted(n for n, c in self.expected.items()
                             if c is None or self.received.get(n, 0) < c)
            raise ClusterTimeout(
                f"{self.kind}: timed out after {timeout}s waiting for "
                f"{', '.join(missing) or 'answers'}; {len(self.responses)} answers arrived",
                list(self.responses), missing) from None


class RequestTable:
    """The open requests of a node, by request id."""

    def __init__(self) -> None:
        self._pending: dict[str, PendingRequest] = {}

    def open(self, request_id: str, request: PendingRequest) -> PendingRequest:
        self._pending[request_id] = request
        return request

    def close(self, request_id: str) -> None:
        self._pending.pop(request_id, None)

    def get(self, request_id: Any) -> PendingRequest | None:
        if not isinstance(request_id, str):
            return None
        return self._pending.get(request_id)

    def drop_node(self, node: str) -> None:
        for request in list(self._pending.values()):
            request.drop(node)

    def __len__(self) -> int:
        return len(self._pending)


class Requester:
    """Asks the other nodes: a request whose answers are awaited, or a change that
    every live node confirms once it applied it."""

    def __init__(self, publisher: Publisher, nodes: NodeTable, table: RequestTable,
                 timeout: float, logger: logging.Logger) -> None:
        self.publisher = publisher
        self.nodes = nodes
        self.table = table
        self.timeout = timeout
        self.logger = logger

    async def ask(self, kind: MessageType, nsp: str, payload: Callable[[str], Wire],
                  timeout: float | None = None) -> list[Any]:
        """Publish ``payload(request_id)`` and return every live node's answers."""
        self.publisher.require()
        peers = self.nodes.alive()
        if not peers:
            return []
        request_id = secrets.token_hex(8)
        request = self.table.open(request_id, PendingRequest(kind.name.lower(), peers, 1))
        try:
            self.publisher.publish(kind, nsp, payload(request_id))
            return await request.wait(timeout or self.timeout)
        finally:
            self.table.close(request_id)

    async def ask_node(self, kind: MessageType, nsp: str, node: str,
                       payload: Callable[[str], Wire], timeout: float) -> list[Any]:
        """Send ``payload(request_id)`` to one node and return its answer (an empty
        list when that node dies first); raises ClusterTimeout."""
        self.publisher.require()
        request_id = secrets.token_hex(8)
        request = self.table.open(request_id, PendingRequest(kind.name.lower(), {node}, 1))
        try:
            self.publisher.publish(kind, nsp, payload(request_id), target=node)
            return await request.wait(timeout)
        finally:
            self.table.close(request_id)

    async def collect_acks(self, uid: str, nsp: str, packet: list[Any], target: Target,
                           local: LocalDelivery | None, timeout: float) -> list[Any]:
        """Broadcast ``packet`` with acks and return every client's ack, this node's
        (``local``) included: each node first says how many it will send."""
        request_id = secrets.token_hex(8)
        request = self.table.open(request_id, PendingRequest(
            "emit_with_ack", {*self.nodes.alive(), uid}, None))
        try:
            self.publisher.publish(MessageType.BROADCAST, nsp,
                                   Broadcast(packet, target, request_id, count=True))

            def local_ack(*ack: Any) -> None:
                request.add(uid, [ack_value(ack)])

            count = 0
            if local is not None:
                count = await local.emit(nsp, packet, target, local_ack)
            request.expect(uid, count)
            return await request.wait(timeout)
        finally:
            self.table.close(request_id)

    async def change(self, kind: MessageType, nsp: str,
                     payload: Callable[[str | None], Wire]) -> None:
        """Publish a room change or disconnect and return once every live node has
        applied it, so nothing issued afterwards, on any node, can overtake it (a
        broker accepting it is not enough: another node may not have read it yet).
        A node that does not confirm within the timeout is logged, not raised: the
        change is published and that node applies it when it reads it."""
        publisher = self.publisher
        publisher.require()
        peers = self.nodes.alive()
        if not peers:
            await publisher.publish_and_wait(kind, nsp, payload(None))
            return
        request_id = secrets.token_hex(8)
        request = self.table.open(request_id, PendingRequest(kind.name.lower(), peers, 1))
        try:
            publisher.publish(kind, nsp, payload(request_id))
            await request.wait(self.timeout)
        except ClusterTimeout as exc:
            self.logger.warning("%s", exc)
        finally:
            self.table.close(request_id)
