"""The application server of the distributor mode: python-socketio's server API for
one namespace, in a process that holds no client connection. Edge nodes
(:class:`~socketio_adapters.distributor.EdgeRelay`) hold the clients and send it
their connects, events and disconnects over the cluster's backend; what it emits,
its room changes, disconnects and session writes go back to them.

Several application servers of one namespace share its sockets: each socket is
handled by one of them (rendezvous hashing, decided by the edge node), its steps one
at a time and in order, until that server leaves or falls silent; its sockets' steps
not yet answered, and all later ones, then go to the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, overload

import socketio

from ..cluster import ClusterManager, RemoteSocket, Room
from ..cluster.arguments import as_args, as_rooms
from ..errors import ConfigurationError
from ..protocol import (
    Broadcast,
    ClientConnect,
    ClientDisconnect,
    ClientDone,
    Disconnect,
    FetchSockets,
    Message,
    MessageType,
    RoomChange,
    SocketInfo,
    SocketSession,
    Target,
)
from ..recovery import RecoveryOptions, RecoverySetting
from ..registry import create_manager
from .handling import Sockets, StepPayload
from .services import announcement

__all__ = ["ApplicationServer"]

Handler = Callable[..., Any]
H = TypeVar("H", bound=Handler)
_log = logging.getLogger("socketio_adapters.app")


class ApplicationServer:
    """The handlers of one namespace, run for the clients of every edge node.

    >>> app = ApplicationServer("redis://127.0.0.1:6379/0", namespace="/chat")
    >>> @app.event
    ... async def message(sid, data):
    ...     await app.emit("message", data, room="lobby", skip_sid=sid)
    ...     return "ok"                       # the client's ack
    >>> app.run()                             # or: await app.start() ... await app.stop()

    :param url: the cluster's backend (as :func:`socketio_adapters.create_manager`),
        or pass ``client_manager``.
    :param namespace: the namespace whose handlers this server runs.
    :param connection_state_recovery: the edge nodes' recovery setting: on, this
        server's emits go through the durable log like theirs, so that a client that
        lost its connection gets them on its return.
    :param manager_options: options of :func:`create_manager`.
    """

    def __init__(self, url: str | None = None, namespace: str = "/", *,
                 client_manager: ClusterManager | None = None,
                 connection_state_recovery: RecoverySetting = None,
                 **manager_options: Any) -> None:
        if client_manager is not None and (url is not None or manager_options):
            raise ConfigurationError("give an ApplicationServer a url or a client_manager,"
                                     " not both")
        manager = client_manager or create_manager(url, **manager_options)
        if manager.write_only:
            raise ConfigurationError("an application server cannot use a write-only "
                                     "manager")
        options = RecoveryOptions.coerce(connection_state_recovery)
        if options is not None:
            manager.enable_recovery(options)
        self.namespace = namespace
        self.manager = manager
        # python-socketio's server object, never attached to a web application: the
        # manager needs one to take acks from clients for call()
        self.sio = socketio.AsyncServer(client_manager=manager)
        self.handlers: dict[str, Handler] = {}
        self.sockets = Sockets(self._run, self._answer, manager.tasks.spawn)
        manager.announce(announcement([namespace]))
        for kind in (MessageType.CLIENT_CONNECT, MessageType.CLIENT_EVENT,
                     MessageType.CLIENT_DISCONNECT):
            manager.inbound.handle(kind, self._on_step)
        manager.on_node_gone(self._node_gone)
        self._stopping: asyncio.Event | None = None

    # ------------------------------------------------------------ handlers

    @overload
    def on(self, event: str) -> Callable[[H], H]: ...

    @overload
    def on(self, event: str, handler: H) -> H: ...

    def on(self, event: str, handler: H | None = None) -> H | Callable[[H], H]:
        """Register ``handler`` for ``event`` (``connect(sid, environ, auth)``,
        ``disconnect(sid, reason)``, an event ``(sid, *args)``, ``"*"`` for any
        event ``(event, sid, *args)``); usable as a decorator. An event handler's
        return value is the client's ack (a tuple: several arguments)."""
        def register(func: H) -> H:
            self.handlers[event] = func
            return func
        return register(handler) if handler is not None else register

    def event(self, handler: H) -> H:
        """Register ``handler`` for the event named like it (a decorator)."""
        return self.on(handler.__name__, handler)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect to the broker and announce this server to the edge nodes."""
        await self.manager.start()

    async def stop(self) -> None:
        """Say goodbye (edge nodes move this server's sockets to the others at once)
        and disconnect."""
        await self.manager.stop()

    async def serve(self) -> None:
        """Start, run until SIGINT or SIGTERM (or :meth:`close`), then stop."""
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stopping.set)
        await self.start()
        try:
            await self._stopping.wait()
        finally:
            await self.stop()

    def close(self) -> None:
        """End :meth:`serve`."""
        if self._stopping is not None:
            self._stopping.set()

    def run(self) -> None:
        """Run :meth:`serve` in a new event loop (a process's main)."""
        asyncio.run(self.serve())

    def stats(self) -> dict[str, Any]:
        """The manager's counters, the sockets handled here and steps received twice."""
        return {**self.manager.stats(), "sockets": len(self.sockets.table),
                "step_copies": self.sockets.copies}

    # ------------------------------------------------------------ python-socketio's API

    async def emit(self, event: str, data: Any = None, to: Room = None, room: Room = None,
                   skip_sid: Room = None, namespace: str | None = None,
                   callback: Callable[..., Any] | None = None) -> None:
        """Emit to a sid, a room, several rooms or everyone, on every edge node.
        One socket's events go to its edge node alone."""
        namespace = namespace or self.namespace
        rooms = as_rooms(to if to is not None else room)
        edge = (self.sockets.edge_of(namespace, rooms[0])
                if len(rooms) == 1 and skip_sid is None else None)
        manager = self.manager
        if edge is None or manager.recovery is not None or edge not in manager.peers():
            await manager.emit(event, data, namespace, to=list(rooms) or None,
                               skip_sid=skip_sid, callback=callback)
            return
        request_id = None if callback is None else manager.remote_callbacks.add(callback)
        await manager.publisher.send(
            MessageType.BROADCAST, namespace,
            Broadcast([event, *as_args(data)], Target(rooms), request_id), target=edge,
            ordered=manager.ordered, timeout=manager.request_timeout)

    async def send(self, data: Any, to: Room = None, room: Room = None,
                   skip_sid: Room = None, namespace: str | None = None,
                   callback: Callable[..., Any] | None = None) -> None:
        """Emit a ``message`` event."""
        await self.emit("message", data, to, room, skip_sid, namespace, callback)

    async def call(self, event: str, data: Any = None, to: str | None = None,
                   sid: str | None = None, namespace: str | None = None,
                   timeout: float = 60.0) -> Any:
        """Emit to one client and wait for its ack (a tuple: several arguments);
        raises ``socketio.exceptions.TimeoutError``."""
        recipient = to or sid
        if recipient is None:
            raise ValueError("call() needs a sid (to=)")
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def acked(*args: Any) -> None:
            if not answer.done():
                answer.set_result(args[0] if len(args) == 1 else args or None)

        await self.emit(event, data, to=recipient, namespace=namespace, callback=acked)
        try:
            return await asyncio.wait_for(answer, timeout)
        except asyncio.TimeoutError:
            raise socketio.exceptions.TimeoutError() from None

    async def enter_room(self, sid: str, room: str, namespace: str | None = None) -> None:
        await self._change_room(True, sid, room, namespace or self.namespace)

    async def leave_room(self, sid: str, room: str, namespace: str | None = None) -> None:
        await self._change_room(False, sid, room, namespace or self.namespace)

    async def _change_room(self, join: bool, sid: str, room: str, namespace: str) -> None:
        kind = MessageType.SOCKETS_JOIN if join else MessageType.SOCKETS_LEAVE
        edge = await self._edge(namespace, sid)
        if edge is None:
            return  # no node holds it: it is gone
        await self.manager.requester.ask_node(
            kind, namespace, edge, lambda rid: RoomChange(Target((sid,)), (room,), rid),
            self.manager.request_timeout)

    async def close_room(self, room: str, namespace: str | None = None) -> None:
        """Every socket leaves ``room``, on every edge node."""
        await self.manager.sockets_leave(room, to=room, namespace=namespace or self.namespace)

    async def rooms(self, sid: str, namespace: str | None = None) -> list[str]:
        """The rooms of ``sid`` (its own room included); [] when it is gone."""
        namespace = namespace or self.namespace
        edge = await self._edge(namespace, sid)
        if edge is None:
            return []
        found: list[SocketInfo] = await self.manager.requester.ask_node(
            MessageType.FETCH_SOCKETS, namespace, edge,
            lambda rid: FetchSockets(Target((sid,)), rid), self.manager.request_timeout)
        return [room for info in found for room in info.rooms]

    async def disconnect(self, sid: str, namespace: str | None = None) -> None:
        """Disconnect the client; its ``disconnect`` handler then runs here with
        "server disconnect"."""
        namespace = namespace or self.namespace
        edge = await self._edge(namespace, sid)
        if edge is not None:
            await self.manager.requester.ask_node(
                MessageType.DISCONNECT_SOCKETS, namespace, edge,
                lambda rid: Disconnect(Target((sid,)), rid), self.manager.request_timeout)

    async def get_session(self, sid: str, namespace: str | None = None) -> dict[str, Any]:
        """The client's session, kept by its edge node (and restored with it)."""
        namespace = namespace or self.namespace
        value = await self._session(namespace, sid, None)
        if not isinstance(value, dict):
            raise KeyError(f"no session for {sid} [{namespace}]: it is not connected")
        return value

    async def save_session(self, sid: str, session: dict[str, Any],
                           namespace: str | None = None) -> None:
        """Replace the client's session (msgpack types only)."""
        namespace = namespace or self.namespace
        if await self._session(namespace, sid, dict(session)) is not True:
            raise KeyError(f"no session for {sid} [{namespace}]: it is not connected")

    @contextlib.asynccontextmanager
    async def session(self, sid: str, namespace: str | None = None
                      ) -> AsyncIterator[dict[str, Any]]:
        """``async with app.session(sid) as session:``: read, change, saved on exit."""
        data = await self.get_session(sid, namespace)
        yield data
        await self.save_session(sid, data, namespace)

    async def _session(self, namespace: str, sid: str, data: dict[str, Any] | None) -> Any:
        edge = await self._edge(namespace, sid)
        if edge is None:
            return None
        answers = await self.manager.requester.ask_node(
            MessageType.SOCKET_SESSION, namespace, edge,
            lambda rid: SocketSession(sid, rid, data), self.manager.request_timeout)
        return answers[0] if answers else None

    # ------------------------------------------------------------ the cluster API

    async def fetch_sockets(self, to: Room = None, namespace: str | None = None,
                            skip_sid: Room = None,
                            timeout: float | None = None) -> list[RemoteSocket]:
        """The matching sockets of every edge node."""
        return await self.manager.fetch_sockets(to, namespace or self.namespace,
                                                timeout=timeout, skip_sid=skip_sid)

    async def emit_with_ack(self, event: str, data: Any = None, to: Room = None,
                            namespace: str | None = None, skip_sid: Room = None,
                            timeout: float = 5.0) -> list[Any]:
        """Emit to every matching client and collect their acks."""
        return await self.manager.emit_with_ack(event, data, to, namespace or self.namespace,
                                                timeout=timeout, skip_sid=skip_sid)

    async def server_count(self) -> int:
        """Nodes of the cluster: edge nodes and application servers, this one too."""
        return await self.manager.server_count()

    # ------------------------------------------------------------ steps

    async def _edge(self, namespace: str, sid: str) -> str | None:
        """The edge node holding ``sid``: the sender of its latest step when alive,
        else whichever node says it holds it."""
        edge = self.sockets.edge_of(namespace, sid)
        if edge is not None and edge in self.manager.peers():
            return edge
        found = await self.manager.fetch_sockets(to=sid, namespace=namespace)
        return found[0].node if found else None

    async def _on_step(self, message: Message, step: StepPayload) -> None:
        if message.nsp != self.namespace:
            _log.warning("a %s for namespace %s, which this server does not serve",
                         message.type.name, message.nsp)
            return
        self.sockets.take(message.nsp, message.uid, step)

    def _answer(self, namespace: str, edge: str, done: ClientDone) -> None:
        self.manager.publisher.publish(MessageType.CLIENT_DONE, namespace, done,
                                       target=edge)

    def _node_gone(self, uid: str) -> None:
        lost = self.sockets.edge_gone(uid)
        if lost:
            _log.info("edge node %s is gone: %d sockets disconnected", uid, len(lost))

    async def _run(self, namespace: str, step: StepPayload) -> ClientDone:
        sid = step.sid
        if isinstance(step, ClientConnect):
            try:
                accepted = await self._call("connect", (sid, dict(step.environ),
                                                        step.auth), legacy=2)
            except socketio.exceptions.ConnectionRefusedError as exc:
                return ClientDone(sid, step.seq, refused=exc.error_args)
            if accepted is False:
                return ClientDone(sid, step.seq, refused=socketio.exceptions
                                  .ConnectionRefusedError().error_args)
            return ClientDone(sid, step.seq)
        if isinstance(step, ClientDisconnect):
            await self._call("disconnect", (sid, step.reason), legacy=1)
            return ClientDone(sid, step.seq, handled=False)
        name, *args = step.packet
        if name in self.handlers and name not in ("connect", "disconnect"):
            result = await self._call(name, (sid, *args))
        elif "*" in self.handlers:
            result = await self._call("*", (name, sid, *args))
        else:
            return ClientDone(sid, step.seq, handled=False)
        return ClientDone(sid, step.seq, as_args(result))

    async def _call(self, event: str, args: tuple[Any, ...], legacy: int | None = None
                    ) -> Any:
        """Run the handler of ``event`` (None when there is none); a connect or
        disconnect handler that takes fewer arguments gets the first ``legacy``."""
        handler = self.handlers.get(event)
        if handler is None:
            return None
        if legacy is not None and _takes_fewer(handler, len(args)):
            args = args[:legacy]
        result = handler(*args)
        if inspect.isawaitable(result):
            result = await result
        return result


def _takes_fewer(handler: Handler, count: int) -> bool:
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return False
    try:
        signature.bind(*range(count))
    except TypeError:
        return True
    return False
