"""Sessions with no sticky routing: a long-polling request that reaches a node which
does not own its engine.io session is served by the owner, over the cluster.

Each session id starts with its owner's node uid, so any node tells at once whose it
is. A GET or POST of the long-polling transport for another node's session is sent
to that node (``ENGINE_REQUEST``), which runs it against its engine.io socket and
answers with the HTTP response to give. The websocket that upgrades such a session
stays on the node it reached and is relayed to the owner (:mod:`.relay`), where
engine.io's own upgrade runs against it. A session no live node owns gets
engine.io's own error, as on one node; a node's own sessions cost nothing more.
With cluster/local.py and websocket.py (its websocket driver, which the relays here
use too), this is the only module that touches python-engineio's internals.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import engineio
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet

from .cluster import ClusterManager
from .errors import ClusterTimeout, NotStarted, PayloadTooLarge
from .polling import cap_polls_for
from .protocol import EngineFrame, EngineRequest, FrameKind
from .relay import RelayEnd, pump
from .websocket import websocket_compression as choose_compression

__all__ = ["ForwardCounts", "ForwardingEngine", "owner_of"]

_log = logging.getLogger("socketio_adapters.forwarding")
_UID_LENGTH = 16
"""Hex characters of a node uid (``ClusterManager.uid``) at the start of a sid."""
_HEADERS = ("content-type", "user-agent", "origin")
"""Request headers engine.io reads that travel with a forwarded request."""
_MARGIN = 10.0
"""Seconds a forwarded long-poll may take beyond engine.io's ping interval."""


@dataclass
class ForwardCounts:
    """What one node forwarded and served for the others since it started."""

    forwarded: int = 0
    """Long-polling requests this node sent to the session's owner."""
    served: int = 0
    """Long-polling requests this node served for sessions it owns, from others."""
    relayed: int = 0
    """Websockets this node held and relayed to their session's owner."""
    taken: int = 0
    """Websockets of this node's sessions that another node relayed here."""


def owner_of(sid: str) -> str | None:
    """The uid of the node that owns engine.io session ``sid`` (None: not ours)."""
    tag = sid[:_UID_LENGTH]
    if len(tag) == _UID_LENGTH and all(c in "0123456789abcdef" for c in tag):
        return tag
    return None


def _peek(args: tuple[Any, ...]) -> tuple[str, str] | None:
    """The method and query string of an aiohttp or ASGI request, read without
    consuming it (None for other frameworks: no forwarding)."""
    first = args[0] if args else None
    if isinstance(first, Mapping) and first.get("type") in ("http", "websocket"):  # ASGI
        query = first.get("query_string", b"")
        return str(first.get("method", "GET")), (
            query.decode("latin-1") if isinstance(query, bytes) else str(query))
    method, query = getattr(first, "method", None), getattr(first, "query_string", None)
    if isinstance(method, str) and isinstance(query, str):  # aiohttp.web.Request
        return method, query
    return None


