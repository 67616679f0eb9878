"""Connection state recovery across faults: every lost-transport reason restores,
a server-side disconnect and a node crash do not, and a client recovers across a
broker restart (the broker keeps its log as production runs it)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import pytest

from .cluster import eventually
from .conftest import BackendUnderTest
from .test_faults import REPO_ROOT
from .test_recovery import Scenario, client_kind, scenario

__all__ = ["client_kind", "scenario"]  # the fixtures, shared with test_recovery


@pytest.mark.parametrize("reason", ["transport error", "ping timeout"])
async def test_every_lost_transport_restores(scenario: Scenario, reason: str) -> None:
    client = await scenario.primed(0, rooms=("r",))
    sid = client.sid()
    await scenario.drop(client, reason)
    await scenario.nodes[1].sio.emit("ev", "missed", to="r")
    await scenario.settle()
    await scenario.back(client, 2)
    assert client.recovered() and client.sid() == sid, f"not restored after {reason!r}"
    assert await client.take("ev", 1) == ["missed"]


async def test_a_server_side_disconnect_is_final(scenario: Scenario) -> None:
    client = await scenario.primed(0)
    sid, pid, offset = client.sid(), client.pid(), client.offset()
    recovery = scenario.nodes[0].manager.recovery
    assert recovery is not None
    saved = recovery.saved
    await scenario.nodes[0].sio.disconnect(sid)
    await asyncio.wait_for(client.disconnected.wait(), 10)
    again = await scenario.client(1, auth={"pid": pid, "offset": offset})
    assert not again.recovered() and again.sid() != sid, "a kicked socket came back"
    assert recovery.saved == saved, "the server saved a session it ended itself"


async def test_a_crashed_node_s_clients_get_a_fresh_session(scenario: Scenario) -> None:
    """A node process killed with SIGKILL saves nothing: its clients start anew."""
    if not scenario.backend.capabilities.multi_process:
        pytest.skip(f"{scenario.backend.name}: nodes share one process (capability "
                    "multi_process is false), so there is no node process to kill")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "conformance.node_process", scenario.cluster.node_url,
        json.dumps(scenario.cluster.options), stdout=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().split()
        assert line[:1] == ["READY"], line
        await scenario.cluster.wait_for_count(4)
        client = scenario.new_client()
        await client.connect(f"http://127.0.0.1:{int(line[1])}")
        sid = client.sid()
        await scenario.nodes[0].sio.emit("hello", "hi", to=sid)
        assert await client.next("hello") == "hi"
        assert client.offset() is not None, "the event carried no offset"
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(client.disconnected.wait(), 10)
        await scenario.back(client, 0)
        assert not client.recovered() and client.sid() != sid
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_a_client_recovers_across_a_broker_restart(backend: BackendUnderTest) -> None:
    broker = backend.broker
    if broker is None or not backend.capabilities.durable_log:
        pytest.skip(f"{backend.name}: no durable log behind a broker process this "
                    "suite can restart")
    if not broker.keeps_log:
        pytest.skip(f"{backend.name}: the suite's broker (tansu, memory storage) keeps "
                    "no log across a restart")
    made = Scenario(backend, "websocket", "python")
    await made.cluster.start()
    try:
        client = await made.primed(0, rooms=("r",))
        sid = client.sid()
        await made.drop(client)
        await made.nodes[1].sio.emit("ev", "before", to="r")
        await made.settle()
        await asyncio.to_thread(broker.restart)
        await made.nodes[1].sio.emit("ev", "after", to="r")  # buffered until it is back
        await made.settle()
        await made.cluster.wait_for_count(3, 30)
        await made.back(client, 2)
        assert client.recovered() and client.sid() == sid
        assert await client.take("ev", 2) == ["before", "after"]
        await made.nodes[0].sio.emit("ev", "live", to="r")
        assert await client.next("ev") == "live"
        await eventually(lambda: made.stray(client, 1), [], "no event twice")
    finally:
        await made.close()
