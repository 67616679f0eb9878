"""Websocket compression (permessage-deflate) is off by default, as in Node's
engine.io, and on when asked: real aiohttp servers on 127.0.0.1, a real websocket
handshake that offers the extension, and the official JavaScript client."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import engineio
import pytest
import socketio
from aiohttp import web
from engineio.async_drivers import aiohttp as eio_aiohttp
from engineio.async_drivers import asgi as eio_asgi

from conformance.cluster import serve
from conformance.recovery_clients import JsClient, js_client_installed, node_binary
from socketio_adapters import (
    AsyncServer,
    ClusterManager,
    ConfigurationError,
    create_manager,
    websocket_compression,
)
from socketio_adapters.websocket import (
    ENVIRON_KEY,
    AiohttpWebSocket,
    CompressedAiohttpWebSocket,
)

ENGINE_WS = "/socket.io/?EIO=4&transport=websocket"
DEFLATE_BITS = 15
"""The window bits aiohttp's client offers with ``compress=15`` and gets back when
the server accepts permessage-deflate."""


def _manager() -> ClusterManager:
    return create_manager(f"memory://wsdeflate-{secrets.token_hex(4)}")


def _ours(**options: Any) -> socketio.AsyncServer:
    return AsyncServer(_manager(), async_mode="aiohttp", **options)


def _plain(enabled: bool | None = None) -> socketio.AsyncServer:
    """python-socketio's own server on our manager; ``enabled`` not None: with
    :func:`websocket_compression` called on it."""
    sio = socketio.AsyncServer(client_manager=_manager(), async_mode="aiohttp")
    if enabled is not None:
        websocket_compression(sio, enabled=enabled)
    return sio


@asynccontextmanager
async def served(sio: socketio.AsyncServer) -> AsyncIterator[str]:
    """``sio`` on an aiohttp app on a free loopback port; its base URL."""
    app = web.Application()
    sio.attach(app)
    runner, port = await serve(app)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await sio.manager.stop()


async def handshake(base: str) -> tuple[int, str, str]:
    """Open engine.io's websocket offering permessage-deflate; the extension the
    server answered with (window bits, 0: none), its ``Sec-WebSocket-Extensions``
    header, and the first frame (engine.io's OPEN packet), after a socket.io CONNECT
    to ``/`` is answered."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(base + ENGINE_WS, compress=DEFLATE_BITS,
                                      timeout=aiohttp.ClientWSTimeout(ws_receive=5),
                                      ) as ws:
            header = ws._response.headers.get("Sec-WebSocket-Extensions", "")
            opened = await asyncio.wait_for(ws.receive_str(), 5)
            await ws.send_str("40")
            connected = await asyncio.wait_for(ws.receive_str(), 5)
            assert isinstance(opened, str) and isinstance(connected, str)
            assert connected.startswith("40{"), connected
            return int(ws.compress), header, opened


async def test_default_refuses_permessage_deflate() -> None:
    async with served(_ours()) as base:
        compress, header, opened = await handshake(base)
    assert compress == 0
    assert "permessage-deflate" not in header
    assert opened.startswith("0{") and "sid" in json.loads(opened[1:])


async def test_enabled_negotiates_permessage_deflate() -> None:
    async with served(_ours(websocket_compression=True)) as base:
        compress, header, opened = await handshake(base)
    assert compress == DEFLATE_BITS
    assert "permessage-deflate" in header
    assert opened.startswith("0{")


@pytest.mark.parametrize("enabled", [False, True], ids=["off", "on"])
async def test_helper_on_a_plain_server(enabled: bool) -> None:
    sio = _plain(enabled)
    expected = CompressedAiohttpWebSocket if enabled else AiohttpWebSocket
    assert sio.eio._async["websocket"] is expected
    async with served(sio) as base:
        compress, _, opened = await handshake(base)
    assert compress == (DEFLATE_BITS if enabled else 0)
    assert opened.startswith("0{")


async def test_engineio_driver_table_is_not_changed() -> None:
    table = dict(eio_aiohttp._async)
    ours, helped = _ours(), _plain(enabled=False)
    untouched = _plain()
    assert eio_aiohttp._async == table
    assert eio_aiohttp._async["websocket"] is eio_aiohttp.WebSocket
    assert untouched.eio._async["websocket"] is eio_aiohttp.WebSocket
    async with served(ours) as base:
        assert (await handshake(base))[0] == 0
    async with served(helped) as base:
        assert (await handshake(base))[0] == 0
    async with served(untouched) as base:  # python-engineio's own driver compresses
        assert (await handshake(base))[0] == DEFLATE_BITS


async def test_asgi_mode_names_the_servers_option() -> None:
    manager = _manager()
    plain = socketio.AsyncServer(client_manager=manager, async_mode="asgi")
    for enabled in (False, True):
        with pytest.raises(ConfigurationError, match="--ws-per-message-deflate"):
            websocket_compression(plain, enabled=enabled)
    assert plain.eio._async["websocket"] is eio_asgi.WebSocket  # nothing installed
    with pytest.raises(ConfigurationError, match="ws_per_message_deflate=False"):
        AsyncServer(_manager(), async_mode="asgi", websocket_compression=True)
    # the default is the ASGI server's business: it does not raise
    assert AsyncServer(_manager(), async_mode="asgi").eio.websocket_compression is False
    with pytest.raises(ConfigurationError, match="not int"):
        websocket_compression(42)
    # engine.io's own server works too
    eio = engineio.AsyncServer(async_mode="aiohttp")
    websocket_compression(eio, enabled=True)
    assert eio._async["websocket"] is CompressedAiohttpWebSocket


def _seen_compression(sio: socketio.AsyncServer) -> list[Any]:
    """Register ``echo`` (acks its argument); the list it fills with what each
    caller's websocket negotiated, seen from the server side."""
    seen: list[Any] = []

    async def echo(sid: str, value: Any) -> Any:
        seen.append(sio.get_environ(sid).get(ENVIRON_KEY))
        return value

    sio.on("echo", echo)
    return seen


@pytest.mark.skipif(node_binary() is None or not js_client_installed(),
                    reason="needs Node.js and conformance/js/node_modules (npm ci)")
@pytest.mark.parametrize("enabled", [False, True], ids=["default", "enabled"])
async def test_official_js_client(enabled: bool) -> None:
    """socket.io-client offers permessage-deflate by default: our server leaves it
    out unless asked, and the event goes through either way."""
    sio = _ours(websocket_compression=True) if enabled else _ours()
    seen = _seen_compression(sio)
    client = JsClient("websocket")
    async with served(sio) as base:
        try:
            await client.connect(base)
            assert await client.call("echo", {"n": 1}) == {"n": 1}
        finally:
            await client.close()
    assert seen == [DEFLATE_BITS if enabled else 0]


def test_our_uvicorn_launches_follow_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """``socketio-adapters demo`` and ``distributor-demo`` start uvicorn without
    websocket compression, as AsyncServer defaults to (uvicorn negotiates it)."""
    import uvicorn

    from socketio_adapters import cli
    from socketio_adapters.demo.launch import children

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))
    monkeypatch.setenv("SOCKETIO_ADAPTER_URL", "memory://")  # _demo_ready sets it
    assert cli.main(["demo", "--url", "memory://", "--port", "1"]) == 0
    assert [c.get("ws_per_message_deflate") for c in calls] == [False]
    (edge,) = [child for child in children("memory://", "127.0.0.1", 1, 2)
               if child.name == "edge"]
    argv = list(edge.argv)
    assert argv[argv.index("--ws-per-message-deflate") + 1] == "false"
