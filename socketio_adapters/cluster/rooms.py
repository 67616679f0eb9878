"""Room membership of local and remote sockets: python-socketio's ``AsyncManager``
room calls, on any node, and the room table's hooks that tell the per-room
subscriptions (:mod:`.routing`) when a room gets its first local member and loses
its last one. Mixed into :class:`~.manager.ClusterManager`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from ..protocol import Target
from .local import LocalDelivery
from .routing import RoomRouting

__all__ = ["RoomMembership"]


class RoomMembership:
    """``enter_room`` / ``leave_room`` / ``close_room`` for sockets on any node."""

    rooms: dict[str, dict[Hashable, Any]]
    local: LocalDelivery
    routing: RoomRouting

    _change_rooms: Callable[..., Awaitable[None]]
    """The cluster API's (:meth:`.api.ClusterApi._change_rooms`)."""

    def basic_enter_room(self, sid: str, namespace: str, room: Hashable,
                         eio_sid: str | None = None) -> None:
        fresh = room is not None and room not in self.rooms.get(namespace, ())
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)  # type: ignore[misc]
        if fresh:
            self.routing.joined(namespace, room)

    def basic_leave_room(self, sid: str, namespace: str, room: Hashable) -> None:
        held = room is not None and room in self.rooms.get(namespace, ())
        super().basic_leave_room(sid, namespace, room)  # type: ignore[misc]
        if held and room not in self.rooms.get(namespace, ()):
            self.routing.left(namespace, room)

    async def enter_room(self, sid: str, namespace: str, room: str,
                         eio_sid: str | None = None) -> None:
        """Add a socket of any node to a room. For a local socket with per-room
        subscriptions, returns once this node is subscribed to the room."""
        if self.local.holds(sid, namespace):
            self.basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
            await self.routing.settled()
            return
        await self._change_rooms(True, (room,), Target((sid,)), namespace or "/",
                                 locally=False)

    async def leave_room(self, sid: str, namespace: str, room: str) -> None:
        if self.local.holds(sid, namespace):
            self.basic_leave_room(sid, namespace, room)
            return
        await self._change_rooms(False, (room,), Target((sid,)), namespace or "/",
                                 locally=False)

    async def close_room(self, room: str, namespace: str | None = None) -> None:
        namespace = namespace or "/"
        await self._change_rooms(False, (room,), Target((room,)), namespace, locally=False)
        self.basic_close_room(room, namespace)  # type: ignore[attr-defined]
