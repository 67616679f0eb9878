"""A reverse proxy that sends each request to the next node, as nginx's plain
round-robin upstream does (no ip_hash, no cookie), websocket upgrades included: the
in-process stand-in for nginx in the conformance suite (tests/test_no_sticky.py
runs the real nginx)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp
from aiohttp import web

__all__ = ["RoundRobin", "splice"]


async def splice(request: web.Request, node: Any) -> web.WebSocketResponse:
    """Accept the client's websocket and copy messages both ways with ``node`` (an
    open aiohttp client websocket) until either side closes."""
    client = web.WebSocketResponse()
    await client.prepare(request)

    async def copy(source: Any, sink: Any) -> None:
        async for msg in source:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sink.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(msg.data)
        await sink.close()

    await asyncio.gather(copy(client, node), copy(node, client))
    return client


class RoundRobin:
    """A reverse proxy that sends each request to the next node, as nginx's plain
    round-robin upstream does (no ip_hash, no cookie). Like nginx's default
    ``proxy_next_upstream error``, a node that refuses the connection is skipped for
    the next one."""

    def __init__(self, ports: list[int]) -> None:
        self.count = len(ports)
        self.ports = itertools.cycle(ports)
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.relay)
        self.runner = web.AppRunner(self.app, shutdown_timeout=0.5)
        self.session: aiohttp.ClientSession | None = None
        self.port = 0
        self.sent: list[int] = []
        """The node port of each request, in order."""
        self.edges: dict[str, int] = {}
        """The node port that holds each session's websocket, by engine.io sid."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def relay(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "connection")}
        body = await request.read()
        tried: set[int] = set()
        while True:
            port = next(self.ports)
            if port in tried:
                continue
            tried.add(port)
            self.sent.append(port)
            try:
                if request.headers.get("upgrade", "").lower() == "websocket":
                    return await self.relay_websocket(request, port)
                async with self.session.request(
                        request.method, f"http://127.0.0.1:{port}{request.path_qs}",
                        data=body, headers=headers) as reply:
                    return web.Response(status=reply.status, body=await reply.read(),
                                        content_type=reply.content_type)
            except aiohttp.ClientConnectorError:
                if len(tried) == self.count:
                    raise

    async def relay_websocket(self, request: web.Request, port: int
                              ) -> web.WebSocketResponse:
        assert self.session is not None
        async with self.session.ws_connect(
                f"ws://127.0.0.1:{port}{request.path_qs}") as node:
            sid = request.query.get("sid")
            if sid is not None:
                self.edges[sid] = port
            return await splice(request, node)

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        await self.runner.cleanup()
        if self.session is not None:
            await self.session.close()
