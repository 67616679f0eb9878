"""Emitters without a server: the async context manager and the synchronous emitter
(its thread, errors carried to the caller, closing), over the memory backend and an
unreachable Redis URL. Delivery between processes is proven by
conformance/test_emitter.py on every broker."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import pytest

from socketio_adapters import (
    BrokerUnavailable,
    ClusterManager,
    ConfigurationError,
    EmitFailed,
    Emitter,
    EmitTimeout,
    NotStarted,
    SyncEmitter,
    create_emitter,
)
from socketio_adapters.backends.base import Outgoing
from socketio_adapters.backends.memory import MemoryBackend
from socketio_adapters.framing import unpack_frame
from socketio_adapters.protocol import MessageType, decode

THREAD = "socketio-adapters-emitter"


class _Recording(MemoryBackend):
    """A memory backend that takes its time to publish, and records what it did;
    ``down`` makes publishes fail as a lost connection, ``refuse`` as a broker that
    rejects the payload."""

    name: ClassVar[str] = "recording"

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.published: list[bytes] = []
        self.down = False
        self.refuse = False

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        await asyncio.sleep(0.05)
        if self.down:
            raise ConnectionError("broker down")
        if self.refuse:
            raise ValueError("broker says no")
        self.published.extend(p for _, p in batch)
        await super().publish(batch)

    def broadcasts(self) -> list[tuple[list[Any], list[str], list[str]]]:
        """(packet, rooms, except rooms) of every BROADCAST published, in order."""
        payloads: list[bytes] = []
        for message in self.published:
            payloads.extend(unpack_frame(message) or [message])
        sent = [decode(p) for p in payloads]
        return [(m.data["packet"], list(m.data["opts"]["rooms"]),
                 list(m.data["opts"]["except"]))
                for m in sent if m.type is MessageType.BROADCAST]


def _emitter(name: str, ordered: bool = True, **options: Any
             ) -> tuple[Emitter, _Recording]:
    backend = _Recording(f"memory://{name}")
    manager = ClusterManager(backend, write_only=True, ordered=ordered)
    return Emitter(manager, **options), backend


async def test_an_ordered_emit_returns_once_the_broker_has_it() -> None:
    emitter, backend = _emitter("ordered")
    async with emitter as sender:
        await sender.emit("job", 1)
        assert backend.broadcasts() == [(["job", 1], [], [])]


async def test_async_with_flushes_on_exit() -> None:
    emitter, backend = _emitter("exit", ordered=False)
    async with emitter as sender:
        await sender.emit("job", {"id": 1}, to="room", namespace="/")
        await sender.emit("job", (b"\x00\xff", 2), skip_sid=["sid-1"])
        assert backend.broadcasts() == []  # fire and forget: queued, not yet sent
    assert backend.broadcasts() == [
        (["job", {"id": 1}], ["room"], []),
        (["job", b"\x00\xff", 2], [], ["sid-1"]),
    ]
    assert not emitter.manager.started


async def test_an_error_in_the_block_still_sends_what_was_emitted_before_it() -> None:
    emitter, backend = _emitter("error")
    with pytest.raises(LookupError, match="in the block"):
        async with emitter:
            await emitter.emit("before", 1)
            raise LookupError("in the block")
    assert backend.broadcasts() == [(["before", 1], [], [])]
    assert not emitter.manager.started


async def test_flush_timeout_raises_and_close_still_disconnects() -> None:
    emitter, backend = _emitter("timeout", timeout=0.2)
    await emitter.start()
    backend.down = True
    await emitter.emit("lost", 1)
    with pytest.raises(EmitTimeout, match=r"did not take 1 queued messages within 0\.2s"):
        await emitter.flush()
    with pytest.raises(EmitTimeout):
        await emitter.close()
    assert not emitter.manager.started
    await emitter.close()  # twice is fine


@pytest.mark.parametrize(("ordered", "error"), [
    (True, "refused the message .*broker says no"),  # raised by the emit itself
    (False, "1 messages were dropped"),  # by the flush of emit_and_wait
])
async def test_a_refused_message_raises_emit_failed(ordered: bool, error: str) -> None:
    emitter, backend = _emitter(f"refused-{ordered}", ordered=ordered)
    async with emitter:
        backend.refuse = True
        with pytest.raises(EmitFailed, match=error):
            await emitter.emit_and_wait("no", 1)
        backend.refuse = False
        await emitter.emit_and_wait("yes", 2)  # reported once, not again
    assert backend.broadcasts() == [(["yes", 2], [], [])]


def test_create_emitter_options_are_checked() -> None:
    assert create_emitter("memory://opts", channel="app").manager.write_only
    with pytest.raises(ConfigurationError, match="write_only"):
        create_emitter("memory://opts", write_only=False)
    with pytest.raises(ConfigurationError, match="no_such_option"):
        create_emitter("memory://opts", no_such_option=1)
    with pytest.raises(ConfigurationError, match="timeout"):
        create_emitter("memory://opts", timeout=0)
    with pytest.raises(ConfigurationError, match="write_only"):
        Emitter(ClusterManager(MemoryBackend("memory://opts")))


def _emitter_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD]


def test_sync_emit_returns_once_published_and_close_is_idempotent() -> None:
    before = len(_emitter_threads())
    emitter = SyncEmitter("memory://sync", connection_state_recovery=True)
    assert len(_emitter_threads()) == before  # nothing runs before the first use
    emitter.emit("job", {"id": 1}, to="room")
    assert emitter.stats()["published"] == 1
    threads = _emitter_threads()
    assert len(threads) == before + 1 and all(t.daemon for t in threads)
    emitter.close()
    emitter.close()
    assert emitter.closed
    assert len(_emitter_threads()) == before
    with pytest.raises(NotStarted, match="closed"):
        emitter.emit("late", 1)


def test_with_block_closes_even_on_error() -> None:
    before = len(_emitter_threads())
    with pytest.raises(LookupError):
        with SyncEmitter("memory://sync-with") as emitter:
            emitter.emit("job", 1)
            raise LookupError("in the block")
    assert emitter.closed
    assert len(_emitter_threads()) == before


def test_several_threads_emit_at_once() -> None:
    with SyncEmitter("memory://sync-threads", connection_state_recovery=True) as emitter:
        def send(n: int) -> None:
            for i in range(20):
                emitter.emit("job", [n, i])

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, range(8)))
        assert emitter.stats()["published"] == 160
        assert emitter.stats()["publish_dropped"] == 0


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens there any more


@pytest.mark.parametrize(("scheme", "error", "message"), [
    # NATS connects when an emitter starts; Redis (like RabbitMQ, Kafka and Postgres)
    # on its first publish, which the outbox retries until the emitter's timeout
    ("nats", BrokerUnavailable, "nats: could not connect"),
    ("redis", EmitTimeout, r"redis: the broker at redis://127\.0\.0\.1:\d+/0 did not take"),
])
def test_an_unreachable_broker_raises_in_the_calling_thread(
        scheme: str, error: type[Exception], message: str) -> None:
    url = f"{scheme}://127.0.0.1:{_closed_port()}/0"
    if scheme == "nats":
        url = url.removesuffix("/0")
    emitter = SyncEmitter(url, connect_timeout=0.3, timeout=0.5)
    with pytest.raises(error, match=message) as raised:
        emitter.emit("job", 1)
    assert isinstance(raised.value, ConnectionError)  # one class to catch for both
    with pytest.raises(error):  # tried again, not cached
        emitter.emit("job", 2)
    if scheme == "redis":
        with pytest.raises(EmitTimeout):  # close says the queued messages were not sent
            emitter.close()
    emitter.close()
    assert emitter.closed


async def test_called_from_its_own_loop_raises_a_clear_error() -> None:
    emitter = SyncEmitter("memory://sync-own-loop")
    await asyncio.to_thread(emitter.start)
    runner = emitter._runner
    assert runner is not None

    async def inside() -> None:
        emitter.emit("job", 1)

    future = asyncio.run_coroutine_threadsafe(inside(), runner.loop)
    with pytest.raises(RuntimeError, match="its own event loop"):
        await asyncio.wrap_future(future)
    await asyncio.to_thread(emitter.close)


def test_an_emitter_never_closed_stops_when_collected() -> None:
    before = len(_emitter_threads())
    emitter = SyncEmitter("memory://sync-gc")
    emitter.emit("job", 1)
    assert len(_emitter_threads()) == before + 1
    del emitter
    gc.collect()
    assert len(_emitter_threads()) == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_thread_and_connection() -> None:
    """A Celery prefork worker: the parent started the emitter, then forked."""
    with SyncEmitter("memory://sync-fork") as emitter:
        emitter.emit("job", 1)
        pid = os.fork()
        if pid == 0:  # the child: the parent's thread did not come along
            code = 1
            try:
                emitter.emit("job", 2)
                published = emitter.stats()["published"]
                emitter.close()
                code = 0 if published == 1 else 2  # 1: a fresh manager, not the parent's
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        emitter.emit("job", 3)  # the parent's emitter is untouched
        assert emitter.stats()["published"] == 2
