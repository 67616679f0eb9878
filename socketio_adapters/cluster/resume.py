"""After an outage, publish what was buffered only once the other nodes can hear it.

A broker that restarts forgets its subscriptions: each node subscribes again when it
reconnects, some sooner than others. Pub/sub hands a message only to the nodes
subscribed at that moment, so a node that sent its buffer the moment its own
connection came back would send it past the nodes still reconnecting. So the outbox
holds its buffer (:attr:`Outbox.gate`) until this node is subscribed again (however
long that takes: the broker is away for it meanwhile) and every other live node has
answered a probe (RESUME_PROBE, answered by RESUME_READY: a node that answers
received the probe, so it is subscribed). Probes are repeated until every node
answered, for at most ``timeout`` seconds from this node's return (the heartbeat
timeout: a node silent that long is dropped anyway); then the buffer goes out and
the nodes that did not answer are logged. Probes and answers jump the queue
(:meth:`Outbox.put_urgent`), so two nodes holding their buffers answer each other.

This node counts as subscribed again only once a marker it sent itself came back
through the broker (:meth:`SelfSync.echo`): a client library may report its
connection back while its subscription hears nothing (nats-py's read loop can end
with the connection up). When the marker has not come back after ``timeout / 3``
seconds, the gate subscribes again at once (:meth:`Backend.resubscribe`; up to
``MAX_RESUBSCRIBES`` times per outage) and the others' time starts anew once it is
back, so the buffer is not sent on the deadline while a node (this one, or another
doing the same) is deaf. A node that has not answered but still sends probes of its own
is itself still coming back (its gate is bounded the same way): it is waited for past
the deadline, for at most ``MAX_RESUBSCRIBES + 1`` timeouts in all.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from ..backoff import ConnectionState
from ..protocol import MessageType, Sync
from .nodes import NodeTable
from .ordering import SelfSync
from .publisher import Publisher

__all__ = ["ResumeGate"]

PROBE_EVERY = 0.2
"""Seconds between probes while some node has not answered."""
MAX_RESUBSCRIBES = 3
"""Times the gate subscribes again, in one outage, when this node does not hear its
own marker."""
DEAF_AFTER = 1 / 3
"""Part of the timeout after which a marker that did not come back means a deaf
subscription: long enough for a loaded broker's round trip, short enough that this
node is back, and answers, before the others' timeout."""
STILL_PROBING = 5 * PROBE_EVERY
"""A node whose last probe arrived this recently (seconds) is still in its own gate."""


