"""ClusterManager: a python-socketio ``AsyncManager`` whose rooms, acks and requests
span every node that shares a backend.

All cluster semantics live here; a backend only moves bytes. Every operation publishes
first, then acts locally, so a failed publish (logged by the outbox) still reaches the
local clients.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgpack
import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from .backends.base import LOG, Backend
from .errors import ClusterTimeout, MalformedMessage, NotStarted, PayloadTooLarge
from .nodes import NodeTable
from .outbox import Outbox
from .protocol import Message, MessageType, decode, encode
from .recovery import Recovery, RecoveryOptions, Restore, SessionRecord
from .requests import PendingRequest, RequestTable
from .sockets import RemoteSocket
from .tasks import settle

__all__ = ["ClusterManager"]

ServerEventHandler = Callable[..., Any]
Room = str | list[str] | tuple[str, ...] | None


def _as_args(data: Any) -> list[Any]:
    """python-socketio's convention: a tuple is several arguments, None is none."""
    if isinstance(data, tuple):
        return list(data)
    if data is None:
        return []
    return [data]


def _as_rooms(room: Any) -> list[str]:
    if room is None:
        return []
    if isinstance(room, str):
        return [room]
    return [r for r in room if r is not None]


def _ack_value(args: list[Any] | tuple[Any, ...]) -> Any:
    """One client's ack as ``AsyncServer.call`` returns it."""
    if len(args) == 0:
        return None
    if len(args) == 1:
        return args[0]
    return tuple(args)


