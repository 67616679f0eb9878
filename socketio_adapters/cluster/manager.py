"""ClusterManager: a python-socketio ``AsyncManager`` whose rooms, acks and requests
span every node that shares a backend.

This is the facade: the public API, wiring the parts of this package together (see
docs/architecture.md). Every operation publishes first, then acts locally, so a failed
publish (logged by the outbox) still reaches the local clients.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import socket
from collections.abc import Callable
from typing import Any

import socketio

from ..backends.base import LOG, Backend
from ..errors import NotStarted
from ..protocol import (
    Broadcast,
    Disconnect,
    MessageType,
    Target,
)
from ..recovery import (
    Recovery,
    RecoveryOptions,
    RecoverySetting,
)
from ..tasks import BackgroundTasks
from .api import ClusterApi
from .arguments import Room, as_args, target
from .callbacks import RemoteCallbacks
from .counters import Drops
from .heartbeats import Heartbeats
from .inbound import Inbound
from .local import LocalDelivery
from .nodes import NodeTable
from .ordering import SelfSync
from .publisher import Publisher
from .requests import Requester, RequestTable
from .resume import ResumeGate
from .rooms import RoomMembership
from .routing import RoomRouting
from .server_events import ServerEvents

__all__ = ["ClusterManager", "Room"]


class ClusterManager(ClusterApi, RoomMembership, socketio.AsyncManager):  # type: ignore[misc]
    """A client manager for ``socketio.AsyncServer`` that spans many nodes.

    :param backend: the :class:`~socketio_adapters.backends.base.Backend` that moves
        bytes between nodes (usually built by :func:`socketio_adapters.create_manager`).
    :param heartbeat_interval: seconds between heartbeats to the other nodes.
    :param heartbeat_timeout: a node not heard from for this long is considered dead;
        requests waiting on it complete with what arrived.
    :param request_timeout: default timeout of cluster requests (fetch_sockets,
        server-side emits with acks).
    :param write_only: an emitter: publishes only, never subscribes, is not a node.
    :param max_buffer: messages the outbox holds for the broker (while it is
        unreachable, or slower than the emitters); past that, or past
        ``max_buffer_bytes``, an emit waits for room (backpressure).
    :param max_buffer_bytes: bytes the outbox holds for the broker.
    :param buffer_timeout: seconds an emit waits for room in a full outbox before it
        raises :class:`~socketio_adapters.errors.OutboxFull` (nothing is dropped).
    :param callback_ttl: seconds a callback for a client on another node is kept when
        that client never answers.
    :param ordered: an emit returns once the broker accepted it, so an emit that
        starts afterwards on any node is delivered after it, at every client
        (default). False: it returns once queued (faster, Node's adapters' way), and
        emits of two nodes may then reach a client in either order.
    :param connection_state_recovery: turn on connection state recovery (see
        :class:`~socketio_adapters.recovery.RecoveryOptions`; usually set through
        :class:`socketio_adapters.AsyncServer`). An emitter of a cluster whose servers
        recover sessions needs it too, so that its events get offsets.
    :param subscriptions: ``"all"`` (default): every node receives every message.
        ``"rooms"``: a node receives the broadcasts to one room only while it has a
        member in it, on a backend that routes rooms; mixed clusters and emitters:
        see :mod:`socketio_adapters.cluster.routing`.
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
        max_buffer_bytes: int = 64 * 2**20,
        buffer_timeout: float = 10.0,
        callback_ttl: float = 300.0,
        ordered: bool = True,
        connection_state_recovery: RecoverySetting = None,
        subscriptions: str = "all",
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
        self.ordered = ordered
        self.log = logger or logging.getLogger("socketio_adapters.manager")
        self.nodes = NodeTable(heartbeat_timeout)
        self.drops = Drops(self.log)
        self.routing = RoomRouting(backend, subscriptions, request_timeout, self.log)
        self.tasks = BackgroundTasks(self.log)
        self.publisher = Publisher(self.uid, backend, self.log, max_buffer,
                                   max_buffer_bytes, buffer_timeout)
        self.requests = RequestTable()
        self.requester = Requester(self.publisher, self.nodes, self.requests,
                                   request_timeout, self.log)
        self.remote_callbacks = RemoteCallbacks(callback_ttl)
        self.heartbeats = Heartbeats(self.publisher, self.nodes, self.requests,
                                     heartbeat_interval, self.log,
                                     on_tick=self.remote_callbacks.expire)
        self.server_events = ServerEvents(self.publisher, self.tasks, self.log)
        self.local = LocalDelivery(self)
        self.inbound = Inbound(self.uid, self.local, self.publisher, self.heartbeats,
                               self.requests, self.remote_callbacks, self.server_events,
                               self.drops, self.tasks, self.log)
        self.self_sync = SelfSync(self.uid, self.publisher, request_timeout, self.log)
        self.inbound.self_sync = self.self_sync
        self.inbound.routing = self.routing
        self.heartbeats.joined_callbacks.append(self._peers_changed)
        self.heartbeats.gone_callbacks.append(self._peers_changed)
        self.heartbeats.self_sync = self.self_sync
        self.resume_gate = ResumeGate(self.publisher, self.nodes, backend.state,
                                      heartbeat_timeout, self.log, self.self_sync)
        self.inbound.resume_gate = self.resume_gate
        self.recovery: Recovery | None = None
        self._log_seq = itertools.count(1)
        self._starting: asyncio.Task[None] | None = None
        self._stopped = False
        self._told_first_use = False
        options = RecoveryOptions.coerce(connection_state_recovery)
        if options is not None:
            self.enable_recovery(options)

    # ---------------------------------------------------------------- lifecycle

    @property
    def started(self) -> bool:
        return self.publisher.outbox is not None

    async def start(self) -> None:
        """Connect to the broker and subscribe, then announce this node.

        Call it when the application starts (see :mod:`socketio_adapters.lifecycle`),
        so the node receives what others publish before its first client connects.
        Raises :class:`~socketio_adapters.backends.base.BrokerUnavailable` when the
        broker cannot be reached within the backend's ``connect_timeout``.
        """
        starting = self._starting
        if (starting is not None and not starting.done()
                and asyncio.current_task() is not starting):
            await asyncio.shield(starting)  # a first-use start is under way
            return
        if self.publisher.outbox is not None:
            return
        self._stopped = False
        self.routing.start()
        outbox = self.publisher.open()  # answers to early messages queue here
        if not self.write_only:  # an emitter hears no answers: it cannot hold
            outbox.gate = self.resume_gate
        try:
            await self.backend.start(
                self.uid, None if self.write_only else self.inbound.on_payload)
        except BaseException:
            self.publisher.outbox = None
            raise
        outbox.start()
        if not self.write_only:
            self.heartbeats.traits = self.routing.traits()
            self.heartbeats.start()
        self.log.info("node %s started on %s", self.uid, self.backend.name)

    async def stop(self, goodbye: bool = True) -> None:
        """Say goodbye to the other nodes, send what is queued, and disconnect. With
        ``goodbye=False`` stop at once, as a crash would: the others learn it from the
        missing heartbeats, and nothing queued is sent. Safe to call twice."""
        if self._starting is not None and not self._starting.done():
            await asyncio.gather(self._starting, return_exceptions=True)
        outbox = self.publisher.outbox
        if outbox is None:
            return
        self._stopped = True
        await self.heartbeats.stop(goodbye=goodbye and not self.write_only)
        await outbox.stop(5.0 if goodbye else 0.0)
        self.publisher.outbox = None
        await self.tasks.cancel(5.0, "server-side event handlers")
        await self.routing.stop()
        await self.backend.stop()
        self.log.info("node %s stopped", self.uid)

    def initialize(self) -> None:
        """Called by python-socketio on the first connection: starts the manager
        when the application did not (see :meth:`ensure_started`)."""
        super().initialize()
        if not hasattr(getattr(self.server, "eio", None), "join_cluster"):
            self.log.info(
                "%s serves this node: a long-polling request that reaches another node "
                "than the one that owns its session fails there (400 Invalid session), "
                "so long-polling clients need sticky routing. "
                "socketio_adapters.AsyncServer forwards such requests to the owner.",
                f"{type(self.server).__module__}.{type(self.server).__qualname__}")
        if not self.started and self._starting is None and not self._stopped:
            self._start_on_first_use()

    def _start_on_first_use(self) -> asyncio.Task[None]:
        if not self._told_first_use:
            self._told_first_use = True
            self.log.info(
                "ClusterManager on %s starts on first use. Start it with the application "
                "(socketio_adapters.LifespanMiddleware or attach_aiohttp) so the node "
                "hears the others before its first use and says goodbye when it stops.",
                self.backend.name)
        self._starting = asyncio.get_running_loop().create_task(self.start())
        return self._starting

    async def ensure_started(self) -> None:
        """Start the manager if nothing started it yet, and wait until it is
        subscribed. Every operation calls it first, so a manager given to
        ``socketio.AsyncServer(client_manager=...)`` works with python-socketio's
        API alone; a start that failed is tried again on the next use. Raises
        :class:`~socketio_adapters.errors.NotStarted` after :meth:`stop`."""
        starting = self._starting
        if starting is None or starting.done():
            if self.started:
                return
            if self._stopped:
                raise NotStarted("the manager was stopped; start() it again to use it")
            starting = self._start_on_first_use()
        await asyncio.shield(starting)

    async def ready(self) -> None:
        """Wait for a start that :meth:`initialize` began, if any."""
        starting = self._starting
        if starting is not None and not starting.done():
            await asyncio.shield(starting)

    async def flush(self) -> None:
        """Wait until every message published so far has reached the broker."""
        await self.ensure_started()
        await self.publisher.require().flush()

    @property
    def dropped_messages(self) -> int:
        """Malformed or foreign messages dropped so far."""
        return self.drops.count

    @property
    def host_id(self) -> str:
        """This node's name for the Socket.IO Admin UI (``sio.instrument()`` shows each
        server under its manager's ``host_id``): host, process and node uid, so every
        node of a host, and every manager of a process, is a server of its own."""
        return f"{socket.gethostname()}:{os.getpid()}:{self.uid[:6]}"

    def stats(self) -> dict[str, Any]:
        """Counters for monitoring: messages sent, dropped, queued; peer nodes.
        ``published`` and ``publish_dropped`` count over the manager's life, across
        stop() and start(); messages still queued at stop() count as dropped."""
        outbox, recovery, counters = self.publisher.outbox, self.recovery, self.publisher.counters
        return {
            "uid": self.uid,
            "nodes": len(self.nodes) + 1,
            "published": counters.sent,
            "queued": len(outbox) if outbox is not None else 0,
            "publish_dropped": counters.dropped,
            "malformed_dropped": self.drops.count,
            "pending_requests": len(self.requests),
            "reconnects": self.backend.state.reconnects,
            "sessions_saved": recovery.saved if recovery is not None else 0,
            "sessions_restored": recovery.restored if recovery is not None else 0,
            "connected": self.backend.state.connected,
            "deaf_resubscribes": self.heartbeats.deaf,
            "resumed_after_outage": self.resume_gate.passes,
            "received_broadcasts": self.inbound.broadcasts,
            "room_subscriptions": len(self.backend.room_keys),
            "routes_rooms": self.routing.enabled and self.routing.peers_route,
        }

    def _peers_changed(self, uid: str) -> None:
        """A node joined, left or announced something new: do all route rooms?"""
        self.routing.peers_changed({peer: self.nodes.info(peer)
                                    for peer in self.nodes.alive()})

    # ---------------------------------------------------------------- recovery

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
        backend = self.backend
        backend.enable_log(None if self.write_only else self.inbound.on_entry,
                           options.log_age, options.max_log_length,
                           options.log_cache_bytes)
        self.recovery = Recovery.build(
            options, self.uid, backend, backend if backend.capabilities.session_store
            else None, self.local, self.publisher, self.drops.drop, self.request_timeout,
            self.log)
        self.inbound.log_observer = self.recovery
        self.routing.enabled = False  # broadcasts go through the log every node reads

    # ---------------------------------------------------------------- AsyncManager API

    async def emit(self, event: str, data: Any, namespace: str | None = None,
                   room: Room = None, skip_sid: Any = None,
                   callback: Callable[..., Any] | None = None, to: Room = None,
                   **kwargs: Any) -> None:
        """Emit to every client, a room, several rooms (union) or one sid, on every
        node. ``skip_sid`` takes sids or rooms to leave out (socket.io's ``except``).
        With ``callback``, ``to`` must be one sid, which may be on any node.

        Returns once the broker accepted the message (``ordered``, the default),
        or once it is queued (``ordered=False``; :meth:`flush` waits for the
        broker). While the broker is unreachable it returns once the message is
        buffered, to be sent in order on its return.
        """
        namespace = namespace or "/"
        selected = target(to if to is not None else room, skip_sid)
        packet = [event, *as_args(data)]
        if kwargs.get("ignore_queue"):
            await self.local.emit(namespace, packet, selected, callback)
            return
        await self.ensure_started()
        if callback is not None:
            if self.server is None:
                raise ValueError("an emitter (no server) cannot receive acks: callbacks "
                                 "need a ClusterManager attached to an AsyncServer")
            if len(selected.rooms) != 1:
                raise ValueError("a callback needs exactly one recipient sid; use "
                                 "emit_with_ack() to collect acks from a room")
            await self._emit_with_callback(packet, namespace, selected.rooms[0], callback)
            return
        # with recovery every node, this one too, delivers it from the log, with its
        # offset, in log order
        log = self.recovery is not None
        publisher = self.publisher
        # before delivering to its own clients a node reads on past a marker sent
        # now: every emit another node got accepted before this one started is then
        # delivered here first (the marker travels with the message: one round trip);
        # with no local client to deliver to, there is nothing to put in order
        marker = (self.self_sync.mark() if self.ordered and not log
                  and self.server is not None and publisher.require().reachable
                  and self.local.selects_any(namespace, selected) else None)
        accepted = await publisher.send(
            MessageType.BROADCAST, namespace,
            Broadcast(packet, selected, seq=next(self._log_seq) if log else None),
            target=LOG if log else self.routing.target(namespace, selected),
            ordered=self.ordered,
            timeout=self.request_timeout)
        if marker is not None and accepted:  # else the broker is away: deliver at once
            await self.self_sync.caught_up(marker)
        if log or self.server is None:
            return
        await self.local.emit(namespace, packet, selected)

    async def _emit_with_callback(self, packet: list[Any], namespace: str, sid: str,
                                  callback: Callable[..., Any]) -> None:
        only = Target((sid,))
        if self.is_connected(sid, namespace):
            await self.local.emit(namespace, packet, only, callback)
            return
        request_id = self.remote_callbacks.add(callback)
        await self.publisher.send(MessageType.BROADCAST, namespace,
                                  Broadcast(packet, only, request_id),
                                  ordered=self.ordered, timeout=self.request_timeout)

    async def pre_connect(self, sid: str, namespace: str) -> Any:
        await self.ensure_started()  # subscribed before this node has a client
        return await super().pre_connect(sid, namespace)

    async def can_disconnect(self, sid: str, namespace: str) -> bool:
        if self.is_connected(sid, namespace):
            return True
        await self.ensure_started()
        only = Target((sid,))
        await self.requester.change(MessageType.DISCONNECT_SOCKETS, namespace or "/",
                                    lambda rid: Disconnect(only, rid))
        return False
