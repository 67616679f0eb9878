"""The parts of sessions without sticky routing that need no cluster: who owns a sid,
the ENGINE_FRAME payload on the wire, and one end of a relayed websocket. The
cluster behaviour (round-robin proxy, every backend) is conformance/test_forwarding.py;
real servers and nginx are tests/test_no_sticky.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from conformance.cluster import eventually
from socketio_adapters import AsyncServer, create_manager
from socketio_adapters.errors import MalformedMessage
from socketio_adapters.forwarding import owner_of
from socketio_adapters.protocol import EngineFrame, FrameKind, MessageType, parse_payload
from socketio_adapters.relay import MAX_QUEUED, RelayEnd


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, FrameKind, Any]] = []

    def send_engine_frame(self, node: str, sid: str, kind: FrameKind,
                          data: str | bytes | None = None) -> None:
        self.sent.append((node, sid, kind, data))


def test_owner_of_reads_the_node_uid_at_the_start_of_a_sid() -> None:
    assert owner_of("0123456789abcdefXYZ") == "0123456789abcdef"
    assert owner_of("0123456789ABCDEFXYZ") is None  # not a uid: ours are lower hex
    assert owner_of("short") is None
    assert owner_of("not-a-cluster-sid-at-all") is None


@pytest.mark.parametrize("frame", [
    EngineFrame("s", FrameKind.OPEN, request_id="r1"),
    EngineFrame("s", FrameKind.DATA, "4hello"),
    EngineFrame("s", FrameKind.DATA, b"\x00\x01"),
    EngineFrame("s", FrameKind.CLOSE),
])
def test_engine_frames_survive_the_wire(frame: EngineFrame) -> None:
    assert parse_payload(MessageType.ENGINE_FRAME, frame.to_wire()) == frame


@pytest.mark.parametrize("wire", [
    None, [], {"kind": 1, "data": "x"}, {"sid": 3, "kind": 1, "data": "x"},
    {"sid": "s", "kind": 9}, {"sid": "s", "kind": "1", "data": "x"},
    {"sid": "s", "kind": True, "data": "x"},
    {"sid": "s", "kind": 1}, {"sid": "s", "kind": 1, "data": 5},
    {"sid": "s", "kind": 0}, {"sid": "s", "kind": 0, "requestId": 7},
])
def test_malformed_engine_frames_are_refused(wire: Any) -> None:
    with pytest.raises(MalformedMessage):
        parse_payload(MessageType.ENGINE_FRAME, wire)


async def test_a_relay_end_gives_frames_in_order_then_none_once_closed() -> None:
    sender = Recorder()
    end = RelayEnd(sender, "node", "sid")
    for data in ("2probe", b"\x01", "5"):
        end.feed(EngineFrame("sid", FrameKind.DATA, data))
    end.feed(EngineFrame("sid", FrameKind.CLOSE))
    assert [await end.wait() for _ in range(5)] == ["2probe", b"\x01", "5", None, None]
    with pytest.raises(OSError):
        await end.send("3probe")
    await end.close()  # the other side closed first: nothing more to tell it
    assert sender.sent == []


async def test_a_relay_end_sends_and_closes_once() -> None:
    sender = Recorder()
    end = RelayEnd(sender, "node", "sid")
    await end.send("3probe")
    await end.close()
    await end.close()
    assert sender.sent == [("node", "sid", FrameKind.DATA, "3probe"),
                           ("node", "sid", FrameKind.CLOSE, None)]
    with pytest.raises(OSError):
        await end.send("late")


async def test_a_reader_that_does_not_keep_up_ends_the_relay(
        caplog: pytest.LogCaptureFixture) -> None:
    end = RelayEnd(Recorder(), "node", "sid")
    with caplog.at_level(logging.WARNING, "socketio_adapters.forwarding"):
        for n in range(MAX_QUEUED + 5):
            end.feed(EngineFrame("sid", FrameKind.DATA, str(n)))
    assert not end.open and "slow reader" in caplog.text
    got = [await end.wait() for _ in range(MAX_QUEUED + 1)]
    assert got[:2] == ["0", "1"] and got[-1] is None  # bounded: the rest was refused


async def test_frames_for_no_relay_and_opens_for_no_session_are_refused() -> None:
    sio = AsyncServer(async_mode="aiohttp")
    await sio.cluster.start()
    try:
        engine: Any = sio.eio
        assert not engine.take_frame("peer", EngineFrame("nosuch", FrameKind.DATA, "x"))
        assert not engine.take_frame("peer", EngineFrame("nosuch", FrameKind.CLOSE))
        assert not engine.take_frame(
            "peer", EngineFrame("nosuch", FrameKind.OPEN, request_id="r"))
        assert engine.relays == {}
    finally:
        await sio.cluster.stop()
        await asyncio.sleep(0)


async def test_a_request_over_the_backend_s_limit_gets_an_error_not_a_crash(
        caplog: pytest.LogCaptureFixture) -> None:
    """A long-polling POST forwarded to the owner is one cluster message: over the
    backend's limit, the node that took it answers 400 and logs why; the session
    and the node go on."""
    nodes = []
    for _ in range(2):
        sio = AsyncServer(create_manager("memory://limits", heartbeat_interval=0.2),
                          async_mode="aiohttp")
        app = web.Application()
        sio.attach(app)
        runner = web.AppRunner(app)
        await sio.cluster.start()
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        nodes.append((sio, runner, runner.addresses[0][1]))
    (owner, _, owner_port), (edge, _, edge_port) = nodes
    backend: Any = edge.cluster.backend
    backend.capabilities = dataclasses.replace(backend.capabilities, max_payload=2_000)
    try:
        await eventually(lambda: len(edge.cluster.nodes), 1, "the nodes see each other")
        path = "/socket.io/?EIO=4&transport=polling"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{owner_port}{path}") as reply:
                sid = json.loads((await reply.text())[1:])["sid"]
            url = f"http://127.0.0.1:{edge_port}{path}&sid={sid}"
            with caplog.at_level(logging.WARNING, "socketio_adapters.forwarding"):
                async with http.post(url, data="4" + "x" * 5_000) as reply:
                    assert reply.status == 400
            assert "over the memory backend's limit" in caplog.text
            async with http.post(url, data="40") as reply:  # socket.io CONNECT
                assert reply.status == 200 and await reply.text() == "OK"
            assert sid in owner.eio.sockets
    finally:
        for sio, runner, _ in nodes:
            await runner.cleanup()
            await sio.cluster.stop()
