"""Manager logic over the in-process memory backend (no broker, no HTTP)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from conformance.cluster import eventually
from socketio_adapters import (
    ClusterManager,
    ClusterTimeout,
    NotStarted,
    OutboxFull,
    create_manager,
)
from socketio_adapters.backends.base import Backend, BrokerUnavailable, Outgoing
from socketio_adapters.backends.memory import MemoryBackend
from socketio_adapters.backoff import Backoff
from socketio_adapters.cluster.nodes import NodeTable
from socketio_adapters.cluster.requests import PendingRequest
from socketio_adapters.errors import PayloadTooLarge
from socketio_adapters.framing import unpack_frame
from socketio_adapters.protocol import MessageType, decode

# short enough for quick expiry tests, long enough that a busy machine's stall of a
# few hundred milliseconds does not make nodes drop each other
FAST: dict[str, Any] = {"heartbeat_interval": 0.1, "heartbeat_timeout": 1.0}
DEADLINE = 10.0
"""How long a test waits for a condition before it fails (a liveness bound only)."""



async def _counts(*managers: ClusterManager) -> list[int]:
    return [await m.server_count() for m in managers]


async def _pair(name: str, **options: Any) -> tuple[ClusterManager, ClusterManager]:
    a = create_manager(f"memory://{name}", **{**FAST, **options})
    b = create_manager(f"memory://{name}", **{**FAST, **options})
    await a.start()
    await b.start()
    await eventually(lambda: _counts(a, b), [2, 2], "two nodes see each other")
    return a, b


def _node_log(caplog: pytest.LogCaptureFixture, uid: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if f"node {uid} " in r.getMessage()]


async def test_operations_after_stop_raise_a_clear_error() -> None:
    manager = create_manager("memory://")
    await manager.start()
    await manager.stop()
    with pytest.raises(NotStarted, match="start"):
        await manager.emit("x", 1, namespace="/")
    with pytest.raises(NotStarted):
        await manager.fetch_sockets()


async def test_start_and_stop_are_idempotent() -> None:
    manager = create_manager("memory://idem")
    await manager.start()
    await manager.start()
    await manager.stop()
    await manager.stop()
    assert not manager.started


async def test_heartbeats_count_nodes_and_expire_the_silent(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="socketio_adapters")
    a, b = await _pair("hb")
    assert await a.server_count() == 2
    # b goes silent without a goodbye: only its missing heartbeats can tell a
    await b.stop(goodbye=False)
    await eventually(a.server_count, 1, "a drops the silent node",
                     timeout=FAST["heartbeat_timeout"] + DEADLINE)
    seen = _node_log(caplog, b.uid)
    assert f"node {b.uid} silent for {FAST['heartbeat_timeout']}s: dropped" in seen
    assert f"node {b.uid} closed" not in seen
    await a.stop()


async def test_clean_stop_is_seen_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="socketio_adapters")
    # heartbeats would take a minute to expire b: only its goodbye can drop it sooner
    a, b = await _pair("bye", heartbeat_timeout=60.0)
    await b.stop()
    await eventually(a.server_count, 1, "a drops the node that said goodbye")
    seen = _node_log(caplog, b.uid)
    assert f"node {b.uid} closed" in seen
    assert not [line for line in seen if "silent" in line]
    await a.stop()


async def test_request_completes_when_the_awaited_node_dies() -> None:
    a, b = await _pair("die")
    never, running = asyncio.Event(), asyncio.Event()

    async def stuck() -> None:
        running.set()
        await never.wait()

    b.on("stuck", stuck)
    # the request's own timeout is far past the deadline below: only b's death can
    # complete it in time (a timeout would raise ClusterTimeout, not return [])
    task = asyncio.create_task(a.server_side_emit_with_ack("stuck", timeout=60))
    await asyncio.wait_for(running.wait(), DEADLINE)  # b holds the request
    await b.stop(goodbye=False)
    assert await asyncio.wait_for(task, FAST["heartbeat_timeout"] + DEADLINE) == []
    await a.stop()


async def test_timeout_carries_partial_answers() -> None:
    a, b = await _pair("partial")
    c = create_manager("memory://partial", **FAST)
    await c.start()
    await eventually(lambda: _counts(a, b, c), [3, 3, 3], "three nodes see each other")
    b.on("q", lambda: "from-b")
    never = asyncio.Event()

    async def slow() -> str:
        await never.wait()
        return "late"

    c.on("q", slow)
    with pytest.raises(ClusterTimeout) as caught:  # b answers well within the timeout
        await a.server_side_emit_with_ack("q", timeout=2.0)
    assert caught.value.partial == ["from-b"]
    assert caught.value.silent == [c.uid]  # named, so the caller knows who is missing
    for m in (a, b, c):
        await m.stop()


class _Flaky(MemoryBackend):
    """A memory backend whose publishes fail while ``down`` is set."""

    name: ClassVar[str] = "flaky"
    down = False
    published: ClassVar[list[bytes]] = []

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        if self.down:
            raise ConnectionError("broker down")
        self.published.extend(p for _, p in batch)
        await super().publish(batch)


def _published_broadcasts() -> list[Any]:
    """The packets of the BROADCAST messages that reached the broker, in order."""
    payloads: list[bytes] = []
    for message in _Flaky.published:  # a burst travels as frames of payloads
        payloads.extend(unpack_frame(message) or [message])
    sent = [decode(p) for p in payloads]
    return [m.data["packet"] for m in sent if m.type is MessageType.BROADCAST]


async def test_outbox_buffers_while_the_broker_is_down_then_sends_in_order() -> None:
    backend = _Flaky("memory://flaky")
    manager = ClusterManager(backend, max_buffer=1000, **FAST)
    await manager.start()
    backend.down = True
    _Flaky.published.clear()
    for i in range(50):
        await manager.emit("e", i, namespace="/")
    outbox = manager.publisher.outbox
    assert outbox is not None
    # the writer tried to publish and failed: the emits wait in the buffer
    await eventually(lambda: outbox.failures >= 1, True, "a publish attempt failed")
    assert manager.stats()["queued"] >= 50
    assert _published_broadcasts() == []
    backend.down = False
    await asyncio.wait_for(manager.flush(), DEADLINE)
    assert _published_broadcasts() == [["e", i] for i in range(50)]
    await manager.stop()


async def test_a_writer_killed_by_a_client_library_is_started_again(
        caplog: pytest.LogCaptureFixture) -> None:
    class Cancelling(_Flaky):
        """aiormq cancels what waits on a connection it closed: the writer's send
        ends with CancelledError though nobody cancelled the writer."""

        cancels = 1

        async def publish(self, batch: Sequence[Outgoing]) -> None:
            if self.cancels:
                self.cancels -= 1
                raise asyncio.CancelledError
            await super().publish(batch)

    manager = ClusterManager(Cancelling("memory://cancelled"), ordered=False,
                             heartbeat_interval=60.0, heartbeat_timeout=120.0)
    _Flaky.published.clear()
    with caplog.at_level(logging.ERROR):
        await manager.start()
        await manager.emit("e", 1, namespace="/")
        await asyncio.wait_for(manager.flush(), DEADLINE)
    assert _published_broadcasts() == [["e", 1]]
    assert "the outbox writer stopped" in caplog.text
    await manager.stop()


async def test_a_deaf_subscription_is_noticed_and_opened_again(
        caplog: pytest.LogCaptureFixture) -> None:
    class Deaf(MemoryBackend):
        """Its connection looks alive, but nothing reaches the manager (a client
        library's read loop that died) until it subscribes again."""

        name: ClassVar[str] = "deaf"
        deaf = False

        async def _dispatch(self, payload: bytes) -> None:
            if not self.deaf:
                await super()._dispatch(payload)

        async def resubscribe(self, why: str) -> None:
            self.deaf = False
            await super().resubscribe(why)

    backend = Deaf("memory://deaf")
    manager = ClusterManager(backend, heartbeat_interval=0.1, heartbeat_timeout=1.0)
    peer = create_manager("memory://deaf", **FAST)
    await manager.start()
    await peer.start()
    await eventually(lambda: _counts(manager, peer), [2, 2], "two nodes")
    backend.deaf = True
    with caplog.at_level(logging.ERROR):
        await eventually(lambda: manager.stats()["deaf_resubscribes"], 1,
                         "the deaf node notices", DEADLINE)
        # it hears again: the peer's heartbeats arrive, and it counts the peer
        await eventually(lambda: manager.stats()["reconnects"], 1, "it subscribed again")
        await eventually(lambda: _counts(manager, peer), [2, 2], "it hears again")
    assert "have not come back through the broker" in caplog.text
    assert "subscribing again" in caplog.text
    assert manager.stats()["deaf_resubscribes"] == 1
    await peer.stop()
    await manager.stop()


async def test_a_full_outbox_makes_emits_wait_then_raise_not_drop() -> None:
    backend = _Flaky("memory://full")
    # no periodic heartbeat during the test: only the emits below fill the buffer
    manager = ClusterManager(backend, max_buffer=10, buffer_timeout=0.3,
                             heartbeat_interval=60.0, heartbeat_timeout=120.0)
    await manager.start()
    await asyncio.wait_for(manager.flush(), DEADLINE)  # the first heartbeat is out
    sent = manager.stats()["published"]
    backend.down = True
    _Flaky.published.clear()
    for i in range(10):
        await manager.emit("e", i, namespace="/")
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(OutboxFull, match=r"10 messages .*max_buffer=10.*within 0\.3s "
                                         r"\(the broker is unreachable\)"):
        await manager.emit("e", 10, namespace="/")
    assert loop.time() - began >= 0.3  # it waited for room first
    assert (manager.stats()["publish_dropped"], manager.stats()["queued"]) == (0, 10)
    # room that frees up while an emit waits lets it through (once the writer's
    # backoff, which grew while the broker was down, lets it try again)
    manager.publisher.require().timeout = DEADLINE
    waiting = asyncio.create_task(manager.emit("e", 11, namespace="/"))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    backend.down = False
    await asyncio.wait_for(waiting, DEADLINE)
    await asyncio.wait_for(manager.flush(), DEADLINE)
    # nothing dropped: the ten buffered, then the one that waited, in order
    assert _published_broadcasts() == [["e", i] for i in (*range(10), 11)]
    assert manager.stats()["published"] >= sent + 11
    assert manager.stats()["publish_dropped"] == 0
    backend.down = True
    for i in range(3):  # still queued when the manager stops: lost, so dropped
        await manager.emit("late", i, namespace="/")
    await manager.stop(goodbye=False)
    assert (manager.stats()["publish_dropped"], manager.stats()["queued"]) == (3, 0)


async def test_a_message_larger_than_the_whole_outbox_is_refused_at_once() -> None:
    # queued, it would fill the outbox alone: every other message (heartbeats,
    # answers) would be dropped until it left
    manager = ClusterManager(MemoryBackend("memory://huge"), max_buffer_bytes=100_000,
                             heartbeat_interval=60.0, heartbeat_timeout=120.0)
    await manager.start()
    try:
        with pytest.raises(PayloadTooLarge, match=r"over the outbox's limit of 100000 "
                                                  r"bytes \(the max_buffer_bytes option\)"):
            await manager.emit("big", b"x" * 100_001, namespace="/")
        await manager.emit("fits", b"x" * 90_000, namespace="/")
        assert manager.stats()["publish_dropped"] == 0
    finally:
        await manager.stop()


async def test_the_outbox_is_bounded_in_bytes_too() -> None:
    backend = _Flaky("memory://bytes")
    manager = ClusterManager(backend, max_buffer_bytes=3000, buffer_timeout=0.2,
                             heartbeat_interval=60.0, heartbeat_timeout=120.0)
    await manager.start()
    await asyncio.wait_for(manager.flush(), DEADLINE)
    backend.down = True
    _Flaky.published.clear()
    blob = b"x" * 1000
    for i in range(2):
        await manager.emit("b", (i, blob), namespace="/")
    with pytest.raises(OutboxFull, match="max_buffer_bytes=3000"):
        await manager.emit("b", (2, blob), namespace="/")
    backend.down = False
    await asyncio.wait_for(manager.flush(), DEADLINE)
    assert [p[1] for p in _published_broadcasts()] == [0, 1]
    await manager.stop()


async def test_a_slow_broker_slows_the_emitters_down_instead_of_queueing() -> None:
    class Slow(_Flaky):
        async def publish(self, batch: Sequence[Outgoing]) -> None:
            await asyncio.sleep(0.01)
            await super().publish(batch)

    manager = ClusterManager(Slow("memory://slow"), ordered=False, max_buffer=100,
                             heartbeat_interval=60.0, heartbeat_timeout=120.0)
    await manager.start()
    outbox = manager.publisher.require()
    outbox.high_water = 20
    deepest = 0
    for i in range(300):  # fire and forget: each returns once queued
        await manager.emit("s", i, namespace="/")
        deepest = max(deepest, len(outbox))
    assert deepest <= 21 + outbox.batch_size
    await asyncio.wait_for(manager.flush(), DEADLINE)
    assert manager.stats()["publish_dropped"] == 0
    await manager.stop()


async def test_publish_counters_last_across_stop_and_start() -> None:
    manager = create_manager("memory://counted", heartbeat_interval=60.0,
                             heartbeat_timeout=120.0)
    await manager.start()
    await asyncio.wait_for(manager.flush(), DEADLINE)
    at_start = manager.stats()["published"]  # the first heartbeat
    assert at_start >= 1
    for i in range(5):
        await manager.emit("e", i, namespace="/")
    await asyncio.wait_for(manager.flush(), DEADLINE)
    assert manager.stats()["published"] == at_start + 5
    await manager.stop()  # sends its goodbye too
    stopped = manager.stats()
    assert (stopped["published"], stopped["publish_dropped"], stopped["queued"]) == (
        at_start + 6, 0, 0)
    await manager.start()
    await asyncio.wait_for(manager.flush(), DEADLINE)
    assert manager.stats()["published"] == 2 * at_start + 6
    await manager.stop()


class _Tiny(MemoryBackend):
    name: ClassVar[str] = "tiny"
    capabilities = MemoryBackend.capabilities.__class__(max_payload=100,
                                                        multi_process=False)


async def test_payload_over_the_backend_limit_is_refused() -> None:
    manager = ClusterManager(_Tiny("memory://tiny"), **FAST)
    await manager.start()
    with pytest.raises(PayloadTooLarge, match="limit of 100 bytes"):
        await manager.emit("big", "x" * 500, namespace="/")
    await manager.stop()


class _Unreachable(Backend):
    name: ClassVar[str] = "unreachable"

    async def _run(self, ready: Any) -> None:
        raise ConnectionRefusedError("nobody home")

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        raise ConnectionRefusedError("nobody home")


async def test_unreachable_broker_fails_start_with_a_clear_error() -> None:
    manager = ClusterManager(_Unreachable("x://user:pw@127.0.0.1:1", connect_timeout=0.3))
    with pytest.raises(BrokerUnavailable, match=r"x://user:\*\*\*@127.0.0.1:1"):
        await manager.start()
    assert not manager.started


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    backoff = Backoff(base=0.1, cap=1.0)
    delays = [backoff.next() for _ in range(10)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(d <= 1.0 for d in delays)
    assert delays[-1] >= 0.5
    backoff.reset()
    assert backoff.next() <= 0.1


def test_node_table() -> None:
    table = NodeTable(timeout=10)
    assert table.touch("a") is True
    assert table.touch("a") is False
    table.refresh("b")  # unknown nodes are not added by a refresh
    assert table.alive() == {"a"}
    assert table.expire() == []
    assert table.remove("a") and len(table) == 0


async def test_pending_request_counts_per_node() -> None:
    request = PendingRequest("acks", ["n1", "n2"], None)
    request.expect("n1", 2)
    request.add("n1", ["x"])
    request.add("n2", ["y"])  # n2's count is not known yet
    assert not request.future.done()
    request.expect("n2", 1)
    assert not request.future.done()
    request.add("n1", ["z"])
    assert sorted(await request.wait(1)) == ["x", "y", "z"]


async def test_an_emitter_cannot_take_callbacks() -> None:
    emitter = create_manager("memory://emitter", write_only=True)
    await emitter.start()
    try:
        with pytest.raises(ValueError, match="emitter"):
            await emitter.emit("x", 1, namespace="/", to="sid", callback=print)
    finally:
        await emitter.stop()


class _RefusingOpen(MemoryBackend):
    name: ClassVar[str] = "refusing"

    async def _open(self) -> None:
        raise ConnectionRefusedError("nobody home")


async def test_an_emitter_on_an_unreachable_broker_fails_start_clearly() -> None:
    emitter = ClusterManager(_RefusingOpen("memory://x", connect_timeout=0.3),
                             write_only=True)
    with pytest.raises(BrokerUnavailable, match="ConnectionRefusedError: nobody home"):
        await emitter.start()
    assert not emitter.started


def _memory_in_a_child(queue: Any) -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logging.getLogger("socketio_adapters").addHandler(Keep())
    manager = create_manager("memory://in-a-worker")

    async def run() -> None:
        await manager.start()
        await manager.stop()

    asyncio.run(run())
    queue.put(records)


def test_memory_in_a_worker_process_says_the_others_are_not_in_its_cluster() -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # as uvicorn --workers starts them
    queue = context.Queue()
    child = context.Process(target=_memory_in_a_child, args=(queue,))
    child.start()
    said = queue.get(timeout=60)
    child.join(30)
    assert any("other workers are not in this cluster" in s for s in said), said
