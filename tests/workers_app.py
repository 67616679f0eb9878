"""The ASGI app that tests/test_workers.py serves with several worker processes:
socket.io on the cluster of ``$SIOA_WORKERS_URL`` (recovery on), and a small HTTP API.

- ``GET /whoami``: this worker's pid and the cluster's server count;
- ``POST /emit?room=R``: emits the body's text as ``news`` (to room R if given);
- socket.io events: ``whereami`` (acks the pid), ``join`` ``{"sid", "room"}`` (puts
  any sid, on any worker, in a room).
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import socketio

from socketio_adapters import AsyncServer, LifespanMiddleware, create_manager

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

manager = create_manager(os.environ["SIOA_WORKERS_URL"], heartbeat_interval=0.5,
                         heartbeat_timeout=3.0)
sio = AsyncServer(manager, async_mode="asgi",
                  connection_state_recovery={"max_disconnection_duration": 60})


@sio.on("whereami")  # type: ignore[untyped-decorator]
async def whereami(sid: str, data: Any = None) -> int:
    return os.getpid()


@sio.on("join")  # type: ignore[untyped-decorator]
async def join(sid: str, data: dict[str, str]) -> int:
    await sio.enter_room(data["sid"], data["room"])
    return os.getpid()


async def _body(receive: Receive) -> bytes:
    body = b""
    while True:
        event = await receive()
        body += bytes(event.get("body", b""))
        if not event.get("more_body"):
            return body


async def http(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/whoami":
        reply = {"pid": os.getpid(), "count": await manager.server_count()}
    elif scope["path"] == "/emit":
        room = parse_qs(scope["query_string"].decode()).get("room", [None])[0]
        await sio.emit("news", (await _body(receive)).decode(), room=room)
        reply = {"pid": os.getpid()}
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(reply).encode()})


app = LifespanMiddleware(socketio.ASGIApp(sio, other_asgi_app=http), manager)
