"""The cluster API beyond python-socketio's ``AsyncManager``: acks from every
client, sockets of every node, room changes and disconnects by filter, server-side
events and the server count. Mixed into :class:`~.manager.ClusterManager`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

from ..backends.base import Backend
from ..protocol import (
    Disconnect,
    EngineFrame,
    EngineRequest,
    FetchSockets,
    FrameKind,
    MessageType,
    RoomChange,
    ServerEvent,
    SocketInfo,
    Target,
)
from .arguments import Room, as_args, as_rooms, target
from .heartbeats import Heartbeats
from .local import LocalDelivery
from .nodes import NodeTable
from .publisher import Publisher
from .requests import Requester
from .routing import RoomRouting
from .server_events import ServerEventHandler, ServerEvents
from .sockets import ClusterOperations, RemoteSocket

__all__ = ["ClusterApi"]


class ClusterApi:
    """The cluster operations of one node (see :class:`~.manager.ClusterManager`)."""

    uid: str
    server: Any
    nodes: NodeTable
    local: LocalDelivery
    publisher: Publisher
    requester: Requester
    heartbeats: Heartbeats
    backend: Backend
    ordered: bool
    request_timeout: float
    server_events: ServerEvents
    routing: RoomRouting

    async def ensure_started(self) -> None:
        raise NotImplementedError  # the manager's

    async def emit_with_ack(self, event: str, data: Any = None, to: Room = None,
                            namespace: str = "/", timeout: float = 5.0,
                            skip_sid: Any = None) -> list[Any]:
        """Emit to every matching client on every node and return their acks.

        Each ack is what the client passed to its callback (one value, a tuple for
        several, ``None`` for none). On timeout raises
        :class:`~socketio_adapters.errors.ClusterTimeout` whose ``partial`` holds the
        acks that arrived.
        """
        await self.ensure_started()
        local = self.local if self.server is not None else None
        return await self.requester.collect_acks(
            self.uid, namespace, [event, *as_args(data)], target(to, skip_sid), local,
            timeout)

    async def fetch_sockets(self, to: Room = None, namespace: str = "/",
                            timeout: float | None = None,
                            skip_sid: Any = None) -> list[RemoteSocket]:
        """Every matching socket on every node. A node that dies while answering is
        left out; on timeout raises ClusterTimeout with the sockets that arrived."""
        await self.ensure_started()
        selected = target(to, skip_sid)
        me = cast(ClusterOperations, self)
        found = [RemoteSocket(sid, namespace, frozenset(rooms), self.uid, me)
                 for sid, rooms in self.local.sockets(namespace, selected)]
        remote: list[SocketInfo] = await self.requester.ask(
            MessageType.FETCH_SOCKETS, namespace,
            lambda rid: FetchSockets(selected, rid), timeout)
        found.extend(RemoteSocket(info.sid, namespace, frozenset(info.rooms), info.node,
                                  me) for info in remote)
        return found

    async def sockets_join(self, rooms: str | Iterable[str], to: Room = None,
                           namespace: str = "/", skip_sid: Any = None) -> None:
        """Make every matching socket, on every node, join ``rooms``."""
        await self._change_rooms(True, as_rooms(rooms), target(to, skip_sid), namespace)

    async def sockets_leave(self, rooms: str | Iterable[str], to: Room = None,
                            namespace: str = "/", skip_sid: Any = None) -> None:
        """Make every matching socket, on every node, leave ``rooms``."""
        await self._change_rooms(False, as_rooms(rooms), target(to, skip_sid), namespace)

    async def _change_rooms(self, join: bool, rooms: tuple[str, ...], selected: Target,
                            namespace: str, locally: bool = True) -> None:
        await self.ensure_started()
        kind = MessageType.SOCKETS_JOIN if join else MessageType.SOCKETS_LEAVE
        await self.requester.change(kind, namespace,
                                    lambda rid: RoomChange(selected, rooms, rid))
        if locally:
            self.local.change_rooms(namespace, selected, rooms, join=join)
            if join:
                await self.routing.settled()

    async def disconnect_sockets(self, to: Room = None, namespace: str = "/",
                                 skip_sid: Any = None) -> None:
        """Disconnect every matching socket on every node."""
        await self.ensure_started()
        selected = target(to, skip_sid)
        await self.requester.change(MessageType.DISCONNECT_SOCKETS, namespace,
                                    lambda rid: Disconnect(selected, rid))
        await self.local.disconnect(namespace, selected)

    def on(self, event: str, handler: ServerEventHandler | None = None) -> Any:
        """Register a handler for server-side events from other nodes; usable as a
        decorator. What the handler returns is its ack (see
        :meth:`server_side_emit_with_ack`)."""
        return self.server_events.on(event, handler)

    async def server_side_emit(self, event: str, *args: Any, namespace: str = "/") -> None:
        """Send an event to the other nodes' handlers (not to clients)."""
        await self.ensure_started()
        await self.publisher.send(MessageType.SERVER_SIDE_EMIT, namespace,
                                  ServerEvent([event, *args]), ordered=self.ordered,
                                  timeout=self.request_timeout)

    async def server_side_emit_with_ack(self, event: str, *args: Any, namespace: str = "/",
                                        timeout: float | None = None) -> list[Any]:
        """Send an event to the other nodes and return their handlers' results.
        Nodes with no handler for the event answer nothing and are not waited for."""
        await self.ensure_started()
        return await self.requester.ask(MessageType.SERVER_SIDE_EMIT, namespace,
                                        lambda rid: ServerEvent([event, *args], rid),
                                        timeout)

    async def forward_engine_request(self, node: str, method: str, query: str,
                                     body: bytes, headers: dict[str, str],
                                     timeout: float) -> Any:
        """Have ``node`` serve an engine.io request for a session it owns; its
        ``[status, headers, body]``, or None when it could not (it died, or it
        serves no forwarded requests)."""
        await self.ensure_started()
        answers = await self.requester.ask_node(
            MessageType.ENGINE_REQUEST, "/", node,
            lambda rid: EngineRequest(rid, method, query, body, headers), timeout)
        return answers[0] if answers else None

    async def open_engine_relay(self, node: str, sid: str, timeout: float) -> bool:
        """Ask ``node`` to take the websocket of its session ``sid``, which this node
        holds and relays (:meth:`send_engine_frame`); whether it did."""
        await self.ensure_started()
        answers = await self.requester.ask_node(
            MessageType.ENGINE_FRAME, "/", node,
            lambda rid: EngineFrame(sid, FrameKind.OPEN, request_id=rid), timeout)
        return bool(answers and answers[0] is True)

    def send_engine_frame(self, node: str, sid: str, kind: FrameKind,
                          data: str | bytes | None = None) -> None:
        """Relay one websocket message (or its close) of session ``sid`` to ``node``;
        raises PayloadTooLarge or NotStarted."""
        self.publisher.publish(MessageType.ENGINE_FRAME, "/", EngineFrame(sid, kind, data),
                               target=node)

    def on_node_gone(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(uid)`` whenever a node leaves or falls silent."""
        self.heartbeats.gone_callbacks.append(callback)

    def on_node_joined(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(uid)`` whenever a node joins or announces something new
        (:meth:`node_info`)."""
        self.heartbeats.joined_callbacks.append(callback)

    def announce(self, info: dict[str, Any] | None) -> None:
        """What this node says of itself in its heartbeats, from the next one on
        (set it before :meth:`start` to be known from the first)."""
        self.heartbeats.announcement = info

    def node_info(self, uid: str) -> Any:
        """What node ``uid`` announced of itself (None: nothing, or not alive)."""
        return self.nodes.info(uid)

    def peers(self) -> set[str]:
        """The uids of the other nodes alive."""
        return self.nodes.alive()

    async def server_count(self) -> int:
        """Nodes alive in the cluster, this one included (from heartbeats)."""
        await self.ensure_started()
        return len(self.nodes) + 1
