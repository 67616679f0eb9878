"""The edge node of the distributor mode: a python-socketio server that holds the
clients' connections for namespaces whose logic runs on application servers
elsewhere (:class:`~socketio_adapters.distributor.ApplicationServer`).

For each relayed namespace the edge node carries over the cluster's backend:

- to the application server handling the socket (one per socket, chosen by
  rendezvous hashing among the servers of its namespace, kept until that server is
  gone): its connect (with the portable part of ``environ`` and ``auth``), every
  event, and its disconnect, numbered in order; the server's answer to the connect
  accepts or refuses it, its answer to an event is the client's ack;
- to the clients it holds: whatever the application servers emit, their room changes
  and disconnects, through the cluster's ordinary messages, and their reads and
  writes of a socket's session, which lives here, with the socket (and is kept with
  it for connection state recovery).

A step not yet answered is kept; when the server handling the socket leaves or falls
silent, the socket moves to another server of the namespace and its unanswered steps
are sent there again, in order. With no server of the namespace alive, steps wait
for one to announce itself, up to ``step_timeout``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import socketio

from ..cluster import ClusterManager
from ..errors import AdapterError, ConfigurationError, NotStarted
from ..protocol import (
    ClientConnect,
    ClientDisconnect,
    ClientDone,
    ClientEvent,
    Message,
    MessageType,
    Response,
    SocketSession,
)
from .environ import portable_environ
from .routes import Route, Step
from .services import pick, serves

__all__ = ["Authenticate", "EdgeRelay"]

Authenticate = Callable[[dict[str, Any], Any], Any]
"""``authenticate(environ, auth)``: raise ``socketio.exceptions.ConnectionRefusedError``
to refuse a client; what it returns (may be awaitable) travels to the application
server as ``environ["socketio_adapters.identity"]``."""

_log = logging.getLogger("socketio_adapters.edge")


class EdgeRelay:
    """Makes a python-socketio server an edge node for ``namespaces`` ("*": every
    namespace a client asks for).

    :param server: a ``socketio.AsyncServer`` (or :class:`socketio_adapters.AsyncServer`,
        which adds connection state recovery and needs no sticky sessions) whose
        client manager is a :class:`~socketio_adapters.ClusterManager`.
    :param authenticate: checks a client before its connect is relayed (see
        :data:`Authenticate`); by default the application server decides alone.
    :param step_timeout: seconds a connect or an event waits for an application
        server's answer, the wait for a server to exist included; past it the
        client is refused (a connect) or gets no ack (an event), and it is logged.
    """

    def __init__(self, server: socketio.AsyncServer, namespaces: str | Iterable[str] = "*",
                 *, authenticate: Authenticate | None = None,
                 step_timeout: float = 30.0) -> None:
        manager = server.manager
        if not isinstance(manager, ClusterManager):
            raise ConfigurationError(
                "an edge node needs a ClusterManager as its server's client_manager "
                f"(see create_manager), not {type(manager).__name__}")
        if manager.write_only:
            raise ConfigurationError("an edge node cannot use a write-only manager")
        self.server = server
        self.manager = manager
        self.authenticate = authenticate
        self.step_timeout = step_timeout
        self.routes: dict[tuple[str, str], Route] = {}
        self.counters = {"steps": 0, "answered": 0, "resent": 0, "timed_out": 0,
                         "refused": 0}
        names = ["*"] if isinstance(namespaces, str) and namespaces == "*" else (
            [namespaces] if isinstance(namespaces, str) else list(namespaces))
        if names == ["*"]:
            server.namespaces = "*"
        for name in names:
            server.register_namespace(_RelayNamespace(name, self))
        manager.inbound.handle(MessageType.CLIENT_DONE, self._on_done)
        manager.inbound.handle(MessageType.SOCKET_SESSION, self._on_session)
        manager.on_node_gone(self._server_gone)
        manager.on_node_joined(self._server_joined)
        restored = getattr(server, "restore_callbacks", None)
        if isinstance(restored, list):
            restored.append(self._restored)

    def stats(self) -> dict[str, int]:
        """Steps relayed, answered, sent again to another server, timed out; connects
        refused; sockets held."""
        return {**self.counters, "sockets": len(self.routes)}

    # ------------------------------------------------------------ the client side

    async def connect(self, namespace: str, sid: str, environ: dict[str, Any],
                      auth: Any) -> bool:
        """A client connects: its application server accepts or refuses it."""
        identity = None
        if self.authenticate is not None:
            identity = self.authenticate(environ, auth)
            if inspect.isawaitable(identity):
                identity = await identity
        route = Route(namespace, sid)
        self.routes[(namespace, sid)] = route
        step = route.add(MessageType.CLIENT_CONNECT, lambda seq: ClientConnect(
            sid, seq, portable_environ(environ, identity), auth))
        done = await self._relay(route, step)
        if done is None or done.refused is not None:
            self.routes.pop((namespace, sid), None)
            self.counters["refused"] += 1
            if done is None:
                raise socketio.exceptions.ConnectionRefusedError(
                    f"no application server answered for namespace {namespace}")
            raise _refusal(done.refused)
        route.connected = True
        return True

    async def event(self, namespace: str, sid: str, packet: list[Any]) -> Any:
        """A client's event: what its application server answers is the ack."""
        route = self.routes.get((namespace, sid)) or self._taken_over(namespace, sid)
        if route is None:
            return self.server.not_handled
        step = route.add(MessageType.CLIENT_EVENT,
                         lambda seq: ClientEvent(sid, seq, packet))
        done = await self._relay(route, step)
        if done is None or not done.handled:
            return self.server.not_handled
        args = done.value if isinstance(done.value, list) else []
        return args[0] if len(args) == 1 else tuple(args)

    async def disconnect(self, namespace: str, sid: str, reason: str) -> None:
        """A client left: its application server is told, in order."""
        route = self.routes.get((namespace, sid))
        if route is None:
            return
        step = route.add(MessageType.CLIENT_DISCONNECT,
                         lambda seq: ClientDisconnect(sid, seq, reason))

        async def finish() -> None:
            await self._relay(route, step)
            if self.routes.get((namespace, sid)) is route:
                del self.routes[(namespace, sid)]

        self.manager.tasks.spawn(finish())

    def _restored(self, namespace: str, sid: str) -> None:
        """A socket restored here (connection state recovery): an application
        server takes it without running its connect handler."""
        if self._relays(namespace) and (namespace, sid) not in self.routes:
            self._taken_over(namespace, sid)

    def _taken_over(self, namespace: str, sid: str) -> Route | None:
        """A route for a socket connected here that has none: restored, and its
        first event came before the restore ended (None: not connected here)."""
        if not self.manager.local.holds(sid, namespace):
            return None
        route = Route(namespace, sid, connected=True, next_seq=1)
        self.routes[(namespace, sid)] = route
        self._assign(route)
        return route

    def _relays(self, namespace: str) -> bool:
        handlers = self.server.namespace_handlers
        handler = handlers.get(namespace, handlers.get("*"))
        return isinstance(handler, _RelayNamespace) and handler.relay is self

    # ------------------------------------------------------------ to the servers

    async def _relay(self, route: Route, step: Step) -> ClientDone | None:
        """Send ``step`` (now, or once a server exists) and wait for its answer."""
        self.counters["steps"] += 1
        if route.server is None:
            self._assign(route)
        else:
            self._send(route, step)
        try:
            return await asyncio.wait_for(asyncio.shield(step.done), self.step_timeout)
        except asyncio.CancelledError:
            route.abandon(step.seq)  # this edge node is stopping: not sent again
            raise
        except asyncio.TimeoutError:
            if step.done.done() and not step.done.cancelled():
                return step.done.result()
            route.abandon(step.seq)
            self.counters["timed_out"] += 1
            _log.warning("%s of %s [%s]: no answer from %s within %ss",
                         step.kind.name, route.sid, route.namespace,
                         route.server or "any application server", self.step_timeout)
            return None

    def servers(self, namespace: str) -> list[str]:
        """The application servers of ``namespace`` alive now."""
        manager = self.manager
        return [uid for uid in manager.peers() if serves(manager.node_info(uid), namespace)]

    def _assign(self, route: Route) -> None:
        """Choose ``route``'s server and send it every unanswered step, in order
        (after a takeover notice when the socket is already connected)."""
        route.server = pick(f"{route.namespace}\0{route.sid}", self.servers(route.namespace))
        if route.server is None:
            return
        if route.connected:
            self._publish(route, MessageType.CLIENT_CONNECT, ClientConnect(
                route.sid, route.taken_up_to, run_handler=False))
        for step in list(route.steps.values()):
            self._send(route, step)

    def _send(self, route: Route, step: Step) -> None:
        if not self._publish(route, step.kind, step.payload):
            route.abandon(step.seq)

    def _publish(self, route: Route, kind: MessageType, payload: Any) -> bool:
        try:
            self.manager.publisher.publish(kind, route.namespace, payload,
                                           target=route.server)
        except NotStarted:
            return False  # this edge node is stopping
        except AdapterError as exc:  # too large for the backend, say
            _log.warning("%s of %s [%s] not relayed: %s", kind.name, route.sid,
                         route.namespace, exc)
            return False
        return True

    def _server_gone(self, uid: str) -> None:
        for route in list(self.routes.values()):
            if route.server == uid:
                self.counters["resent"] += len(route.steps)
                self._assign(route)

    def _server_joined(self, uid: str) -> None:
        info = self.manager.node_info(uid)
        for route in list(self.routes.values()):
            if route.server is None and serves(info, route.namespace):
                self._assign(route)

    # ------------------------------------------------------------ from the servers

    async def _on_done(self, message: Message, done: ClientDone) -> None:
        route = self.routes.get((message.nsp, done.sid))
        if route is not None and route.answered(done) is not None:
            self.counters["answered"] += 1

    async def _on_session(self, message: Message, request: SocketSession) -> None:
        server, nsp = self.server, message.nsp
        value: Any = None
        if self.manager.local.holds(request.sid, nsp):
            if request.data is None:
                value = await server.get_session(request.sid, namespace=nsp)
            else:
                await server.save_session(request.sid, request.data, namespace=nsp)
                value = True
        self.manager.publisher.publish(
            MessageType.SERVER_SIDE_EMIT_RESPONSE, nsp,
            Response(request.request_id, value, handled=value is not None),
            target=message.uid)


def _refusal(error_args: Any) -> socketio.exceptions.ConnectionRefusedError:
    if isinstance(error_args, dict) and isinstance(error_args.get("message"), str):
        if "data" in error_args:
            return socketio.exceptions.ConnectionRefusedError(error_args["message"],
                                                              error_args["data"])
        return socketio.exceptions.ConnectionRefusedError(error_args["message"])
    return socketio.exceptions.ConnectionRefusedError()


class _RelayNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """python-socketio's class-based namespace, every event of which goes to the
    relay (for "*", python-socketio passes the namespace first)."""

    def __init__(self, namespace: str, relay: EdgeRelay) -> None:
        super().__init__(namespace)
        self.relay = relay

    def trigger_event(self, event: str, *args: Any) -> Awaitable[Any]:
        if self.namespace == "*":
            namespace, *rest = args
        else:
            namespace, rest = self.namespace, list(args)
        relay = self.relay
        if event == "connect":
            sid, environ, *auth = rest
            return relay.connect(namespace, sid, environ, auth[0] if auth else None)
        if event == "disconnect":
            sid, *reason = rest
            return relay.disconnect(namespace, sid, reason[0] if reason else "unknown")
        sid, *data = rest
        return relay.event(namespace, sid, [event, *data])
