"""Foreign messages on the broker: raw bytes written straight to every channel,
queue, subject, topic and table a backend uses, and malformed entries in its durable
log, with the broker's own client (see raw_writers.py). Every node drops and counts
each one (``stats()["malformed_dropped"]``) and logs it; the cluster keeps working:
broadcasts reach every node's clients, and recovery restores a client with the events
it missed on either side of the junk."""

from __future__ import annotations

import logging
from typing import Any

import msgpack
import pytest

from socketio_adapters.framing import frame

from .cluster import eventually
from .conftest import BackendUnderTest
from .raw_writers import raw_writer
from .test_recovery import Scenario

_CHUNK = b"\xc1\x01" + b"foreign!"


def _envelope(kind: Any, data: Any) -> bytes:
    packed: bytes = msgpack.packb({"uid": "intruder", "nsp": "/", "type": kind,
                                   "data": data}, use_bin_type=True)
    return packed


def _chunk(index: int, count: int, body: bytes) -> bytes:
    return _CHUNK + index.to_bytes(4, "big") + count.to_bytes(4, "big") + body


_SAVE: dict[str, Any] = {"sid": "s", "pid": "p", "rooms": [], "data": None, "expires": 1e12}

PUBSUB_JUNK: list[tuple[bytes, int]] = [
    (b"", 1),
    (b"\xc1\xc1\xc1", 1),  # never msgpack
    (b'{"method": "emit", "event": "x"}', 1),  # python-socketio's own JSON format
    (msgpack.packb([1, 2, 3]), 1),
    (_envelope(99, None), 1),  # unknown type
    (_envelope(True, None), 1),  # a boolean is no type
    (_envelope(3, "no opts"), 1),
    (_envelope(3, {"packet": [], "opts": {}}), 1),  # an event without a name
    (_envelope(7, {"x": 1}), 1),
    (_envelope(12, {"requestId": "r", "packet": msgpack.ExtType(1, b"")}), 1),
    (_envelope(101, _SAVE), 1),  # a type of the log, over pub/sub
    (_chunk(0, 1, b"a lone chunk"), 1),
    (_chunk(3, 5, b"out of sequence"), 1),
    (frame([b"\x01", b"\x02"]), 2),  # a frame of two
    (b"\xc1\x02\x00\x00\x00\x09ab", 1),  # a truncated frame
]
"""Foreign pub/sub payloads and how many malformed messages each one is."""

LOG_JUNK: list[tuple[bytes, int]] = [
    (b"", 1),
    (b"\xc1\xc1", 1),
    (b"not msgpack at all", 1),
    (msgpack.packb({"a": 1}), 1),
    (_envelope(7, {"opts": {}, "requestId": "r"}), 1),  # a request has no place here
    (_envelope(3, {"packet": "x", "opts": {}}), 1),
    (_envelope(101, {"pid": 1}), 1),  # a session save without a session
    (_envelope(102, {"pid": "p"}), 1),  # a claim without a nonce
    (_envelope(True, None), 1),
    (frame([b"\x01", msgpack.packb([1])]), 2),  # a packed record of two entries
    (b"\xc1\x02\x00\x00\x00\x09ab", 1),  # a record that only looks packed
]
"""Malformed log entries and how many malformed messages each one is."""


async def test_foreign_messages_everywhere_are_dropped_counted_and_logged(
        backend: BackendUnderTest, transport: str,
        caplog: pytest.LogCaptureFixture) -> None:
    if not backend.capabilities.durable_log:
        pytest.skip(f"{backend.name} declares no durable_log")
    scenario = Scenario(backend, transport, "python")
    await scenario.cluster.start()
    try:
        await _junk_everywhere(backend, scenario, caplog)
    finally:
        await scenario.close()


async def _junk_everywhere(backend: BackendUnderTest, scenario: Scenario,
                           caplog: pytest.LogCaptureFixture) -> None:
    nodes = scenario.nodes
    lost = await scenario.primed(0, rooms=("r",))
    others = [await scenario.client(i) for i in (1, 2)]
    sid = lost.sid()
    await scenario.drop(lost)
    await nodes[1].sio.emit("ev", "before", to="r")
    await scenario.settle()
    pubsub = [p for p, _ in PUBSUB_JUNK]
    entries = [p for p, _ in LOG_JUNK]
    with caplog.at_level(logging.WARNING, logger="socketio_adapters"):
        writer = await raw_writer(backend.url, scenario.cluster.node_url)
        try:
            everyone = await writer.broadcast(pubsub) + await writer.log(entries)
            each = [await writer.direct(node.uid, pubsub) for node in nodes]
        finally:
            await writer.close()
        await nodes[2].sio.emit("ev", "after", to="r")
        await scenario.settle()
        per_node = 2 * sum(n for _, n in PUBSUB_JUNK) + sum(n for _, n in LOG_JUNK)
        await eventually(lambda: [n.manager.stats()["malformed_dropped"] for n in nodes],
                         [per_node + everyone + extra for extra in each],
                         "every node dropped and counted every foreign message")
    assert "dropped a malformed cluster message" in caplog.text
    # the cluster keeps working: broadcasts, node count, recovery past the junk
    await nodes[0].sio.emit("fine", 1)
    for client in others:
        assert await client.next("fine") == 1
    for node in nodes:
        assert await node.manager.server_count() == 3  # the intruder is no node
    await scenario.back(lost, 1)
    assert lost.recovered() and lost.sid() == sid
    assert await lost.take("ev", 2) == ["before", "after"]
    assert await scenario.stray(lost, 2) == [], "an event arrived twice"
