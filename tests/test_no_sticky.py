"""No sticky sessions needed: long-polling clients work however their requests are
spread over the nodes, because a node that does not own a session has its owner serve
it (socketio_adapters.forwarding).

Three deployments of tests/workers_app.py on ``local://``: ``uvicorn --workers 3``
and ``gunicorn -k uvicorn_worker.UvicornWorker -w 3`` on one port (the kernel gives
each connection to any worker), and three nodes behind Debian's ``nginx`` with a
plain round-robin upstream (each request to the next node). Through each, 50
python-socketio and 50 official JavaScript clients restricted to long-polling, and
10 of each that may upgrade to websocket, all connect; every one receives a
broadcast from each node and answers an ack asked by the whole cluster; the
upgrading ones end on websocket; requests and websockets really were forwarded; and
a client (each kind) whose transport drops comes back through the same port with
its sid and every event it missed, in order, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conformance.cluster import eventually
from conformance.recovery_clients import JsClient, PythonClient, RecoveringClient

from .servers import DEADLINE, WORKERS, Servers, deployed
from .swarm import JsSwarm, PySwarm

POLLING = 50
"""Long-polling-only clients of each kind (python-socketio, official JS client)."""
UPGRADING = 10
"""Clients of each kind that start on long-polling and may upgrade to websocket."""
TOTAL = 2 * (POLLING + UPGRADING)
MORE_BATCHES = 5
"""Batches of UPGRADING more python-socketio clients connected, at most, while no
websocket has been relayed: on one port the kernel chooses the worker of each
connection, and it may give every upgrade to the worker that owns its session."""


@pytest.fixture(params=("uvicorn", "gunicorn", "nginx"))
async def deployment(request: pytest.FixtureRequest, tmp_path: Path
                     ) -> AsyncIterator[Servers]:
    async with deployed(request.param, tmp_path) as found:
        yield found


async def _workers(servers: Servers) -> set[int]:
    """Wait until the three workers answer and each counts three servers."""
    last: dict[int, int] = {}

    async def probe() -> bool:
        nonlocal last
        last = await asyncio.to_thread(servers.answers)
        return len(last) == WORKERS and set(last.values()) == {WORKERS}

    await eventually(probe, True, f"{servers.kind}: every worker counts every worker "
                     f"(last: pid -> count {last})", timeout=DEADLINE)
    return set(last)


async def test_clients_need_no_sticky_routing(deployment: Servers) -> None:
    pids = await _workers(deployment)
    url = f"http://127.0.0.1:{deployment.ports[0]}"
    py, js, more = PySwarm(), JsSwarm(), PySwarm()
    try:
        await py.connect(url, POLLING, ["polling"])
        await py.connect(url, UPGRADING, ["polling", "websocket"])
        assert await js.connect(url, POLLING, ["polling"]) == {
            "connected": POLLING, "errors": []}
        assert await js.connect(url, UPGRADING, ["polling", "websocket"]) == {
            "connected": UPGRADING, "errors": []}

        # the upgrading ones end on websocket, the others stay on long-polling
        transports = ["polling"] * POLLING + ["websocket"] * UPGRADING
        await eventually(py.transports, transports, "python clients' transports")

        async def js_transports() -> list[str]:
            return list(await js.command("transports"))

        await eventually(js_transports, transports, "JS clients' transports")

        # a broadcast from each node reaches every client
        assert await py.clients[0].call("shout", timeout=20) in pids

        async def news() -> list[list[int]]:
            return [sorted(got) for got in [*py.news, *await js.command("news")]]

        await eventually(news, [sorted(pids)] * TOTAL, "every client has every "
                         "worker's broadcast", timeout=DEADLINE)

        # every client answers an ack the cluster asks for
        acks = (await asyncio.to_thread(deployment.http, "/ask?value=41"))["acks"]
        assert acks == [42] * TOTAL

        # and it went through forwarding: requests and websockets reached nodes
        # that did not own their session (more upgrades until one did, bounded)
        for _ in range(MORE_BATCHES):
            if await _relayed(deployment) > 0:
                break
            await more.connect(url, UPGRADING, ["polling", "websocket"])
            await eventually(more.transports, ["websocket"] * len(more.clients),
                             "more python clients' transports")
        counts = (await asyncio.to_thread(deployment.http, "/forwarding")).values()
        assert len(counts) == WORKERS
        forwarded = sum(c["forwarded"] for c in counts)
        assert forwarded > 0 and sum(c["served"] for c in counts) == forwarded
        relayed = sum(c["relayed"] for c in counts)
        assert relayed > 0 and sum(c["taken"] for c in counts) == relayed
    finally:
        await asyncio.gather(py.close(), js.close(), more.close())

    # clients that leave leave nothing behind: no session, no relay, on any node
    async def left() -> list[int]:
        counts = (await asyncio.to_thread(deployment.http, "/forwarding")).values()
        return [sum(c["sessions"] for c in counts), sum(c["relays"] for c in counts)]

    await eventually(left, [0, 0], "every session and relay ends with its client")
    for kind in (PythonClient, JsClient):
        await _recovery_through(deployment, kind("polling"))


async def _relayed(servers: Servers) -> int:
    """Websockets relayed so far, on every worker."""
    counts = (await asyncio.to_thread(servers.http, "/forwarding")).values()
    return sum(c["relayed"] for c in counts)


MISSED = [f"missed-{n}" for n in range(5)]


async def _recovery_through(servers: Servers, client: RecoveringClient) -> None:
    """A long-polling client whose transport drops comes back through the same port
    (so on any node) with its sid and every missed event, in order, once."""
    url = f"http://127.0.0.1:{servers.ports[0]}"
    try:
        await client.connect(url)
        sid = client.sid()
        await asyncio.to_thread(servers.http, "/emit", b"before")
        assert await client.next("news") == "before"
        assert await client.call("drop") in await _pids(servers)
        await asyncio.wait_for(client.disconnected.wait(), 10)
        for text in MISSED:
            await asyncio.to_thread(servers.http, "/emit", text.encode())
        await client.connect(url)
        assert client.recovered() and client.sid() == sid, client.kind
        assert await client.take("news", len(MISSED)) == MISSED
        await asyncio.to_thread(servers.http, "/emit", b"marker")
        assert await client.next("news") == "marker"  # nothing twice before it
    finally:
        await client.close()


async def _pids(servers: Servers) -> set[int]:
    return {int(pid) for pid in
            (await asyncio.to_thread(servers.http, "/forwarding")).keys()}
