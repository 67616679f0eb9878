"""Requests to the other nodes that wait for their answers.

Each node owes a number of answers: one for fetch_sockets and server-side emits, or as
many as it has recipients for a broadcast with acks (that number arrives first, as a
client count). A request completes when every awaited node has answered in full; a node
that dies is no longer awaited, so the request completes with what arrived; at the
deadline it raises :class:`ClusterTimeout` carrying the partial answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from .errors import ClusterTimeout

__all__ = ["PendingRequest", "RequestTable"]


class PendingRequest:
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
                list(self.responses)) from None


class RequestTable:
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
