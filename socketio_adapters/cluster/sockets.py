"""A socket as seen from anywhere in the cluster (what ``fetch_sockets`` returns)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["ClusterOperations", "RemoteSocket"]


class ClusterOperations(Protocol):
    """The cluster operations a :class:`RemoteSocket` works through (the manager)."""

    uid: str

    async def emit(self, event: str, data: Any, namespace: str | None = None, *,
                   to: Any = None) -> None: ...

    async def sockets_join(self, rooms: str | Iterable[str], to: Any = None,
                           namespace: str = "/") -> None: ...

    async def sockets_leave(self, rooms: str | Iterable[str], to: Any = None,
                            namespace: str = "/") -> None: ...

    async def disconnect_sockets(self, to: Any = None, namespace: str = "/") -> None: ...


@dataclass(frozen=True)
class RemoteSocket:
    """A connected client on some node. Its methods work whichever node holds it."""

    sid: str
    namespace: str
    rooms: frozenset[str]
    node: str
    """uid of the node that holds the connection."""
    manager: ClusterOperations = field(repr=False, compare=False)

    @property
    def local(self) -> bool:
        return self.node == self.manager.uid

    async def emit(self, event: str, data: Any = None) -> None:
        await self.manager.emit(event, data, self.namespace, to=self.sid)

    async def join(self, room: str | list[str]) -> None:
        rooms = [room] if isinstance(room, str) else room
        await self.manager.sockets_join(rooms, to=self.sid, namespace=self.namespace)

    async def leave(self, room: str | list[str]) -> None:
        rooms = [room] if isinstance(room, str) else room
        await self.manager.sockets_leave(rooms, to=self.sid, namespace=self.namespace)

    async def disconnect(self) -> None:
        await self.manager.disconnect_sockets(to=self.sid, namespace=self.namespace)
