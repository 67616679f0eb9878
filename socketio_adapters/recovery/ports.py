"""The small interfaces recovery works through, so that it depends on no class of
the cluster package: the local sockets, the publisher's log side, the durable log."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from ..protocol import MessageType

__all__ = ["DurableLog", "LocalSockets", "LogAppender"]


class LocalSockets(Protocol):
    """The sockets of this node (the cluster's local delivery)."""

    def register(self, sid: str, namespace: str, eio_sid: str,
                 rooms: Iterable[str]) -> None: ...

    def rooms_of(self, sid: str, namespace: str) -> set[str]: ...

    async def send_event(self, eio_sid: str, namespace: str,
                         packet_data: list[Any]) -> None:
        """Send one event; ConnectionError when the client went away."""


class LogAppender(Protocol):
    """Appending to the durable log (the cluster's publisher)."""

    def append(self, kind: MessageType, nsp: str, payload: Any) -> None: ...

    async def append_and_wait(self, kind: MessageType, nsp: str, payload: Any) -> None: ...


class DurableLog(Protocol):
    """Reading the durable log back (the backend)."""

    @property
    def log_position(self) -> str | None: ...

    async def read_log(self, after: str, upto: str | None
                       ) -> list[tuple[str, bytes]] | None: ...