class _Body:
    """``wsgi.input`` of a forwarded request: its body, read once."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def read(self, length: int | None = None) -> bytes:
        body, self._body = self._body, b""
        return body if length is None else body[:length]


@dataclass(frozen=True)
class _Route:
    """A request whose session another live node owns: what forwarding it needs."""

    cluster: ClusterManager
    owner: str
    sid: str
    method: str
    query_string: str
    transport: str


class ForwardingEngine(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server, serving the long-polling requests of sessions that
    other nodes own through them (see the module doc).

    :param websocket_compression: whether websockets accept ``permessage-deflate``
        (see :mod:`socketio_adapters.websocket`); off by default, as Node's engine.io.
        It applies to ``async_mode="aiohttp"``; in other modes the web server decides
        (uvicorn: ``--ws-per-message-deflate``), and ``True`` raises
        :class:`~socketio_adapters.ConfigurationError`.
    """

    cluster: ClusterManager | None = None
    """Set by :meth:`join_cluster` (:class:`socketio_adapters.AsyncServer` calls it)."""

    def __init__(self, *args: Any, websocket_compression: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.async_mode == "aiohttp" or websocket_compression:
            choose_compression(self, websocket_compression)
        self.websocket_compression = websocket_compression
        self.relays: dict[str, RelayEnd] = {}
        """This node's ends of relayed websockets, by session id (as edge or owner)."""
        self._relay_tasks: set[asyncio.Task[None]] = set()
        self.counts = ForwardCounts()

    def join_cluster(self, cluster: ClusterManager) -> None:
        """Serve and forward through ``cluster``: its other nodes' requests and
        relayed websockets reach this engine."""
        self.cluster = cluster
        cluster.inbound.engine_requests = self.serve_forwarded
        cluster.inbound.engine_frames = self.take_frame
        cluster.on_node_gone(self._node_gone)

    def generate_id(self) -> str:
        sid: str = super().generate_id()
        cluster = self.cluster
        return sid if cluster is None else f"{cluster.uid}{sid}"

    async def handle_request(self, *args: Any, **kwargs: Any) -> Any:
        # the choice is made in a function of its own: a websocket served here keeps
        # this frame for its whole life, and nothing it parsed with it
        route = self._owner_route(args)
        if route is None:
            return await super().handle_request(*args, **kwargs)
        return await self._forward(route, args, kwargs)

    def _owner_route(self, args: tuple[Any, ...]) -> _Route | None:
        """Where a request goes when its session is another live node's (None: served
        here)."""
        peeked = _peek(args)
        cluster = self.cluster
        if peeked is None or cluster is None:
            return None
        method, query_string = peeked
        query = urllib.parse.parse_qs(query_string)
        sid = query.get("sid", [None])[0]
        owner = None if sid is None or sid in self.sockets else owner_of(sid)
        transport = query.get("transport", ["polling"])[0]
        if (owner is None or owner == cluster.uid or method not in ("GET", "POST")
                or transport not in self.transports or "j" in query
                or owner not in cluster.nodes.alive()):
            return None
        return _Route(cluster, owner, str(sid), method, query_string, transport)

    async def _forward(self, route: _Route, args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> Any:
        """Forward a long-polling request to its session's owner, or relay its
        websocket there."""
        cluster, owner, sid, method = route.cluster, route.owner, route.sid, route.method
        query_string, transport = route.query_string, route.transport
        translate = self._async["translate_request"]
        environ = translate(*args, **kwargs)
        if hasattr(environ, "__await__"):
            environ = await environ
        if transport == "websocket":
            return await self._relay(owner, sid, environ)
        body = b""
        if method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length > self.max_http_buffer_size:
                return await self._make_response(self._bad_request("Too large"), environ)
            body = await environ["wsgi.input"].read(length)
        headers = {name: environ[key] for name in _HEADERS
                   if (key := "HTTP_" + name.upper().replace("-", "_")) in environ}
        if "CONTENT_TYPE" in environ:
            headers["content-type"] = environ["CONTENT_TYPE"]
        self.counts.forwarded += 1
        try:
            answer = await cluster.forward_engine_request(
                owner, method, query_string, body, headers, self.ping_interval + _MARGIN)
        except (PayloadTooLarge, ClusterTimeout, NotStarted) as exc:
            # over the backend's message limit, an owner that does not answer, or
            # this node stopping: the client gets an error (and reconnects), the
            # operator a line
            _log.warning("session %s: a %s for its owner %s failed: %s", sid, method,
                         owner, exc)
            response = self._bad_request(f"Could not reach the owner of session {sid}")
            return await self._make_response(response, environ)
        if answer is None:
            response = self._bad_request(f"Invalid session {sid}")
        else:
            status, response_headers, response_body = answer
            response = {"status": status, "response": response_body,
                        "headers": [tuple(h) for h in response_headers]}
        return await self._make_response(response, environ)

    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        if event == "connect" and len(args) > 1 and isinstance(args[1], dict):
            socket = self.sockets.get(args[0])
            if socket is not None:  # a Python client reads at most 16 packets a poll
                cap_polls_for(socket, args[1])
        if (event == "disconnect" and len(args) > 1
                and args[1] == self.reason.CLIENT_DISCONNECT):
            # a client closed a long-polling session: answer its pending poll with
            # CLOSE, as socket.io's server does (python-engineio leaves it hanging
            # for ping_interval + ping_timeout, and python-socketio's client waits
            # for it on disconnect)
            socket = self.sockets.get(args[0])
            if socket is not None and not socket.upgraded:
                socket.queue.put_nowait(eio_packet.Packet(eio_packet.CLOSE))
        return await super()._trigger_event(event, *args, **kwargs)

    async def _relay(self, owner: str, sid: str, environ: dict[str, Any]) -> Any:
        """Hold the websocket that upgrades ``owner``'s session ``sid`` here and relay
        it to the owner; a refused or failed relay closes it (the client stays on
        long-polling, as after any failed upgrade)."""
        cluster = self.cluster
        assert cluster is not None
        if sid in self.relays or self._async.get("websocket") is None:
            return await self._make_response(self._bad_request(), environ)

        async def relay(ws: Any) -> None:
            end = RelayEnd(cluster, owner, sid)
            self.relays[sid] = end
            try:
                if await cluster.open_engine_relay(owner, sid, self.ping_timeout):
                    self.counts.relayed += 1
                    await pump(ws, end)
            except (ClusterTimeout, NotStarted) as exc:
                _log.info("session %s: its owner %s did not take the websocket: %s",
                          sid, owner, exc)
            finally:
                if self.relays.get(sid) is end:
                    del self.relays[sid]
                await end.close()
                try:
                    await ws.close()
                except Exception:  # already closed by the client
                    pass

        return await self._async["websocket"](relay, self)(environ)

    def take_frame(self, node: str, frame: EngineFrame) -> bool:
        """A relayed websocket frame from ``node``; for an OPEN, whether this node
        owns that session and takes its websocket."""
        end = self.relays.get(frame.sid)
        if frame.kind is not FrameKind.OPEN:
            if end is None or end.node != node:
                return False  # a relay that ended here: its last frames are moot
            end.feed(frame)
            return True
        socket = self.sockets.get(frame.sid)
        cluster = self.cluster
        if (end is not None or socket is None or cluster is None or not socket.connected
                or socket.upgraded or socket.upgrading or socket.closed):
            return False
        end = self.relays[frame.sid] = RelayEnd(cluster, node, frame.sid)
        self.counts.taken += 1
        task = asyncio.ensure_future(self._serve_relay(socket, end))
        self._relay_tasks.add(task)
        task.add_done_callback(self._relay_tasks.discard)
        return True

    async def _serve_relay(self, socket: Any, end: RelayEnd) -> None:
        """Run engine.io's websocket upgrade and loop against a relayed websocket."""
        try:
            await socket._websocket_handler(end)
        except Exception:
            _log.exception("session %s: the relayed websocket failed", end.sid)
        finally:
            if self.relays.get(end.sid) is end:
                del self.relays[end.sid]
            await end.close()
            if end.sid in self.sockets and self.sockets[end.sid].closed:
                del self.sockets[end.sid]

    def _node_gone(self, node: str) -> None:
        for end in list(self.relays.values()):
            if end.node == node:
                end.end()

    async def serve_forwarded(self, request: EngineRequest) -> list[Any]:
        """Serve a request another node forwarded for one of this node's sessions;
        returns ``[status, headers, body]``."""
        query = urllib.parse.parse_qs(request.query)
        sid = query.get("sid", [""])[0]
        self.counts.served += 1
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method, "QUERY_STRING": request.query,
            "CONTENT_LENGTH": str(len(request.body)), "wsgi.input": _Body(request.body),
            **{"HTTP_" + k.upper().replace("-", "_"): v
               for k, v in request.headers.items()}}
        if "content-type" in request.headers:
            environ["CONTENT_TYPE"] = request.headers["content-type"]
        response = await self._serve(sid, request.method, environ)
        return [response["status"], [list(h) for h in response["headers"]],
                response["response"]]

    async def _serve(self, sid: str, method: str, environ: dict[str, Any]) -> Any:
        socket = self.sockets.get(sid)
        if socket is None:
            return self._bad_request(f"Invalid session {sid}")
        if not socket.connected:
            return self._bad_request("Not connected")
        if socket.upgraded:
            return self._bad_request("Unexpected HTTP request")
        try:
            if method == "GET":
                packets = await socket.handle_get_request(environ)
                response = self._ok(packets) if isinstance(packets, list) else packets
            else:
                await socket.handle_post_request(environ)
                response = self._ok()
        except eio_exceptions.EngineIOError:
            if sid in self.sockets:
                await self.disconnect(sid)
            return self._bad_request()
        if sid in self.sockets and self.sockets[sid].closed:
            del self.sockets[sid]
        return response
