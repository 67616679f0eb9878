"""Reading a JetStream stream in order through an ephemeral push consumer."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from .link import Link

__all__ = ["HEARTBEAT", "STALL", "Follower", "OnRecord"]

HEARTBEAT = 1.0
"""Seconds between the idle heartbeats of a consumer."""
STALL = 3.0
"""Seconds without a message or heartbeat after which a consumer is unhealthy."""

OnRecord = Callable[[int, bytes, int], Awaitable[None]]
"""Receives each stream message: its sequence, its body and when it was appended
(milliseconds since the epoch)."""


class Follower:
    """Reads the stream in order from one sequence through an ephemeral push consumer
    (no acks, flow control, idle heartbeats), handing each message to ``on_record``.
    A gap (a message nats-py dropped) or a consumer gone silent makes it unhealthy:
    its owner then starts another one."""

    def __init__(self, link: Link, stream: str, start: int, on_record: OnRecord,
                 logger: logging.Logger) -> None:
        self.link = link
        self.logger = logger
        self.stream = stream
        self.start = start
        self.next_seq = start
        """Stream sequence after the last message handed over (for logs)."""
        self.last_seen = time.monotonic()
        self._on_record = on_record
        self._delivered = 0  # consumer sequence of the last message received
        self._broken = False
        self._busy = False
        self._sub: Subscription | None = None
        self._name: str | None = None

    @property
    def healthy(self) -> bool:
        return not self._broken and (
            self._busy or time.monotonic() - self.last_seen < STALL)

    async def begin(self) -> int:
        """Create the consumer; return how many messages it had to deliver then."""
        nc = self.link.nc
        inbox = nc.new_inbox()
        self._sub = await nc.subscribe(inbox, cb=self._on_message)
        info = await self.link.js.add_consumer(self.stream, api.ConsumerConfig(
            deliver_subject=inbox, deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.start, ack_policy=api.AckPolicy.NONE,
            flow_control=True, idle_heartbeat=HEARTBEAT, mem_storage=True,
            num_replicas=1, inactive_threshold=STALL * 2))
        self._name = info.name
        self.last_seen = time.monotonic()
        return info.num_pending or 0

    async def _on_message(self, msg: Msg) -> None:
        self.last_seen = time.monotonic()
        if self._broken:
            return
        headers = msg.headers or {}
        status = headers.get(api.Header.STATUS)
        if status == "100":  # a heartbeat or a flow control request
            await self._control(msg, headers)
            return
        try:
            if status:
                raise ValueError(f"status {status} {headers.get(api.Header.DESCRIPTION)}")
            metadata = msg.metadata
        except (ValueError, nats.errors.Error) as exc:
            self._break(f"unexpected message ({exc})")
            return
        sequence = metadata.sequence
        if sequence.consumer != self._delivered + 1:
            self._break(f"message {self._delivered + 1} of the consumer missing")
            return
        self._delivered = sequence.consumer
        seq = sequence.stream
        self.next_seq = seq + 1
        self._busy = True
        try:
            await self._on_record(seq, msg.data, int(metadata.timestamp.timestamp() * 1000))
        finally:
            self._busy = False
            self.last_seen = time.monotonic()

    async def _control(self, msg: Msg, headers: dict[str, str]) -> None:
        nc = self.link.nc
        if msg.reply:  # flow control: every message before it was handled
            await nc.publish(msg.reply)
        stalled = headers.get("Nats-Consumer-Stalled")
        if stalled:
            await nc.publish(stalled)
        last = headers.get("Nats-Last-Consumer")
        if last is not None and last.isdigit() and int(last) != self._delivered:
            self._break(f"the consumer sent {last} messages, {self._delivered} arrived")

    def _break(self, why: str) -> None:
        self._broken = True
        self.logger.warning("nats: reading stream %s: %s (at message %d)", self.stream, why,
                            self.next_seq)

    async def stop(self) -> None:
        self._broken = True
        sub, self._sub = self._sub, None
        nc = self.link.nc
        with contextlib.suppress(Exception):
            if sub is not None:
                await sub.unsubscribe()
            if self._name is not None and nc.is_connected:  # no need to wait for it
                await nc.publish(f"{api.DEFAULT_PREFIX}.CONSUMER.DELETE.{self.stream}."
                                 f"{self._name}")
