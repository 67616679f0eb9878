"""The outbox's resume gate after an outage (cluster/resume.py), over the memory
backend: a node counts as subscribed again only once its own marker came back
through the broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import ClassVar

import pytest

from conformance.cluster import eventually
from socketio_adapters import ClusterManager
from socketio_adapters.backends.base import Outgoing
from socketio_adapters.backends.memory import MemoryBackend
from socketio_adapters.backoff import ConnectionState

TIMEOUT = 4.0
"""The nodes' heartbeat timeout: the gate's deadline, and the time after which a
node's heartbeat loop finds its subscription deaf."""
DEADLINE = 20.0
"""How long a test waits for a condition before it fails (a liveness bound only)."""


class _Outage(MemoryBackend):
    """A memory backend that can go through an outage: its publishes fail and its
    subscription is down while ``down``; one ``deaf`` on its return hears nothing (a
    client library whose read loop ended with the connection up) until it subscribes
    again."""

    name: ClassVar[str] = "outage"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.down = False
        self.deaf = False

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        if self.down:
            raise ConnectionError("broker down")
        await super().publish(batch)

    async def _dispatch(self, payload: bytes) -> None:
        if not self.deaf:
            await super()._dispatch(payload)

    async def resubscribe(self, why: str) -> None:
        self.deaf = False
        await super().resubscribe(why)

    def go_down(self) -> None:
        self.down = self.deaf = True
        self.state.mark_down()

    def come_back(self, deaf: bool) -> None:
        self.down, self.deaf = False, deaf
        self.state.mark_up()


async def test_a_node_back_deaf_subscribes_again_before_the_others_send_their_buffers(
        caplog: pytest.LogCaptureFixture) -> None:
    backends = [_Outage("memory://gate"), _Outage("memory://gate")]
    deaf, sender = nodes = [ClusterManager(b, heartbeat_interval=0.2,
                                           heartbeat_timeout=TIMEOUT) for b in backends]
    got: list[int] = []
    deaf.on("tick", got.append)
    for node in nodes:
        await node.start()
    try:
        await eventually(lambda: [len(n.nodes) for n in nodes], [1, 1], "two nodes")
        for backend in backends:
            backend.go_down()
        for i in range(5):  # buffered: sent once every node is subscribed again
            await sender.server_side_emit("tick", i)
        sender_outbox = sender.publisher.require()
        await eventually(lambda: sender_outbox.held, True, "the sender holds its buffer")
        backends[1].come_back(deaf=False)
        # a second later, the other's connection is back and its subscription deaf:
        # the sender's deadline would end before the heartbeat loop noticed
        await asyncio.sleep(1.0)
        backends[0].come_back(deaf=True)
        with caplog.at_level(logging.ERROR):
            await eventually(lambda: sorted(got), list(range(5)),
                             "the deaf node gets what the other buffered")
        assert sender.resume_gate.unanswered == 0  # it waited for the deaf node
        assert deaf.resume_gate.resubscribes == 1
        assert "own marker did not come back" in caplog.text
    finally:
        for node in nodes:
            await node.stop()


async def test_a_node_still_coming_back_after_the_deadline_is_waited_for() -> None:
    backends = [_Outage("memory://gate3"), _Outage("memory://gate3")]
    late, sender = nodes = [ClusterManager(b, heartbeat_interval=0.2,
                                           heartbeat_timeout=TIMEOUT) for b in backends]
    got: list[int] = []
    late.on("tick", got.append)
    for node in nodes:
        await node.start()
    try:
        await eventually(lambda: [len(n.nodes) for n in nodes], [1, 1], "two nodes")
        for backend in backends:
            backend.go_down()
        for i in range(5):
            await sender.server_side_emit("tick", i)
        await eventually(lambda: sender.publisher.require().held, True, "held")
        backends[1].come_back(deaf=False)
        # the other comes back deaf so late that it finds out only after the sender's
        # deadline: it probes meanwhile, so the sender keeps waiting for it
        await asyncio.sleep(TIMEOUT * 0.75)
        backends[0].come_back(deaf=True)
        await eventually(lambda: sorted(got), list(range(5)),
                         "the late node gets what the other buffered")
        assert sender.resume_gate.unanswered == 0
        assert late.resume_gate.resubscribes == 1
    finally:
        for node in nodes:
            await node.stop()


async def test_a_retry_waits_out_its_backoff_only_while_the_broker_is_away() -> None:
    state = ConnectionState()
    state.mark_up()
    state.mark_down()
    pause = asyncio.create_task(state.pause(60.0))
    await asyncio.sleep(0.05)
    assert not pause.done()
    state.mark_up()  # the subscription is back: the retry goes at once
    await asyncio.wait_for(pause, DEADLINE)
    with pytest.raises(asyncio.TimeoutError):  # while up, a pause is a plain sleep
        await asyncio.wait_for(state.pause(60.0), 0.2)


async def test_a_node_that_hears_itself_again_does_not_subscribe_again() -> None:
    backends = [_Outage("memory://gate2"), _Outage("memory://gate2")]
    nodes = [ClusterManager(b, heartbeat_interval=0.2, heartbeat_timeout=TIMEOUT)
             for b in backends]
    for node in nodes:
        await node.start()
    try:
        await eventually(lambda: [len(n.nodes) for n in nodes], [1, 1], "two nodes")
        for backend in backends:
            backend.go_down()
        await nodes[0].server_side_emit("tick", 0)
        await eventually(lambda: nodes[0].publisher.require().held, True, "held")
        for backend in backends:
            backend.come_back(deaf=False)
        await asyncio.wait_for(nodes[0].flush(), DEADLINE)
        assert [n.resume_gate.resubscribes for n in nodes] == [0, 0]
        assert nodes[0].resume_gate.passes == 1
    finally:
        for node in nodes:
            await node.stop()
