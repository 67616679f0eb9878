"""Heartbeats: this node announces itself and notices the others come and go.

A node sends INITIAL_HEARTBEAT when it starts (every node answers with a HEARTBEAT
to it alone, so it knows the cluster at once), then a HEARTBEAT every
``interval`` seconds; a node silent for the node table's timeout, or one that said
goodbye (ADAPTER_CLOSE), is gone, and the requests waiting on it complete with what
arrived. An emitter sends none, so it is never counted as a node. While its own
subscription is down a node sends none either (it cannot receive, so it must not be
counted), and expires nobody (it cannot hear them); once back, the time it was deaf
does not count against the others.

A node may say something of itself in its heartbeats (:attr:`Heartbeats.announcement`,
a map: an application server of the distributor mode names the namespaces it serves);
the others keep the last one in their node table and are told when it changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..protocol import Message, MessageType
from ..tasks import settle
from .nodes import NodeTable
from .ordering import SelfSync
from .publisher import Publisher
from .requests import RequestTable

__all__ = ["Heartbeats"]

_ANNOUNCING = frozenset({MessageType.HEARTBEAT, MessageType.INITIAL_HEARTBEAT})


class Heartbeats:
    """The heartbeat loop and the node table's upkeep."""

    def __init__(self, publisher: Publisher, nodes: NodeTable, requests: RequestTable,
                 interval: float, logger: logging.Logger,
                 on_tick: Callable[[], None] | None = None) -> None:
        self.publisher = publisher
        self.nodes = nodes
        self.requests = requests
        self.interval = interval
        self.logger = logger
        self.on_tick = on_tick
        """Also called every interval (other periodic upkeep)."""
        self.self_sync: SelfSync | None = None
        """This node's markers through the broker (set by the manager): a node whose
        own markers stop coming back hears nothing, whatever its connection says."""
        self.deaf = 0
        """Times this node found its subscription deaf and subscribed again."""
        self._marker: asyncio.Future[None] | None = None
        self._heard = time.monotonic()
        self._resubscribing: asyncio.Future[None] | None = None
        self.gone_callbacks: list[Callable[[str], None]] = []
        """Called with the uid of each node that leaves or falls silent."""
        self.joined_callbacks: list[Callable[[str], None]] = []
        """Called with the uid of each node that joins or announces something new."""
        self.announcement: dict[str, Any] | None = None
        """What the application says of this node in its heartbeats (None: nothing)."""
        self.traits: dict[str, Any] = {}
        """What the library says of this node in them (e.g. that it routes rooms),
        sent with :attr:`announcement`."""
        self._task: asyncio.Task[None] | None = None

    def said(self) -> dict[str, Any] | None:
        """What this node's heartbeats carry: :attr:`traits` and :attr:`announcement`."""
        if not self.traits:
            return self.announcement
        return {**self.traits, **(self.announcement or {})}

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        self.publisher.publish(MessageType.INITIAL_HEARTBEAT, "/", self.said())
        self._task = asyncio.create_task(self._loop(), name="cluster-heartbeat")

    async def stop(self, goodbye: bool) -> None:
        """Stop sending; with ``goodbye`` tell the others at once (ADAPTER_CLOSE)."""
        task, self._task = self._task, None
        for running in (task, self._resubscribing):
            if running is not None:
                running.cancel()
                await settle(running, 5.0, self.logger, "the heartbeat task")
        if goodbye:
            self.publisher.publish(MessageType.ADAPTER_CLOSE, "/")

    def seen(self, message: Message) -> None:
        """A message arrived from ``message.uid``: heartbeats announce a node, any
        other message keeps a known node alive."""
        kind = message.type
        if kind is MessageType.BROADCAST:  # most messages: only a sign of life
            self.nodes.refresh(message.uid)
        elif kind in _ANNOUNCING:
            joined = self.nodes.touch(message.uid)
            if joined:
                self.logger.info("node %s joined", message.uid)
            info = message.data if isinstance(message.data, dict) else None
            if self.nodes.announce(message.uid, info) or joined:
                self._call(self.joined_callbacks, message.uid)
            if kind is MessageType.INITIAL_HEARTBEAT:
                self.publisher.publish(MessageType.HEARTBEAT, "/", self.said(),
                                       target=message.uid)
        elif kind is MessageType.ADAPTER_CLOSE:
            self.gone(message.uid, "closed")
        else:
            self.nodes.refresh(message.uid)

    def gone(self, uid: str, why: str) -> None:
        self.nodes.remove(uid)
        self.logger.info("node %s %s", uid, why)
        self.requests.drop_node(uid)
        self._call(self.gone_callbacks, uid)

    def _call(self, callbacks: list[Callable[[str], None]], uid: str) -> None:
        for callback in callbacks:
            try:
                callback(uid)
            except Exception:
                self.logger.exception("a node callback failed")

    def _still_deaf(self) -> bool:
        """Send this node a marker through the broker each interval; when none came
        back for the node table's timeout, subscribe again (and skip this beat)."""
        sync = self.self_sync
        if sync is None:
            return False
        now, marker = time.monotonic(), self._marker
        outbox = self.publisher.outbox
        if outbox is None or outbox.held or not outbox.reachable:
            self._heard = now  # its marker may be waiting to be sent: no judgement
        if marker is not None and marker.done():
            if not marker.cancelled():
                marker.exception()  # retrieved: not sent counts as not heard
            self._heard, marker = now, None
        if marker is None:
            self._marker = sync.mark()
        if now - self._heard <= self.nodes.timeout:
            return False
        self.deaf += 1
        self._heard, self._marker = now, None
        backend = self.publisher.backend
        self._resubscribing = asyncio.ensure_future(backend.resubscribe(
            f"this node's own messages have not come back through the broker for "
            f"{self.nodes.timeout}s (a deaf subscription)"))
        return True

    async def _loop(self) -> None:
        state = self.publisher.backend.state
        deaf_since: float | None = None
        while True:
            await asyncio.sleep(self.interval)
            if not state.connected:
                # this node cannot receive: it does not announce itself as alive, and
                # does not judge the others silent, since it cannot hear them
                if deaf_since is None:
                    deaf_since = state.down_since or time.monotonic()
                continue
            if deaf_since is not None:
                self.nodes.pause(time.monotonic() - deaf_since)
                deaf_since = None
                self._heard, self._marker = time.monotonic(), None
            if self._still_deaf():
                continue
            try:
                self.publisher.publish(MessageType.HEARTBEAT, "/", self.said())
            except Exception:
                self.logger.exception("could not queue a heartbeat")
            for uid in self.nodes.expire():
                self.gone(uid, f"silent for {self.nodes.timeout}s: dropped")
            if self.on_tick is not None:
                self.on_tick()
