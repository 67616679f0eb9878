"""Uncompressed websockets write the frames of one burst together: engine.io's writer
sends every packet it found queued, and the driver writes them to the transport in
one call when the writer yields. Real servers on 127.0.0.1 with real clients for
what arrives (order, sizes, binary); a stub transport for how it is written."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import aiohttp
import pytest
import socketio

from socketio_adapters import AsyncServer, create_manager
from socketio_adapters.websocket import FLUSH_BYTES, AiohttpWebSocket, frame_header

from .test_websocket_compression import ENGINE_WS, served

SIZES = (1, 125, 126, 65535, 65536, 200_000)
"""Payload lengths around the header's three forms (7-bit, 16-bit, 64-bit)."""


def _server(compression: bool = False) -> socketio.AsyncServer:
    sio = AsyncServer(create_manager(f"memory://bursts-{secrets.token_hex(4)}"),
                      async_mode="aiohttp", websocket_compression=compression)

    async def burst(sid: str, n: int) -> int:
        # no await suspends here: every event is queued before the writer runs
        for i in range(n):
            await sio.emit("e", {"i": i, "pad": "x" * SIZES[i % len(SIZES)]}, to=sid)
            if i % 7 == 0:
                await sio.emit("b", [i, bytes([i % 256]) * SIZES[i % 3]], to=sid)
        return n

    sio.on("burst", burst)
    return sio


@pytest.mark.parametrize("compression", [False, True], ids=["plain", "deflate"])
async def test_a_burst_arrives_whole_and_in_order(compression: bool) -> None:
    sio = _server(compression)
    got: list[tuple[str, int, int]] = []
    client = socketio.AsyncClient(reconnection=False)
    done = asyncio.Event()
    n = 60

    def on_event(data: dict[str, Any]) -> None:
        got.append(("e", data["i"], len(data["pad"])))
        if data["i"] == n - 1:
            done.set()

    def on_binary(data: list[Any]) -> None:
        i, blob = data
        assert blob == bytes([i % 256]) * SIZES[i % 3]
        got.append(("b", i, len(blob)))

    client.on("e", on_event)
    client.on("b", on_binary)

    async with served(sio) as base:
        await client.connect(base, transports=["websocket"], wait_timeout=5)
        try:
            assert await client.call("burst", n, timeout=10) == n
            await asyncio.wait_for(done.wait(), 10)
        finally:
            await client.disconnect()
    expected: list[tuple[str, int, int]] = []
    for i in range(n):
        expected.append(("e", i, SIZES[i % len(SIZES)]))
        if i % 7 == 0:
            expected.append(("b", i, SIZES[i % 3]))
    assert got == expected


async def test_raw_frames_of_a_burst() -> None:
    """The frames as a websocket client reads them: whole text frames, in order."""
    sio = _server()
    async with served(sio) as base, aiohttp.ClientSession() as session:
        async with session.ws_connect(base + ENGINE_WS) as ws:
            opened = await asyncio.wait_for(ws.receive_str(), 5)
            await ws.send_str("40")
            connected = await asyncio.wait_for(ws.receive_str(), 5)
            assert isinstance(opened, str) and isinstance(connected, str)
            assert opened.startswith("0{") and connected.startswith("40{")
            await ws.send_str('420["burst",6]')
            texts: list[str] = []
            while len(texts) < 6:
                msg = await asyncio.wait_for(ws.receive(), 5)
                if msg.type is aiohttp.WSMsgType.TEXT and msg.data.startswith("42["):
                    texts.append(msg.data)
            sizes = [len(t) - len('42["e",{"i":0,"pad":""}]') for t in texts]
            assert sizes == list(SIZES)


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (16 * 1024, 64 * 1024)


class _Sock:
    def __init__(self) -> None:
        self.closed = False
        self.sent: list[str | bytes] = []

    async def send_str(self, data: str) -> None:
        self.sent.append(data)

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    async def close(self) -> None:
        self.closed = True


def _driver() -> tuple[AiohttpWebSocket, _Transport, _Sock]:
    ws = AiohttpWebSocket(None, None)
    transport, sock = _Transport(), _Sock()
    ws._transport = transport  # type: ignore[assignment]
    ws._sock = sock  # type: ignore[assignment]
    return ws, transport, sock


async def test_the_first_frame_at_once_the_rest_of_its_turn_in_one_write() -> None:
    """An event delivered alone is written when it is sent (nothing else in its turn
    to wait for); the frames that follow it in the same loop turn are written
    together when the sender yields."""
    ws, transport, sock = _driver()
    await ws.send("4hello")
    assert transport.writes == [frame_header(0x81, 6) + b"4hello"]
    await ws.send(b"\x01\x02")
    await ws.send("4" + "y" * 200)
    assert len(transport.writes) == 1  # held until the sender yields
    await asyncio.sleep(0)
    assert transport.writes[1:] == [b"".join([
        frame_header(0x82, 2), b"\x01\x02", frame_header(0x81, 201), b"4" + b"y" * 200])]
    assert sock.sent == []
    await ws.send("4again")  # a new turn: at once again
    assert transport.writes[2] == frame_header(0x81, 6) + b"4again"
    await asyncio.sleep(0)
    assert len(transport.writes) == 3


def test_frame_headers() -> None:
    assert frame_header(0x81, 5) == b"\x81\x05"
    assert frame_header(0x82, 126) == b"\x82\x7e\x00\x7e"
    assert frame_header(0x81, 65535) == b"\x81\x7e\xff\xff"
    assert frame_header(0x81, 65536) == b"\x81\x7f" + (65536).to_bytes(8, "big")


async def test_a_large_burst_is_written_as_it_grows() -> None:
    ws, transport, _ = _driver()
    await ws.send("4first")
    await ws.send("x" * (FLUSH_BYTES - 10))
    assert len(transport.writes) == 1
    await ws.send("y" * 20)
    assert len(transport.writes) == 2 and len(transport.writes[1]) > FLUSH_BYTES
    await ws.send("4after")  # still the same turn: held
    assert len(transport.writes) == 2
    await asyncio.sleep(0)
    assert transport.writes[2] == frame_header(0x81, 6) + b"4after"
    await asyncio.sleep(0)
    assert len(transport.writes) == 3  # nothing left over to write


async def test_a_slow_client_goes_through_aiohttp() -> None:
    """Past the transport's high-water mark, frames are aiohttp's to write (it waits
    for the client to read), after the ones held."""
    ws, transport, sock = _driver()
    await ws.send("4first")
    transport.buffered = 64 * 1024 + 1
    await ws.send("4second")
    await ws.send(b"\x00")
    assert transport.writes == [frame_header(0x81, 6) + b"4first"]
    assert sock.sent == ["4second", b"\x00"]


async def test_close_writes_what_is_held_first() -> None:
    ws, transport, sock = _driver()
    await ws.send("4first")
    await ws.send("4last")
    await ws.close()
    assert transport.writes == [frame_header(0x81, 6) + b"4first",
                                frame_header(0x81, 5) + b"4last"] and sock.closed
    await asyncio.sleep(0)
    assert len(transport.writes) == 2


async def test_nothing_is_written_after_the_websocket_closed() -> None:
    """aiohttp closed it (the client's CLOSE): held frames are dropped, and a later
    send goes to aiohttp, which raises as before."""
    ws, transport, sock = _driver()
    await ws.send("4first")
    await ws.send("4held")
    sock.closed = True
    await asyncio.sleep(0)
    assert transport.writes == [frame_header(0x81, 6) + b"4first"]
    await ws.send("4after")
    assert sock.sent == ["4after"]
