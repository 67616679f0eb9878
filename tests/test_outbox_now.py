"""A send started in the emitter's turn (cluster/outbox.py, ``Backend.writes_now``):
when the outbox's writer waits and the backend can write at once, a queued message
is written before the emitter's call returns, not a loop turn later in the writer;
order, failures and stopping stay the outbox's. Over a memory backend that records
when its publish writes."""

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
from socketio_adapters.cluster.outbox import Outbox
from socketio_adapters.framing import unpack_frame

DEADLINE = 10.0


class _Recording(MemoryBackend):
    """Writes (records) a batch in its publish's first step, then waits a loop turn
    for the broker's answer, as a Redis pipeline does; ``writes_now`` as told."""

    name: ClassVar[str] = "recording"

    def __init__(self, url: str, now: bool = True) -> None:
        super().__init__(url)
        self.now = now
        self.batches: list[list[bytes]] = []
        self.down = False

    def writes_now(self) -> bool:
        return self.now

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        if self.down:
            raise ConnectionError("broker down")
        payloads: list[bytes] = []
        for _, payload in batch:
            payloads.extend(unpack_frame(payload) or [payload])
        self.batches.append(payloads)
        await asyncio.sleep(0)  # the replies
        await super().publish(batch)


async def _outbox(backend: _Recording) -> Outbox:
    await backend.start("node-1", None)
    outbox = Outbox(backend, logging.getLogger("test"), timeout=DEADLINE)
    outbox.start()
    await eventually(lambda: outbox._waiting, True, "the writer waits")
    return outbox


@pytest.mark.parametrize("now", [True, False], ids=["writes now", "cannot"])
async def test_a_message_is_written_in_the_caller_s_turn_when_the_backend_can(
        now: bool) -> None:
    backend = _Recording("memory://now", now=now)
    outbox = await _outbox(backend)
    outbox.put(None, b"first")
    # no loop turn has passed: written already only if the backend said it could
    assert backend.batches == ([[b"first"]] if now else [])
    await asyncio.wait_for(outbox.flush(), DEADLINE)
    assert backend.batches == [[b"first"]]
    await outbox.stop()
    await backend.stop()


async def test_messages_queued_behind_a_started_send_follow_it_in_order() -> None:
    backend = _Recording("memory://order")
    outbox = await _outbox(backend)
    first = asyncio.ensure_future(outbox.put_ordered(None, b"a", DEADLINE))
    await asyncio.sleep(0)  # a was put: its send started at once, alone
    assert backend.batches == [[b"a"]]
    outbox.put(None, b"b")  # behind it, for the writer
    last = asyncio.ensure_future(outbox.put_ordered(None, b"c", DEADLINE))
    assert list(await asyncio.wait_for(asyncio.gather(first, last), DEADLINE)) == [True, True]
    assert [p for batch in backend.batches for p in batch] == [b"a", b"b", b"c"]
    assert len(backend.batches) <= 3 and len(outbox) == 0
    await outbox.stop()
    await backend.stop()


async def test_a_send_that_fails_in_its_first_step_is_retried_in_order() -> None:
    """The emitter does not see the error: the writer does, and sends the message
    again once the broker is back, as for any failed send."""
    backend = _Recording("memory://fails")
    outbox = await _outbox(backend)
    backend.down = True
    outbox.put(None, b"x")  # raises nothing here
    outbox.put(None, b"y")
    await eventually(lambda: outbox.failures >= 1, True, "the send failed")
    assert backend.batches == []
    backend.down = False
    await asyncio.wait_for(outbox.flush(), DEADLINE)
    assert [p for batch in backend.batches for p in batch] == [b"x", b"y"]
    await outbox.stop()
    await backend.stop()


async def test_stopping_during_a_send_started_in_the_caller_s_turn() -> None:
    """The outbox stops (no time left to send) while a send started in the caller's
    turn waits for a broker that does not answer: the send is cancelled, the message
    counted as dropped, and its emitter told, as for anything unsent at stop."""
    backend = _Recording("memory://stop")
    outbox = await _outbox(backend)
    answer = asyncio.Event()

    async def silent(batch: Sequence[Outgoing]) -> None:
        backend.batches.append([payload for _, payload in batch])
        await answer.wait()

    backend.publish = silent  # type: ignore[method-assign]
    ordered = asyncio.ensure_future(outbox.put_ordered(None, b"late", 0.5))
    await asyncio.sleep(0)
    started = outbox._started
    assert started is not None and backend.batches == [[b"late"]]
    await outbox.stop(timeout=0)
    assert started[2].cancelled()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(ordered, DEADLINE)
    assert outbox.counters.dropped == 1 and len(outbox) == 0
    await backend.stop()


async def test_ordered_emits_through_a_manager_whose_backend_writes_now() -> None:
    """End to end over two nodes: ordered emits return once the broker took them,
    and arrive in order."""
    a = ClusterManager(_Recording("memory://emits"), heartbeat_interval=60.0,
                       heartbeat_timeout=120.0)
    await a.start()
    for i in range(20):
        await a.emit("e", i, namespace="/")
    sent = [p for batch in a.backend.batches for p in batch]  # type: ignore[attr-defined]
    assert len(sent) >= 20
    await a.stop()
