"""Sessions with no sticky routing: a long-polling request that reaches a node which
does not own its engine.io session is served by the owner, over the cluster.

Each session id starts with its owner's node uid, so any node tells at once whose it
is. A GET or POST of the long-polling transport for another node's session is sent
to that node (``ENGINE_REQUEST``), which runs it against its engine.io socket and
answers with the HTTP response to give. A session no live node owns gets
engine.io's own error, as on one node; a node's own sessions cost nothing more.
This is the only module that touches python-engineio's internals.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Mapping
from typing import Any

import engineio
from engineio import exceptions as eio_exceptions

from .cluster import ClusterManager
from .protocol import EngineRequest

__all__ = ["ForwardingEngine", "owner_of"]

_log = logging.getLogger("socketio_adapters.forwarding")
_UID_LENGTH = 16
"""Hex characters of a node uid (``ClusterManager.uid``) at the start of a sid."""
_HEADERS = ("content-type", "user-agent", "origin")
"""Request headers engine.io reads that travel with a forwarded request."""
_MARGIN = 10.0
"""Seconds a forwarded long-poll may take beyond engine.io's ping interval."""


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
    if isinstance(first, Mapping) and first.get("type") == "http":  # ASGI scope
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


class ForwardingEngine(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server, serving the long-polling requests of sessions that
    other nodes own through them (see the module doc)."""

    cluster: ClusterManager | None = None
    """Set by :class:`socketio_adapters.AsyncServer` once its manager exists."""

    def generate_id(self) -> str:
        sid: str = super().generate_id()
        cluster = self.cluster
        return sid if cluster is None else f"{cluster.uid}{sid}"

    async def handle_request(self, *args: Any, **kwargs: Any) -> Any:
        peeked = _peek(args)
        cluster = self.cluster
        if peeked is None or cluster is None:
            return await super().handle_request(*args, **kwargs)
        method, query_string = peeked
        query = urllib.parse.parse_qs(query_string)
        sid = query.get("sid", [None])[0]
        owner = None if sid is None or sid in self.sockets else owner_of(sid)
        if (owner is None or owner == cluster.uid or method not in ("GET", "POST")
                or query.get("transport", ["polling"])[0] != "polling" or "j" in query
                or owner not in cluster.nodes.alive()):
            return await super().handle_request(*args, **kwargs)
        translate = self._async["translate_request"]
        environ = translate(*args, **kwargs)
        if hasattr(environ, "__await__"):
            environ = await environ
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
        answer = await cluster.forward_engine_request(
            owner, method, query_string, body, headers, self.ping_interval + _MARGIN)
        if answer is None:
            response = self._bad_request(f"Invalid session {sid}")
        else:
            status, response_headers, response_body = answer
            response = {"status": status, "response": response_body,
                        "headers": [tuple(h) for h in response_headers]}
        return await self._make_response(response, environ)

    async def serve_forwarded(self, request: EngineRequest) -> list[Any]:
        """Serve a request another node forwarded for one of this node's sessions;
        returns ``[status, headers, body]``."""
        query = urllib.parse.parse_qs(request.query)
        sid = query.get("sid", [""])[0]
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