class ResumeGate:
    """The outbox's gate (see the module docstring); :meth:`ready` takes the
    answers."""

    def __init__(self, publisher: Publisher, nodes: NodeTable, state: ConnectionState,
                 timeout: float, logger: logging.Logger,
                 self_sync: SelfSync | None = None) -> None:
        self.publisher = publisher
        self.nodes = nodes
        self.state = state
        self.timeout = timeout
        self.logger = logger
        self.self_sync = self_sync
        """Sends this node's own markers (without it, a node counts as subscribed
        once its connection says so)."""
        self._probes = itertools.count(1)
        self._answered: set[str] = set()
        self._probing: dict[str, float] = {}
        """When each node's last probe arrived (loop time)."""
        self._answer = asyncio.Event()
        self.passes = 0
        """Outages after which the buffer was sent with every node subscribed."""
        self.unanswered = 0
        """Outages after which some node did not answer in time."""
        self.resubscribes = 0
        """Times this node did not hear its own marker after an outage and subscribed
        again."""

    async def __call__(self) -> None:
        loop = asyncio.get_running_loop()
        waited, told = loop.time(), False
        deadline: float | None = None
        began = waiting = echo = None
        first_back: float | None = None
        echo_since = 0.0
        resubscribed = 0
        self._answered.clear()
        now = loop.time()
        self._probing = {uid: at for uid, at in self._probing.items()
                         if now - at < STILL_PROBING}
        try:
            while True:
                outbox = self.publisher.outbox
                if outbox is None:
                    return
                if not self.state.connected or outbox.failures:
                    # the broker is still away for this node (its subscription, or its
                    # publishing): what it buffers waits (bounded by the outbox), and
                    # the others' time starts once it is back; one probe tests the way
                    deadline = None
                    if not told and loop.time() - waited >= self.timeout:
                        told = True
                        self.logger.warning("the broker is still away %ss after an "
                                            "outage: %d messages wait", self.timeout,
                                            self._buffered())
                    if not outbox.urgent_pending:
                        self._probe()
                    await asyncio.sleep(PROBE_EVERY)
                    continue
                if deadline is None:  # back: the others get the heartbeat timeout from now
                    began = echo_since = loop.time()
                    first_back = began if first_back is None else first_back
                    deadline = began + self.timeout
                    waiting = self.nodes.alive()
                    echo = self._echo(echo)
                assert waiting is not None
                waiting -= self._answered
                if echo is not None and echo.cancelled():  # forgotten: another one
                    echo, echo_since = self._echo(None), loop.time()
                heard = echo is None or echo.done()
                if (not heard and resubscribed < MAX_RESUBSCRIBES
                        and loop.time() - echo_since >= self.timeout * DEAF_AFTER):
                    resubscribed += 1
                    await self._resubscribe()
                    deadline = None  # the others' time starts anew once it is back
                    continue
                left = deadline - loop.time()
                if heard and not waiting:
                    break
                if left <= 0:
                    assert first_back is not None
                    if not self._coming_back(waiting, first_back):
                        break
                    left = PROBE_EVERY
                self._answer.clear()
                self._probe()
                try:
                    await asyncio.wait_for(self._answer.wait(), min(PROBE_EVERY, left))
                    await asyncio.sleep(0)  # let the answers that came together arrive
                except asyncio.TimeoutError:
                    pass
        finally:
            if echo is not None and not echo.done():
                echo.cancel()
        assert began is not None
        took = loop.time() - began
        if not heard:
            self.unanswered += 1
            self.logger.warning(
                "after an outage, this node's own marker did not come back through the "
                "broker within %ss, nor did %s answer: sending %d buffered messages "
                "anyway (clients may miss them)", self.timeout,
                ", ".join(sorted(waiting)) or "any other node", self._buffered())
            return
        if waiting:
            self.unanswered += 1
            self.logger.warning(
                "after an outage, nodes %s did not answer within %ss: sending %d "
                "buffered messages anyway (those nodes may miss them)",
                ", ".join(sorted(waiting)), self.timeout, self._buffered())
            return
        self.passes += 1
        self.logger.info("after an outage, every node is subscribed again (%.2fs): "
                         "sending %d buffered messages", took, self._buffered())

    def _echo(self, previous: asyncio.Future[None] | None) -> asyncio.Future[None] | None:
        """A marker to this node through the broker (None: no way to send one)."""
        if previous is not None and not previous.done():
            previous.cancel()
        if self.self_sync is None:
            return None
        echo = self.self_sync.echo()
        echo.add_done_callback(lambda _: self._answer.set())  # look again at once
        return echo

    async def _resubscribe(self) -> None:
        self.resubscribes += 1
        await self.publisher.backend.resubscribe(
            f"after an outage, this node's own marker did not come back through the "
            f"broker within {self.timeout * DEAF_AFTER:.2g}s (a deaf subscription)")
        if self.state.connected:  # a backend that cannot subscribe again: wait a bit
            await asyncio.sleep(PROBE_EVERY)

    def _probe(self) -> None:
        self.publisher.publish_urgent(MessageType.RESUME_PROBE, Sync(next(self._probes)))

    def _coming_back(self, waiting: set[str], first_back: float) -> bool:
        """Some node not answered yet still probes (it is in its own gate), and this
        node has not waited ``MAX_RESUBSCRIBES + 1`` timeouts since it was back."""
        now = asyncio.get_running_loop().time()
        if now - first_back >= self.timeout * (MAX_RESUBSCRIBES + 1):
            return False
        return any(now - self._probing.get(uid, -STILL_PROBING) < STILL_PROBING
                   for uid in waiting)

    def probed(self, uid: str) -> None:
        """Node ``uid`` sent a probe: it is coming back from an outage itself."""
        self._probing[uid] = asyncio.get_running_loop().time()

    def ready(self, uid: str) -> None:
        """Node ``uid`` answered a probe."""
        self._answered.add(uid)
        self._answer.set()

    def _buffered(self) -> int:
        outbox = self.publisher.outbox
        return 0 if outbox is None else len(outbox)
