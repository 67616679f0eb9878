"""Ordered emits wait for the broker, bounded: one watchdog for every waiting emit
(cluster/outbox.py) and one timer per marker (cluster/ordering.py), over a memory
backend whose broker can stop answering."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

import socketio

from conformance.cluster import Client, Node, eventually
from socketio_adapters import ClusterManager
from socketio_adapters.backends.base import Outgoing
from socketio_adapters.backends.memory import MemoryBackend

TIMEOUT = 0.5
"""The managers' request timeout: how long an ordered emit waits for the broker."""


class _Silent(MemoryBackend):
    """A memory backend whose publishes hang while ``silent`` (a broker that takes
    the connection and never answers) and whose own markers can be lost."""

    name: ClassVar[str] = "silent"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.lose_markers = False
        self._answering = asyncio.Event()
        self._answering.set()

    @property
    def silent(self) -> bool:
        return not self._answering.is_set()

    @silent.setter
    def silent(self, value: bool) -> None:
        if value:
            self._answering.clear()
        else:
            self._answering.set()

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        await self._answering.wait()
        if self.lose_markers:
            batch = [(target, payload) for target, payload in batch
                     if target != self.node_id]
        await super().publish(batch)


async def _node(url: str) -> tuple[ClusterManager, _Silent, socketio.AsyncServer]:
    backend = _Silent(url)
    manager = ClusterManager(backend, request_timeout=TIMEOUT)
    sio = socketio.AsyncServer(client_manager=manager, async_mode="aiohttp")
    await manager.start()
    return manager, backend, sio


async def test_waiting_emits_return_together_when_the_broker_stops_answering() -> None:
    manager, backend, sio = await _node("memory://deadlines")
    try:
        await sio.emit("e", 0)  # answered: not stalled
        outbox = manager.publisher.require()
        assert not outbox.stalled
        backend.silent = True
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.wait_for(asyncio.gather(*(sio.emit("e", i) for i in range(100))),
                               TIMEOUT * 10)
        assert loop.time() - began >= TIMEOUT * 0.9  # they waited for the broker
        assert outbox.stalled
        assert len(outbox) >= 100  # returned, still queued (with their marker)
        backend.silent = False
        await asyncio.wait_for(manager.flush(), TIMEOUT * 10)
        await sio.emit("e", 101)
        assert not outbox.stalled
    finally:
        await manager.stop()


async def test_the_watchdog_forgets_answered_emits() -> None:
    manager, _, sio = await _node("memory://deadlines2")
    try:
        for i in range(2_000):
            await sio.emit("e", i)
        outbox = manager.publisher.require()
        assert len(outbox._watchdog._deadlines) == 0
        assert not outbox.stalled
    finally:
        await manager.stop()


async def test_a_marker_that_does_not_come_back_ends_the_wait_once() -> None:
    manager, backend, sio = await _node("memory://deadlines3")
    try:
        # a socket of this node (no transport: what it is sent is dropped) that the
        # emits select, so they wait for this node's marker before delivering here
        await manager.connect("eio-sid", "/")
        backend.lose_markers = True
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.wait_for(asyncio.gather(*(sio.emit("e", i) for i in range(50))),
                               TIMEOUT * 10)
        assert loop.time() - began >= TIMEOUT * 0.9
        await eventually(lambda: manager.self_sync.late, 1, "one late marker")
    finally:
        await manager.stop()


async def test_a_marker_is_sent_only_when_this_node_has_clients_to_deliver_to() -> None:
    node = Node("memory://markers")
    await node.start()
    sent = node.manager.publisher.require().counters
    try:
        await node.sio.emit("e", 0)  # warm
        before = sent.sent
        await node.sio.emit("e", 1)
        assert sent.sent - before == 1  # the message alone: nothing local to order
        client = await Client(node, "websocket").connect()
        try:
            await node.sio.emit("e", 2, to="elsewhere")  # a room with nobody here
            before = sent.sent
            await node.sio.emit("e", 3)
            assert sent.sent - before == 2  # the message and this node's marker
            assert await client.next("e") == 3
        finally:
            await client.close()
    finally:
        await node.stop()


async def test_emits_held_back_for_a_slow_broker_buffer_once_it_stops_answering() -> None:
    """Past the outbox's high-water mark an emit waits for room while the broker
    answers (it is slower than the emitters); once the broker stops answering, emits
    return once buffered: the waiting one goes on then, not after ``buffer_timeout``."""
    backend = _Silent("memory://held-back")
    manager = ClusterManager(backend, request_timeout=TIMEOUT, buffer_timeout=30.0,
                             max_buffer=10_000, heartbeat_interval=60.0,
                             heartbeat_timeout=120.0)
    await manager.start()
    try:
        outbox = manager.publisher.require()
        backend.silent = True
        first = [asyncio.ensure_future(manager.emit("e", i, namespace="/"))
                 for i in range(outbox.high_water + 1)]
        await eventually(lambda: len(outbox) > outbox.high_water, True, "over high water")
        loop = asyncio.get_running_loop()
        began = loop.time()
        held = asyncio.ensure_future(manager.emit("e", "held", namespace="/"))
        await asyncio.sleep(TIMEOUT / 5)
        assert not held.done()  # waiting for room while the broker looked reachable
        await asyncio.wait_for(held, TIMEOUT * 10)
        assert outbox.stalled and loop.time() - began < TIMEOUT * 10
        await asyncio.wait_for(asyncio.gather(*first), TIMEOUT * 10)
        backend.silent = False
        await asyncio.wait_for(manager.flush(), 30.0)
    finally:
        await manager.stop()
