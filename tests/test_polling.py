"""Long-polling answers a Python client can read (socketio_adapters/polling.py): a
burst of events to a python-engineio client on long-polling must not end its session
("Too many packets in payload" past 16 packets in one answer)."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio
from engineio.async_socket import AsyncSocket

from conformance.cluster import Node, eventually
from socketio_adapters.polling import CappedPollSocket, cap_polls_for


class _Server:
    ping_interval = 25
    ping_timeout = 20

    def create_queue(self) -> asyncio.Queue[Any]:
        return asyncio.Queue()


def _socket() -> Any:
    return AsyncSocket(_Server(), "sid")


async def test_only_python_clients_get_capped_answers() -> None:
    for agent, capped in [("Python/3.11 aiohttp/3.9.5", True),
                          ("python-requests/2.31.0", True),
                          ("Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0", False),
                          ("node-XMLHttpRequest", False), ("", False)]:
        socket = _socket()
        cap_polls_for(socket, {"HTTP_USER_AGENT": agent})
        assert isinstance(socket, CappedPollSocket) is capped, agent


async def test_a_poll_answers_at_most_sixteen_packets_and_keeps_the_rest() -> None:
    socket = _socket()
    cap_polls_for(socket, {"HTTP_USER_AGENT": "Python/3.11 aiohttp/3.9.5"})
    for i in range(40):
        socket.queue.put_nowait(i)
    socket.queue.put_nowait(None)
    assert await socket.poll() == list(range(16))
    assert await socket.poll() == list(range(16, 32))
    assert await socket.poll() == list(range(32, 40))  # then the end, kept for the next
    assert await socket.poll() == []


async def test_a_burst_of_events_reaches_a_python_long_polling_client() -> None:
    node = Node("memory://polling-burst", forwarding=True)
    await node.start()
    client = socketio.AsyncClient(reconnection=False)
    got: asyncio.Queue[int] = asyncio.Queue()
    client.on("e", got.put_nowait)
    try:
        await client.connect(node.url, transports=["polling"], wait_timeout=10)
        socket = next(iter(node.sio.eio.sockets.values()))
        assert isinstance(socket, CappedPollSocket)
        sid = client.get_sid("/")
        for i in range(200):  # far more than one answer holds, before the next poll
            await node.sio.emit("e", i, to=sid)
        assert [await asyncio.wait_for(got.get(), 10) for _ in range(200)] == list(
            range(200))
        await eventually(lambda: client.connected, True, "the client still connected")
    finally:
        await client.disconnect()
        await node.stop()
