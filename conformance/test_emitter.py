"""Emitters: processes with no server emit to the cluster's clients through the same
URL, with ``async with create_emitter(url)`` or, from code that is not async, with
``SyncEmitter(url)``, from a thread or from a separate process that exits right after.

An emitter's messages reach a client in the order it sent them, so absence is proven
by a marker the emitter sends after the event that must not arrive, never by a sleep.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from socketio_adapters import Emitter, SyncEmitter, create_emitter

from .cluster import DEADLINE, MARKER, Client, Cluster
from .conftest import BackendUnderTest
from .test_recovery import Scenario

ROOT = Path(__file__).resolve().parent.parent
COUNT = 20
_tokens = itertools.count()


def _strays(client: Client, event: str) -> list[Any]:
    queue = client.received[("/", event)]
    return [queue.get_nowait() for _ in range(queue.qsize())]


async def _stray(emitter: Emitter, client: Client, event: str) -> list[Any]:
    """The ``event``s the client received and did not take, once a marker that the
    emitter sends it now has arrived."""
    token = next(_tokens)
    await emitter.emit(MARKER, token, to=client.sid())
    assert await client.next(MARKER, timeout=DEADLINE) == token
    return _strays(client, event)


def _needs_processes(backend: BackendUnderTest) -> None:
    if not backend.capabilities.multi_process:
        pytest.skip(f"{backend.name} reaches managers of one process and event loop only")


async def test_async_emitter_reaches_the_right_clients(cluster: Cluster) -> None:
    a, b, c = await cluster.connect_all()
    assert await a.call("join", "blue") is True
    assert await c.call("join", "blue") is True
    blob = bytes(range(256)) * 4
    async with create_emitter(cluster.node_url) as emitter:
        await emitter.emit("all", {"n": 1}, namespace="/")
        await emitter.emit("room", "blue", to="blue", namespace="/")
        await emitter.emit("skip", "not b", skip_sid=b.sid())
        await emitter.emit("except", "not blue", skip_sid=["blue"])
        await emitter.emit("blob", (blob, {"nested": b"\x00\xff"}, "text"), to=c.sid())
        for client in (a, b, c):
            assert await client.next("all") == {"n": 1}
        assert await a.next("room") == "blue"
        assert await c.next("room") == "blue"
        assert await a.next("skip") == "not b"
        assert await c.next("skip") == "not b"
        assert await b.next("except") == "not blue"
        assert await c.next("blob") == (blob, {"nested": b"\x00\xff"}, "text")
        assert await _stray(emitter, b, "room") == []
        assert await _stray(emitter, b, "skip") == []
        assert await _stray(emitter, a, "except") == []
        assert await _stray(emitter, c, "except") == []
        assert await _stray(emitter, a, "blob") == []
        assert await _stray(emitter, b, "blob") == []
    assert await cluster.nodes[0].manager.server_count() == 3  # an emitter is no node


async def test_async_emitter_sends_what_it_emitted_before_an_error(cluster: Cluster
                                                                   ) -> None:
    clients = await cluster.connect_all()
    with pytest.raises(LookupError):
        async with create_emitter(cluster.node_url) as emitter:
            for i in range(COUNT):
                await emitter.emit("seq", i)
            raise LookupError("the worker failed after emitting")
    for client in clients:
        assert [await client.next("seq") for _ in range(COUNT)] == list(range(COUNT))


@pytest.mark.parametrize("mode", ["with", "close", "forget"])
async def test_sync_emitter_in_a_process_that_exits_at_once(
        backend: BackendUnderTest, cluster: Cluster, mode: str) -> None:
    """The README's emitter, run as a script: every event reaches every client, in
    order, although the process exits right after its last emit (with ``forget``,
    without ever closing the emitter)."""
    _needs_processes(backend)
    clients = await cluster.connect_all()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "conformance.emitter_process", cluster.node_url,
        str(COUNT), mode, json.dumps({}), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), DEADLINE * 2)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("the emitter process did not exit") from None
    assert process.returncode == 0, err.decode(errors="replace")
    for n, client in enumerate(clients):
        got = [await client.next("seq", timeout=DEADLINE) for _ in range(COUNT)]
        assert got == list(range(COUNT)), f"client {n}: events lost or reordered"
    assert b"Traceback" not in err, err.decode(errors="replace")


async def test_sync_emitter_from_threads(backend: BackendUnderTest,
                                         cluster: Cluster) -> None:
    _needs_processes(backend)
    a, b, c = await cluster.connect_all()
    assert await b.call("join", "green") is True
    sids = [client.sid() for client in (a, b, c)]
    emitter = SyncEmitter(cluster.node_url)

    def work(thread: int) -> None:
        for i in range(COUNT):
            emitter.emit("seq", [thread, i])

    def finish() -> None:
        emitter.emit("room", "green", to="green")
        emitter.emit("skip", b"\x00\xff", skip_sid=sids[0])
        for sid in sids:
            emitter.emit(MARKER, sid, to=sid)
        emitter.close()

    try:
        await asyncio.gather(*(asyncio.to_thread(work, t) for t in range(3)))
        await asyncio.to_thread(finish)
    finally:
        await asyncio.to_thread(emitter.close)
    for n, client in enumerate((a, b, c)):
        got = [await client.next("seq") for _ in range(3 * COUNT)]
        for thread in range(3):  # each thread's emits in its order
            assert [i for t, i in got if t == thread] == list(range(COUNT)), (
                f"client {n}: thread {thread}'s events lost, repeated or reordered")
    assert await b.next("room") == "green"
    assert await b.next("skip") == b"\x00\xff"
    assert await c.next("skip") == b"\x00\xff"
    for client in (a, b, c):
        assert await client.next(MARKER) == client.sid()
    assert _strays(a, "room") == [] and _strays(c, "room") == []
    assert _strays(a, "skip") == []


@pytest.fixture
async def recovering(backend: BackendUnderTest, transport: str
                     ) -> AsyncIterator[Scenario]:
    if not backend.capabilities.durable_log:
        pytest.skip(f"{backend.name} declares no durable_log")
    made = Scenario(backend, transport, "python")
    await made.cluster.start()
    try:
        yield made
    finally:
        await made.close()


async def test_emitter_with_the_servers_recovery_option(recovering: Scenario) -> None:
    """What a worker of a recovering cluster should do: pass the servers'
    ``connection_state_recovery``; its events then carry offsets, and a client that
    was away gets them back."""
    client = await recovering.primed(0)
    before = client.offset()
    recovery = recovering.cluster.options["recovery"]
    async with create_emitter(recovering.cluster.node_url,
                              connection_state_recovery=recovery) as emitter:
        await emitter.emit("ev", "live")
        assert await client.next("ev") == "live"
        assert client.offset() not in (None, before)
        await recovering.drop(client)
        await emitter.emit("ev", "missed")
    await recovering.back(client, 1)
    assert client.recovered()
    assert await client.next("ev") == "missed"


async def test_emitter_without_the_recovery_option(recovering: Scenario) -> None:
    """What a worker that forgot the option gets: its events still reach the
    connected clients, live and in order, but without offsets (so a client that is
    away when they are sent misses them)."""
    clients = [await recovering.primed(n) for n in range(3)]
    offsets = [client.offset() for client in clients]
    async with create_emitter(recovering.cluster.node_url) as emitter:
        for i in range(COUNT):
            await emitter.emit("seq", i)
    for client, offset in zip(clients, offsets, strict=True):
        assert await client.take("seq", COUNT) == list(range(COUNT))
        assert client.offset() == offset