class ClusterManager(socketio.AsyncManager):  # type: ignore[misc]
    """A client manager for ``socketio.AsyncServer`` that spans many nodes.

    :param backend: the :class:`~socketio_adapters.backends.base.Backend` that moves
        bytes between nodes (usually built by :func:`socketio_adapters.create_manager`).
    :param heartbeat_interval: seconds between heartbeats to the other nodes.
    :param heartbeat_timeout: a node not heard from for this long is considered dead;
        requests waiting on it complete with what arrived.
    :param request_timeout: default timeout of cluster requests (fetch_sockets,
        server-side emits with acks).
    :param write_only: an emitter: publishes only, never subscribes, is not a node.
    :param max_buffer: messages kept while the broker is unreachable; past that the
        oldest are dropped (logged and counted in ``stats()``).
    :param callback_ttl: seconds a callback for a client on another node is kept when
        that client never answers.
    :param connection_state_recovery: turn on connection state recovery (see
        :class:`~socketio_adapters.recovery.RecoveryOptions`; usually set through
        :class:`socketio_adapters.AsyncServer`). An emitter of a cluster whose servers
        recover sessions needs it too, so that its events get offsets.
    """

    name = "cluster"

    def __init__(
        self,
        backend: Backend,
        *,
        heartbeat_interval: float = 5.0,
        heartbeat_timeout: float = 10.0,
        request_timeout: float = 5.0,
        write_only: bool = False,
        max_buffer: int = 100_000,
        callback_ttl: float = 300.0,
        connection_state_recovery: Any = None,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__()
        if heartbeat_timeout <= heartbeat_interval:
            raise ValueError("heartbeat_timeout must be longer than heartbeat_interval")
        self.backend = backend
        self.uid = secrets.token_hex(8)
        self.heartbeat_interval = heartbeat_interval
        self.request_timeout = request_timeout
        self.write_only = write_only
        self.callback_ttl = callback_ttl
        self.log = logger or logging.getLogger("socketio_adapters.manager")
        self.nodes = NodeTable(heartbeat_timeout)
        self.dropped_messages = 0
        self._max_buffer = max_buffer
        self._outbox: Outbox | None = None
        self._requests = RequestTable()
        self._remote_callbacks: dict[str, tuple[float, Callable[..., Any]]] = {}
        self._server_handlers: dict[str, ServerEventHandler] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._own_prefix = b"\x84\xa3uid" + msgpack.packb(self.uid)
        self._handlers: dict[MessageType, Callable[[Message], Awaitable[None]]] = {
            MessageType.INITIAL_HEARTBEAT: self._on_initial_heartbeat,
            MessageType.HEARTBEAT: self._on_heartbeat,
            MessageType.ADAPTER_CLOSE: self._on_close,
            MessageType.BROADCAST: self._on_broadcast,
            MessageType.SOCKETS_JOIN: self._on_sockets_join,
            MessageType.SOCKETS_LEAVE: self._on_sockets_leave,
            MessageType.DISCONNECT_SOCKETS: self._on_disconnect_sockets,
            MessageType.FETCH_SOCKETS: self._on_fetch_sockets,
            MessageType.FETCH_SOCKETS_RESPONSE: self._on_response,
            MessageType.SERVER_SIDE_EMIT: self._on_server_side_emit,
            MessageType.SERVER_SIDE_EMIT_RESPONSE: self._on_response,
            MessageType.BROADCAST_CLIENT_COUNT: self._on_client_count,
            MessageType.BROADCAST_ACK: self._on_broadcast_ack,
        }
        self.recovery: Recovery | None = None
        options = RecoveryOptions.coerce(connection_state_recovery)
        if options is not None:
            self.enable_recovery(options)

    # ---------------------------------------------------------------- lifecycle

    @property
    def started(self) -> bool:
        return self._outbox is not None

    async def start(self) -> None:
        """Connect to the broker and subscribe, then announce this node.

        Call it when the application starts (see :mod:`socketio_adapters.lifecycle`),
        so the node receives what others publish before its first client connects.
        Raises :class:`~socketio_adapters.backends.base.BrokerUnavailable` when the
        broker cannot be reached within the backend's ``connect_timeout``.
        """
        if self._outbox is not None:
            return
        outbox = Outbox(self.backend, self.log, max_buffer=self._max_buffer)
        self._outbox = outbox  # answers to early messages queue here until we are up
        try:
            await self.backend.start(self.uid,
                                     None if self.write_only else self._on_payload)
        except BaseException:
            self._outbox = None
            raise
        outbox.start()
        if not self.write_only:
            self._publish(MessageType.INITIAL_HEARTBEAT, "/", None)
            self._heartbeat = asyncio.create_task(self._heartbeat_loop(),
                                                  name="cluster-heartbeat")
        self.log.info("node %s started on %s", self.uid, self.backend.name)

    async def stop(self) -> None:
        """Say goodbye to the other nodes, send what is queued, and disconnect.
        Safe to call twice."""
        if self._starting is not None and not self._starting.done():
            await asyncio.gather(self._starting, return_exceptions=True)
        outbox, heartbeat = self._outbox, self._heartbeat
        if outbox is None:
            return
        self._heartbeat = None
        if heartbeat is not None:
            heartbeat.cancel()
            await settle(heartbeat, 5.0, self.log, "the heartbeat task")
        if not self.write_only:
            self._publish(MessageType.ADAPTER_CLOSE, "/", None)
        await outbox.stop()
        self._outbox = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await settle(asyncio.gather(*self._tasks, return_exceptions=True), 5.0,
                         self.log, "server-side event handlers")
        await self.backend.stop()
        self.log.info("node %s stopped", self.uid)

    def enable_recovery(self, options: RecoveryOptions) -> None:
        """Turn on connection state recovery (before :meth:`start`): events for
        clients go through the backend's durable log and carry its offsets."""
        if self.recovery is not None:
            if self.recovery.options != options:
                raise ValueError("connection state recovery is already on with "
                                 f"other options ({self.recovery.options})")
            return
        if self.started:
            raise RuntimeError("enable_recovery() must be called before start()")
        recovery = Recovery(self, options)
        self.backend.enable_log(None if self.write_only else recovery.on_entry,
                                options.log_age, options.max_log_length)
        self.recovery = recovery

    async def ready(self) -> None:
        """Wait for a start that :meth:`initialize` began, if any."""
        starting = self._starting
        if starting is not None and not starting.done():
            await asyncio.shield(starting)

    def _require_recovery(self) -> Recovery:
        if self.recovery is None:
            raise RuntimeError("connection state recovery is not enabled")
        return self.recovery

    async def recovery_save(self, record: SessionRecord) -> None:
        """Keep a lost socket's session (called by the server)."""
        await self._require_recovery().save(record)

    async def recovery_take(self, namespace: str, pid: str, offset: str) -> Restore | None:
        """Take a saved session and what it missed, or None (called by the server)."""
        return await self._require_recovery().take(namespace, pid, offset)

    async def recovery_finish(self, restore: Restore, eio_sid: str,
                              announce: Callable[[], Awaitable[None]]) -> None:
        """Register a restored socket and catch it up (called by the server)."""
        await self._require_recovery().finish(restore, eio_sid, announce)

    def recovery_abandon(self, restore: Restore) -> None:
        """Drop a taken session that will not be restored after all."""
        self._require_recovery().close(restore.tail)

    def initialize(self) -> None:
        """Called by python-socketio on the first connection. The manager should
        already be started by the application's startup hook; if it is not, start it
        now and warn, because until then this node missed what others published."""
        super().initialize()
        if self._outbox is None and self._starting is None:
            if not self.backend.capabilities.multi_process:  # nothing could be missed
                self._starting = asyncio.get_event_loop().create_task(self.start())
                return
            self.log.warning(
                "ClusterManager was not started before the first client connected; "
                "starting it now. Call `await manager.start()` at application start-up "
                "(see socketio_adapters.lifecycle) so no message is missed.")
            self._starting = asyncio.get_event_loop().create_task(self.start())

    async def flush(self) -> None:
        """Wait until every message published so far has reached the broker."""
        await self._require_outbox().flush()

    def stats(self) -> dict[str, Any]:
        """Counters for monitoring: messages sent, dropped, queued; peer nodes."""
        outbox = self._outbox
        return {
            "uid": self.uid,
            "nodes": len(self.nodes) + 1,
            "published": outbox.sent if outbox else 0,
            "queued": len(outbox) if outbox else 0,
            "publish_dropped": outbox.dropped if outbox else 0,
            "malformed_dropped": self.dropped_messages,
            "pending_requests": len(self._requests),
            "reconnects": self.backend.state.reconnects,
            "sessions_saved": self.recovery.saved if self.recovery else 0,
            "sessions_restored": self.recovery.restored if self.recovery else 0,
            "connected": self.backend.state.connected,
        }

    # ---------------------------------------------------------------- publishing

    def _require_outbox(self) -> Outbox:
        if self._outbox is None:
            raise NotStarted("the ClusterManager is not started: `await manager.start()`"
                             " first (or use socketio_adapters.lifecycle)")
        return self._outbox

    def _encode(self, kind: MessageType, nsp: str, data: Any) -> bytes:
        payload = encode(Message(self.uid, nsp, kind, data))
        limit = self.backend.capabilities.max_payload
        if limit is not None and len(payload) > limit:
            raise PayloadTooLarge(
                f"{kind.name} message of {len(payload)} bytes is over the "
                f"{self.backend.name} backend's limit of {limit} bytes")
        return payload

    def _publish(self, kind: MessageType, nsp: str, data: Any,
                 target: str | None = None) -> None:
        self._require_outbox().put(target, self._encode(kind, nsp, data))

    async def _publish_and_wait(self, kind: MessageType, nsp: str, data: Any) -> None:
        """Publish a room change or disconnect and return once every live node has
        applied it, so nothing issued afterwards, on any node, can overtake it (a
        broker accepting it is not enough: another node may not have read it yet).
        A node that does not confirm within ``request_timeout`` is logged, not
        raised: the change is published and that node applies it when it reads it."""
        outbox = self._require_outbox()
        peers = self.nodes.alive()
        if not peers:
            await outbox.put_and_wait(None, self._encode(kind, nsp, data))
            return
        request_id = secrets.token_hex(8)
        request = self._requests.open(request_id, PendingRequest(kind.name.lower(),
                                                                 peers, 1))
        try:
            outbox.put(None, self._encode(kind, nsp, {**data, "requestId": request_id}))
            await request.wait(self.request_timeout)
        except ClusterTimeout as exc:
            self.log.warning("%s", exc)
        finally:
            self._requests.close(request_id)

    # ---------------------------------------------------------------- AsyncManager API

    async def emit(self, event: str, data: Any, namespace: str | None = None,
                   room: Room = None, skip_sid: Any = None,
                   callback: Callable[..., Any] | None = None, to: Room = None,
                   **kwargs: Any) -> None:
        """Emit to every client, a room, several rooms (union) or one sid, on every
        node. ``skip_sid`` takes sids or rooms to leave out (socket.io's ``except``).
        With ``callback``, ``to`` must be one sid, which may be on any node.

        Returns once the message is queued for the broker, in order; see
        :meth:`flush` to wait for the broker.
        """
        namespace = namespace or "/"
        rooms = _as_rooms(to if to is not None else room)
        excepts = _as_rooms(skip_sid)
        args = _as_args(data)
        if kwargs.get("ignore_queue"):
            await self._emit_local(namespace, [event, *args], rooms, excepts, callback)
            return
        if callback is not None:
            if self.server is None:
                raise ValueError("an emitter (no server) cannot receive acks: callbacks "
                                 "need a ClusterManager attached to an AsyncServer")
            if len(rooms) != 1:
                raise ValueError("a callback needs exactly one recipient sid; use "
                                 "emit_with_ack() to collect acks from a room")
            await self._emit_with_callback(event, args, namespace, rooms[0], callback)
            return
        outbox = self._require_outbox()
        await outbox.wait_writable()
        if self.recovery is not None:
            # every node, this one too, delivers it from the log, with its offset
            outbox.put(LOG, self._encode(MessageType.BROADCAST, namespace, {
                "packet": [event, *args], "opts": {"rooms": rooms, "except": excepts}}))
            return
        outbox.put(None, self._encode(MessageType.BROADCAST, namespace, {
            "packet": [event, *args], "opts": {"rooms": rooms, "except": excepts}}))
        if self.server is not None:
            await self._emit_local(namespace, [event, *args], rooms, excepts)

    async def _emit_with_callback(self, event: str, args: list[Any], namespace: str,
                                  sid: str, callback: Callable[..., Any]) -> None:
        if self.is_connected(sid, namespace):
            await self._emit_local(namespace, [event, *args], [sid], [], callback)
            return
        request_id = secrets.token_hex(8)
        self._remote_callbacks[request_id] = (time.monotonic(), callback)
        self._publish(MessageType.BROADCAST, namespace, {
            "packet": [event, *args], "opts": {"rooms": [sid], "except": []},
            "requestId": request_id})

    async def can_disconnect(self, sid: str, namespace: str) -> bool:
        if self.is_connected(sid, namespace):
            return True
        await self._publish_and_wait(MessageType.DISCONNECT_SOCKETS, namespace or "/",
                                     {"opts": {"rooms": [sid], "except": []}})
        return False

    async def enter_room(self, sid: str, namespace: str, room: str,
                         eio_sid: str | None = None) -> None:
        if self._is_local(sid, namespace):
            self.basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
            return
        await self._publish_and_wait(MessageType.SOCKETS_JOIN, namespace or "/", {
            "opts": {"rooms": [sid], "except": []}, "rooms": [room]})

    async def leave_room(self, sid: str, namespace: str, room: str) -> None:
        if self._is_local(sid, namespace):
            self.basic_leave_room(sid, namespace, room)
            return
        await self._publish_and_wait(MessageType.SOCKETS_LEAVE, namespace or "/", {
            "opts": {"rooms": [sid], "except": []}, "rooms": [room]})

    async def close_room(self, room: str, namespace: str | None = None) -> None:
        namespace = namespace or "/"
        await self._publish_and_wait(MessageType.SOCKETS_LEAVE, namespace, {
            "opts": {"rooms": [room], "except": []}, "rooms": [room]})
        self.basic_close_room(room, namespace)

    def _is_local(self, sid: str, namespace: str) -> bool:
        return bool(self.is_connected(sid, namespace)
                    or self.is_pre_connected(sid, namespace))

    # ---------------------------------------------------------------- cluster API

    async def emit_with_ack(self, event: str, data: Any = None, to: Room = None,
                            namespace: str = "/", timeout: float = 5.0,
                            skip_sid: Any = None) -> list[Any]:
        """Emit to every matching client on every node and return their acks.

        Each ack is what the client passed to its callback (one value, a tuple for
        several, ``None`` for none). On timeout raises
        :class:`~socketio_adapters.errors.ClusterTimeout` whose ``partial`` holds the
        acks that arrived.
        """
        rooms, excepts, args = _as_rooms(to), _as_rooms(skip_sid), _as_args(data)
        request_id = secrets.token_hex(8)
        request = self._requests.open(request_id, PendingRequest(
            "emit_with_ack", {*self.nodes.alive(), self.uid}, None))
        try:
            self._publish(MessageType.BROADCAST, namespace, {
                "packet": [event, *args], "opts": {"rooms": rooms, "except": excepts},
                "requestId": request_id, "all": True})

            def local_ack(*ack: Any) -> None:
                request.add(self.uid, [_ack_value(ack)])

            count = 0
            if self.server is not None:
                count = await self._emit_local(namespace, [event, *args], rooms, excepts,
                                               local_ack)
            request.expect(self.uid, count)
            return await request.wait(timeout)
        finally:
            self._requests.close(request_id)

    async def fetch_sockets(self, to: Room = None, namespace: str = "/",
                            timeout: float | None = None,
                            skip_sid: Any = None) -> list[RemoteSocket]:
        """Every matching socket on every node. A node that dies while answering is
        left out; on timeout raises ClusterTimeout with the sockets that arrived."""
        rooms, excepts = _as_rooms(to), _as_rooms(skip_sid)
        found = [RemoteSocket(sid, namespace, frozenset(r), self.uid, self)
                 for sid, r in self._local_sockets(namespace, rooms, excepts)]
        remote = await self._request(MessageType.FETCH_SOCKETS, namespace,
                                     {"opts": {"rooms": rooms, "except": excepts}},
                                     timeout)
        for item in remote:
            try:
                found.append(RemoteSocket(str(item["id"]), namespace,
                                          frozenset(item["rooms"]), str(item["node"]),
                                          self))
            except (KeyError, TypeError):
                self._drop_malformed(f"bad socket in fetch_sockets answer: {item!r}")
        return found

    async def sockets_join(self, rooms: str | Iterable[str], to: Room = None,
                           namespace: str = "/", skip_sid: Any = None) -> None:
        """Make every matching socket, on every node, join ``rooms``."""
        await self._change_rooms(True, rooms, to, namespace, skip_sid)

    async def sockets_leave(self, rooms: str | Iterable[str], to: Room = None,
                            namespace: str = "/", skip_sid: Any = None) -> None:
        """Make every matching socket, on every node, leave ``rooms``."""
        await self._change_rooms(False, rooms, to, namespace, skip_sid)

    async def _change_rooms(self, join: bool, rooms: str | Iterable[str], to: Room,
                            namespace: str, skip_sid: Any) -> None:
        opts = {"rooms": _as_rooms(to), "except": _as_rooms(skip_sid)}
        changed = _as_rooms(rooms)
        kind = MessageType.SOCKETS_JOIN if join else MessageType.SOCKETS_LEAVE
        await self._publish_and_wait(kind, namespace, {"opts": opts, "rooms": changed})
        self._apply_rooms(namespace, opts, changed, join=join)

    async def disconnect_sockets(self, to: Room = None, namespace: str = "/",
                                 skip_sid: Any = None) -> None:
        """Disconnect every matching socket on every node."""
        opts = {"rooms": _as_rooms(to), "except": _as_rooms(skip_sid)}
        await self._publish_and_wait(MessageType.DISCONNECT_SOCKETS, namespace,
                                     {"opts": opts})
        await self._disconnect_local(namespace, opts)

    def on(self, event: str, handler: ServerEventHandler | None = None) -> Any:
        """Register a handler for server-side events from other nodes; usable as a
        decorator. What the handler returns is its ack (see
        :meth:`server_side_emit_with_ack`)."""
        def register(func: ServerEventHandler) -> ServerEventHandler:
            self._server_handlers[event] = func
            return func
        return register(handler) if handler is not None else register

    async def server_side_emit(self, event: str, *args: Any, namespace: str = "/") -> None:
        """Send an event to the other nodes' handlers (not to clients)."""
        self._publish(MessageType.SERVER_SIDE_EMIT, namespace, {"packet": [event, *args]})

    async def server_side_emit_with_ack(self, event: str, *args: Any, namespace: str = "/",
                                        timeout: float | None = None) -> list[Any]:
        """Send an event to the other nodes and return their handlers' results.
        Nodes with no handler for the event answer nothing and are not waited for."""
        return await self._request(MessageType.SERVER_SIDE_EMIT, namespace,
                                   {"packet": [event, *args]}, timeout)

    async def server_count(self) -> int:
        """Nodes alive in the cluster, this one included (from heartbeats)."""
        return len(self.nodes) + 1

    async def _request(self, kind: MessageType, namespace: str, data: dict[str, Any],
                       timeout: float | None) -> list[Any]:
        self._require_outbox()
        peers = self.nodes.alive()
        if not peers:
            return []
        request_id = secrets.token_hex(8)
        request = self._requests.open(request_id, PendingRequest(kind.name.lower(),
                                                                 peers, 1))
        try:
            self._publish(kind, namespace, {**data, "requestId": request_id})
            return await request.wait(timeout or self.request_timeout)
        finally:
            self._requests.close(request_id)

    # ---------------------------------------------------------------- local delivery

    async def _emit_local(self, namespace: str, packet_data: list[Any], rooms: list[str],
                          excepts: list[str],
                          callback: Callable[..., Any] | None = None) -> int:
        """Send one event to the matching local clients; returns how many."""
        recipients = self._recipients(namespace, rooms, excepts)
        if not recipients:
            return 0
        server = self.server
        if callback is None:
            pkt = server.packet_class(sio_packet.EVENT, namespace=namespace,
                                      data=packet_data)
            encoded = pkt.encode()
            parts = encoded if isinstance(encoded, list) else [encoded]
            eio_pkts = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in parts]
            for eio_sid in recipients.values():
                for eio_pkt in eio_pkts:
                    await server._send_eio_packet(eio_sid, eio_pkt)
        else:
            for sid, eio_sid in recipients.items():
                ack_id = self._generate_ack_id(sid, callback)
                await server._send_packet(eio_sid, server.packet_class(
                    sio_packet.EVENT, namespace=namespace, data=packet_data, id=ack_id))
        # A long-polling client takes queued packets in one response, and
        # python-engineio's client rejects a response of more than 16 packets: let its
        # poll run between events (python-socketio's own manager yields the same way).
        # Websocket clients get one frame per packet and need no such pause.
        sockets = server.eio.sockets
        for eio_sid in recipients.values():
            sock = sockets.get(eio_sid)
            if sock is not None and not sock.upgraded:
                await asyncio.sleep(0)
                break
        return len(recipients)

    def _recipients(self, namespace: str, rooms: list[str],
                    excepts: list[str]) -> dict[str, str]:
        """sid -> eio_sid of the connected local clients that match."""
        ns_rooms = self.rooms.get(namespace)
        if not ns_rooms:
            return {}
        if rooms:
            found: dict[str, str] = {}
            for room in rooms:
                members = ns_rooms.get(room)
                if members:
                    found.update(members)
        else:
            found = dict(ns_rooms.get(None) or {})
        for room in excepts:
            for sid in ns_rooms.get(room) or ():
                found.pop(sid, None)
        pending = self.pending_disconnect.get(namespace)
        if pending:
            for sid in pending:
                found.pop(sid, None)
        return found

    def _local_sockets(self, namespace: str, rooms: list[str],
                       excepts: list[str]) -> list[tuple[str, list[str]]]:
        return [(sid, self.get_rooms(sid, namespace))
                for sid in self._recipients(namespace, rooms, excepts)
                if self.is_connected(sid, namespace)]

    def _apply_rooms(self, namespace: str, opts: dict[str, Any], rooms: list[str],
                     join: bool) -> None:
        for sid in self._recipients(namespace, _as_rooms(opts.get("rooms")),
                                    _as_rooms(opts.get("except"))):
            for room in rooms:
                if join:
                    self.basic_enter_room(sid, namespace, room)
                else:
                    self.basic_leave_room(sid, namespace, room)

    async def _disconnect_local(self, namespace: str, opts: dict[str, Any]) -> None:
        if self.server is None:
            return
        for sid in list(self._recipients(namespace, _as_rooms(opts.get("rooms")),
                                         _as_rooms(opts.get("except")))):
            await self.server.disconnect(sid, namespace=namespace, ignore_queue=True)

    # ---------------------------------------------------------------- receiving

    async def _on_payload(self, payload: bytes) -> None:
        """Entry point for every payload the backend receives."""
        if payload.startswith(self._own_prefix):
            return  # our own broadcast, echoed by the broker
        try:
            message = decode(payload)
        except MalformedMessage as exc:
            self._drop_malformed(str(exc))
            return
        if message.uid == self.uid:
            return
        try:
            await self._handlers[message.type](message)
            # heartbeats announce a node (an emitter sends none, so it is no node);
            # any other well-formed message from a known node keeps it alive
            if message.type in (MessageType.HEARTBEAT, MessageType.INITIAL_HEARTBEAT):
                if self.nodes.touch(message.uid):
                    self.log.info("node %s joined", message.uid)
            elif message.type is not MessageType.ADAPTER_CLOSE:
                self.nodes.refresh(message.uid)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            self._drop_malformed(f"{message.type.name} from {message.uid}: "
                                 f"{type(exc).__name__}: {exc}")
        except asyncio.CancelledError:
            raise
        except Exception:
            # never let one message break the subscription
            self.log.exception("error handling %s from %s", message.type.name, message.uid)

    def _drop_malformed(self, why: str) -> None:
        self.dropped_messages += 1
        if self.dropped_messages <= 10 or self.dropped_messages % 1000 == 0:
            self.log.warning("dropped a malformed cluster message (%d so far): %s",
                             self.dropped_messages, why)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("cluster task failed", exc_info=task.exception())

    async def _on_initial_heartbeat(self, message: Message) -> None:
        self._publish(MessageType.HEARTBEAT, "/", None, target=message.uid)

    async def _on_heartbeat(self, message: Message) -> None:
        pass  # touching the node table is all a heartbeat does

    async def _on_close(self, message: Message) -> None:
        self._node_gone(message.uid, "closed")

    def _node_gone(self, uid: str, why: str) -> None:
        self.nodes.remove(uid)
        self.log.info("node %s %s", uid, why)
        self._requests.drop_node(uid)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                self._publish(MessageType.HEARTBEAT, "/", None)
            except Exception:
                self.log.exception("could not queue a heartbeat")
            for uid in self.nodes.expire():
                self._node_gone(uid, f"silent for {self.nodes.timeout}s: dropped")
            deadline = time.monotonic() - self.callback_ttl
            for request_id, (created, _) in list(self._remote_callbacks.items()):
                if created < deadline:
                    del self._remote_callbacks[request_id]

    async def _on_broadcast(self, message: Message) -> None:
        if self.server is None:
            return
        data = message.data
        packet_data = list(data["packet"])
        opts = data["opts"]
        rooms, excepts = _as_rooms(opts["rooms"]), _as_rooms(opts["except"])
        request_id = data.get("requestId")
        if request_id is None:
            await self._emit_local(message.nsp, packet_data, rooms, excepts)
            return
        origin = message.uid

        def ack(*args: Any) -> None:
            self._publish(MessageType.BROADCAST_ACK, message.nsp,
                          {"requestId": request_id, "packet": list(args)}, target=origin)

        count = await self._emit_local(message.nsp, packet_data, rooms, excepts, ack)
        if data.get("all"):
            self._publish(MessageType.BROADCAST_CLIENT_COUNT, message.nsp,
                          {"requestId": request_id, "clientCount": count}, target=origin)

    async def _on_client_count(self, message: Message) -> None:
        request = self._requests.get(message.data["requestId"])
        if request is not None:
            request.expect(message.uid, int(message.data["clientCount"]))

    async def _on_broadcast_ack(self, message: Message) -> None:
        request_id = message.data["requestId"]
        args = list(message.data["packet"])
        entry = self._remote_callbacks.pop(request_id, None)
        if entry is not None:
            result = entry[1](*args)
            if inspect.isawaitable(result):
                self._spawn(result)
            return
        request = self._requests.get(request_id)
        if request is not None:
            request.add(message.uid, [_ack_value(args)])

    async def _on_sockets_join(self, message: Message) -> None:
        self._apply_rooms(message.nsp, message.data["opts"],
                          _as_rooms(message.data["rooms"]), join=True)
        self._confirm(message)

    async def _on_sockets_leave(self, message: Message) -> None:
        self._apply_rooms(message.nsp, message.data["opts"],
                          _as_rooms(message.data["rooms"]), join=False)
        self._confirm(message)

    async def _on_disconnect_sockets(self, message: Message) -> None:
        await self._disconnect_local(message.nsp, message.data["opts"])
        self._confirm(message)

    def _confirm(self, message: Message) -> None:
        """Tell the sender a change was applied here (when it waits for that). The
        answer travels as a response without values, like a server-side event that
        this node did not handle."""
        request_id = message.data.get("requestId")
        if request_id is not None:
            self._publish(MessageType.SERVER_SIDE_EMIT_RESPONSE, message.nsp,
                          {"requestId": request_id, "handled": False},
                          target=message.uid)

    async def _on_fetch_sockets(self, message: Message) -> None:
        opts = message.data["opts"]
        sockets = [{"id": sid, "rooms": rooms, "node": self.uid}
                   for sid, rooms in self._local_sockets(
                       message.nsp, _as_rooms(opts["rooms"]), _as_rooms(opts["except"]))]
        self._publish(MessageType.FETCH_SOCKETS_RESPONSE, message.nsp,
                      {"requestId": message.data["requestId"], "sockets": sockets},
                      target=message.uid)

    async def _on_server_side_emit(self, message: Message) -> None:
        event, *args = message.data["packet"]
        handler = self._server_handlers.get(event)
        request_id = message.data.get("requestId")
        if handler is None:
            if request_id is not None:
                self._publish(MessageType.SERVER_SIDE_EMIT_RESPONSE, message.nsp,
                              {"requestId": request_id, "handled": False},
                              target=message.uid)
            return
        self._spawn(self._run_server_handler(handler, args, message, request_id))

    async def _run_server_handler(self, handler: ServerEventHandler, args: list[Any],
                                  message: Message, request_id: Any) -> None:
        try:
            result = handler(*args)
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            self.log.exception("server-side event handler %r failed", handler)
            result, failed = None, True
        else:
            failed = False
        if request_id is not None:
            self._publish(MessageType.SERVER_SIDE_EMIT_RESPONSE, message.nsp,
                          {"requestId": request_id, "packet": result,
                           "handled": not failed}, target=message.uid)

    async def _on_response(self, message: Message) -> None:
        request = self._requests.get(message.data["requestId"])
        if request is None:
            return
        if message.type is MessageType.FETCH_SOCKETS_RESPONSE:
            request.add(message.uid, list(message.data["sockets"]))
        elif message.data.get("handled", True):
            request.add(message.uid, [message.data.get("packet")])
        else:
            request.add(message.uid, [])
