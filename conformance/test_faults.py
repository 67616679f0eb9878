"""Faults: the broker restarts, a node dies without a goodbye (foreign messages on
the broker: test_foreign.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import pytest

from .cluster import DEADLINE, Client, Cluster
from .conftest import MEASUREMENTS, BackendUnderTest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def test_broker_restart_mid_run(backend: BackendUnderTest, cluster: Cluster,
                                      transport: str) -> None:
    if backend.broker is None:
        pytest.skip(f"{backend.name}: no broker process this suite can restart "
                    "(in-process backend, or a broker given by URL)")
    clients = await cluster.connect_all()
    await cluster.nodes[0].sio.emit("before", 1)
    for client in clients:
        assert await client.next("before") == 1

    stopped = time.monotonic()
    await asyncio.to_thread(backend.broker.restart)
    back = time.monotonic()
    received: set[int] = set()
    deadline = back + 30
    sequence = 0
    while len(received) < len(clients) and time.monotonic() < deadline:
        sequence += 1
        await cluster.nodes[0].sio.emit("after", sequence)
        for i, client in enumerate(clients):
            try:
                await asyncio.wait_for(client.received[("/", "after")].get(), 0.05)
                received.add(i)
            except asyncio.TimeoutError:
                pass
    flowing = time.monotonic() - back
    assert received == {0, 1, 2}, f"broadcasts did not flow again within 30s: {received}"
    MEASUREMENTS[f"{backend.name}/{transport}: broadcasts flow again after broker restart"] = (
        f"{flowing:.2f}s (down {back - stopped:.1f}s)")
    # the nodes survived: heartbeats resume and every node sees the others again
    await cluster.wait_for_count(3)
    for client in clients:
        assert client.sio.connected


def _expiry_deadline(cluster: Cluster) -> float:
    """Long enough for a silent node to be dropped (the heartbeat timeout, and the
    heartbeat that notices it), with a generous margin."""
    options = cluster.options
    return float(options["heartbeat_timeout"] + 2 * options["heartbeat_interval"]
                 + DEADLINE)


async def test_node_killed_without_goodbye(backend: BackendUnderTest, cluster: Cluster,
                                           transport: str) -> None:
    a, b, c = await cluster.connect_all()
    await c.call("join", "room")
    await a.call("join", "room")
    await cluster.nodes[2].crash()
    started = time.monotonic()
    # node 2 is still believed alive: the request waits for it until it is dropped,
    # then completes with the live nodes' answers (its own timeout is far longer: it
    # would raise ClusterTimeout)
    sockets = await cluster.nodes[0].manager.fetch_sockets(
        timeout=2 * _expiry_deadline(cluster))
    MEASUREMENTS[f"{backend.name}/{transport}: a request waiting on a crashed node "
                 f"completes after"] = f"{time.monotonic() - started:.2f}s"
    assert {s.sid for s in sockets} == {a.sid(), b.sid()}
    await cluster.wait_for_count(2, timeout=_expiry_deadline(cluster))
    # the survivors keep working
    await cluster.nodes[1].sio.emit("alive", 1, to="room")
    assert await a.next("alive") == 1


async def test_node_process_killed_with_sigkill(backend: BackendUnderTest,
                                                cluster: Cluster) -> None:
    if not backend.capabilities.multi_process:
        pytest.skip(f"{backend.name}: nodes share one process (capability multi_process "
                    "is false), so there is no node process to kill")
    a, b, c = await cluster.connect_all()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "conformance.node_process", cluster.node_url,
        json.dumps(cluster.options), stdout=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().split()
        assert line[:1] == ["READY"], line
        port = int(line[1])
        await cluster.wait_for_count(4)
        victim_client = Client(cluster.nodes[0], cluster.transport)
        await victim_client.sio.connect(f"http://127.0.0.1:{port}",
                                        transports=[cluster.transport], wait_timeout=10)
        cluster.clients.append(victim_client)
        assert len(await cluster.nodes[0].manager.fetch_sockets()) == 4

        os.kill(proc.pid, signal.SIGKILL)
        # the request waits for the killed node until it is dropped
        sockets = await cluster.nodes[1].manager.fetch_sockets(
            timeout=2 * _expiry_deadline(cluster))
        assert {s.sid for s in sockets} == {a.sid(), b.sid(), c.sid()}
        await cluster.wait_for_count(3, timeout=_expiry_deadline(cluster))
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
