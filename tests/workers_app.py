"""The ASGI app that tests/test_workers.py serves with several worker processes:
socket.io on the cluster of ``$SIOA_WORKERS_URL`` (recovery on), and a small HTTP API.

- ``GET /whoami``: this worker's pid and the cluster's server count;
- ``POST /emit?room=R``: emits the body's text as ``news`` (to room R if given);
- ``GET /ask?value=N``: asks every client of the cluster ``question`` N, replies
  with their acks;
- ``GET /forwarding``: every worker's forwarding counts, engine.io sessions and
  relayed websockets (pid -> counts);
- socket.io events: ``whereami`` (acks the pid), ``join`` ``{"sid", "room"}`` (puts
  any sid, on any worker, in a room), ``shout`` (every worker broadcasts its pid as
  ``news``), ``drop`` (the worker that owns the session closes its transport once
  it acked, as a network drop would), ``hold`` P (the worker's event loop is blocked
  from its next turn, so it accepts no connection, until the file P + ".release"
  exists, for 2 s at most; it writes P + ".held" as it starts).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
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


@sio.on("hold")  # type: ignore[untyped-decorator]
async def hold(sid: str, path: str) -> int:
    def block() -> None:
        with open(path + ".held", "w"):
            pass
        deadline = time.monotonic() + 2.0
        while not os.path.exists(path + ".release") and time.monotonic() < deadline:
            time.sleep(0.01)

    asyncio.get_running_loop().call_soon(block)
    return os.getpid()


@sio.on("join")  # type: ignore[untyped-decorator]
async def join(sid: str, data: dict[str, str]) -> int:
    await sio.enter_room(data["sid"], data["room"])
    return os.getpid()


@sio.on("shout")  # type: ignore[untyped-decorator]
async def shout(sid: str, data: Any = None) -> int:
    await sio.cluster.server_side_emit("shout")
    await sio.emit("news", os.getpid())
    return os.getpid()


async def shout_here() -> None:
    await sio.emit("news", os.getpid())


async def forwarding_here() -> list[Any]:
    return forwarding_here_now()


sio.cluster.on("shout", shout_here)
sio.cluster.on("forwarding", forwarding_here)


@sio.on("drop")  # type: ignore[untyped-decorator]
async def drop(sid: str, data: Any = None) -> int:
    eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
    socket = sio.eio.sockets[eio_sid]

    async def later() -> None:
        await asyncio.sleep(0.2)  # once the ack went out
        await socket.close(wait=False, abort=True, reason=sio.reason.TRANSPORT_CLOSE)
        socket.queue.put_nowait(None)  # ends the websocket, or the long-poll, now

    sio.start_background_task(later)
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
    reply: dict[str, Any]
    if scope["path"] == "/whoami":
        reply = {"pid": os.getpid(), "count": await manager.server_count()}
    elif scope["path"] == "/ask":
        value = int(parse_qs(scope["query_string"].decode())["value"][0])
        reply = {"acks": await sio.emit_with_ack("question", value, timeout=20)}
    elif scope["path"] == "/forwarding":
        others = await sio.cluster.server_side_emit_with_ack("forwarding")
        reply = dict([forwarding_here_now(), *others])
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


def forwarding_here_now() -> list[Any]:
    return [os.getpid(), {**dataclasses.asdict(sio.eio.counts),
                          "sessions": len(sio.eio.sockets), "relays": len(sio.eio.relays)}]


app = LifespanMiddleware(socketio.ASGIApp(sio, other_asgi_app=http), manager)
