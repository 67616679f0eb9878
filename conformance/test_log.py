"""The storage under connection state recovery, on every backend that declares it:
the durable log (append, live delivery in one order with the same offsets on every
node, reading back from an offset, trimming) and the session store (save, take once,
expiry). The recovery suite (test_recovery.py) builds on these."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from socketio_adapters import create_backend
from socketio_adapters.backends.base import LOG, Backend

from .conftest import BackendUnderTest


class LogNode:
    """A backend with the log enabled that records what it delivers."""

    def __init__(self, url: str, channel: str, *, listen: bool = True,
                 retention: float = 60.0, max_length: int = 10_000) -> None:
        self.backend: Backend = create_backend(url, channel=channel)
        self.entries: list[tuple[str, bytes]] = []
        self.arrived = asyncio.Event()
        self.backend.enable_log(self._deliver if listen else None, retention, max_length)
        self.listen = listen

    async def _deliver(self, offset: str, payload: bytes) -> None:
        self.entries.append((offset, payload))
        self.arrived.set()

    async def start(self, uid: str | None = None) -> LogNode:
        async def ignore(payload: bytes) -> None:
            pass

        await self.backend.start(uid or secrets.token_hex(8),
                                 ignore if self.listen else None)
        return self

    async def append(self, *payloads: bytes) -> None:
        await self.backend.send([(LOG, p) for p in payloads])

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.entries) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{len(self.entries)} of {count} log entries arrived")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), min(left, 0.5))
            except asyncio.TimeoutError:
                pass
        return self.entries


Spawn = Callable[..., Awaitable[LogNode]]


@pytest.fixture
async def spawn(backend: BackendUnderTest) -> AsyncIterator[Spawn]:
    """Start log nodes on one fresh channel; all are stopped after the test."""
    if not backend.capabilities.durable_log:
        pytest.skip(f"{backend.name} declares no durable_log")
    made: list[LogNode] = []
    channel = f"log-{secrets.token_hex(4)}"

    async def make(listen: bool = True, retention: float = 60.0,
                   max_length: int = 10_000) -> LogNode:
        node = LogNode(backend.url, channel, listen=listen, retention=retention,
                       max_length=max_length)
        made.append(node)
        return await node.start()

    try:
        yield make
    finally:
        for node in made:
            await node.backend.stop()


async def test_every_node_sees_one_order_with_the_same_offsets(spawn: Spawn) -> None:
    a, b = await spawn(), await spawn()
    emitter = await spawn(listen=False)
    sent = [f"a{i}".encode() for i in range(60)]
    extra = [f"e{i}".encode() for i in range(60)]
    await asyncio.gather(
        *(a.append(*sent[i:i + 7]) for i in range(0, 60, 7)),
        *(emitter.append(p) for p in extra))
    seen_a = await a.wait_for(120)
    seen_b = await b.wait_for(120)
    assert seen_a == seen_b, "two nodes saw different orders or offsets"
    assert len({o for o, _ in seen_a}) == 120, "offsets are not unique"
    assert [p for _, p in seen_a if p.startswith(b"a")] == sent, "one sender's order lost"
    assert [p for _, p in seen_a if p.startswith(b"e")] == extra
    assert a.backend.log_position == seen_a[-1][0]


async def test_read_log_returns_what_followed_an_offset(spawn: Spawn) -> None:
    a = await spawn()
    payloads = [bytes([i]) * (i + 1) for i in range(40)]
    await a.append(*payloads)
    seen = list(await a.wait_for(40))
    assert await a.backend.read_log(seen[9][0], seen[-1][0]) == seen[10:]
    assert await a.backend.read_log(seen[9][0], seen[19][0]) == seen[10:20]
    assert await a.backend.read_log(seen[-1][0], seen[-1][0]) == []
    # another node reads the same entries back from its own connection
    b = await spawn()
    assert await b.backend.read_log(seen[0][0], b.backend.log_position) == seen[1:]


async def test_a_node_starts_at_the_end_of_the_log(spawn: Spawn) -> None:
    a = await spawn()
    await a.append(b"one", b"two")
    seen = await a.wait_for(2)
    late = await spawn()
    assert late.backend.log_position == seen[-1][0]
    await a.append(b"three")
    assert [p for _, p in await late.wait_for(1)] == [b"three"]
    await a.append(b"four")  # a later entry: an earlier one read late comes before it
    assert [p for _, p in await late.wait_for(2)] == [b"three", b"four"]


@pytest.mark.parametrize("offset", ["", "garbage", "999999999999", "-1", "0", "1-0",
                                    "0-0", "18446744073709551615-0", "1.5", "\x00", "ﾟ"])
async def test_unknown_offsets_read_as_none(spawn: Spawn, offset: str) -> None:
    a = await spawn()
    await a.append(b"x")
    await a.wait_for(1)
    assert await a.backend.read_log(offset, a.backend.log_position) is None


async def test_the_log_is_bounded_by_length(spawn: Spawn) -> None:
    a = await spawn(max_length=50)
    for i in range(0, 500, 50):
        await a.append(*(str(n).encode() for n in range(i, i + 50)))
    seen = await a.wait_for(500)
    last = seen[-1][0]
    assert await a.backend.read_log(seen[0][0], last) is None, "entry 0 of 500 still kept"
    recent = await a.backend.read_log(seen[-11][0], last)
    assert recent == seen[-10:]


async def test_the_log_is_bounded_by_age(spawn: Spawn) -> None:
    a = await spawn(retention=1.0)
    await a.append(b"old")
    await a.wait_for(1)
    await asyncio.sleep(2.5)
    await a.append(b"new")
    seen = await a.wait_for(2)
    assert await a.backend.read_log(seen[0][0], seen[1][0]) is None


async def test_sessions_are_taken_once(backend: BackendUnderTest,
                                       spawn: Spawn) -> None:
    if not backend.capabilities.session_store:
        pytest.skip(f"{backend.name} keeps sessions in its log (session_store=False)")
    a, b = await spawn(), await spawn()
    await a.backend.save_session("pid-1", b"\x00session\xff", 30)
    assert await b.backend.take_session("pid-1") == b"\x00session\xff"
    assert await a.backend.take_session("pid-1") is None
    assert await b.backend.take_session("never-saved") is None
    await a.backend.save_session("pid-2", b"first", 30)
    await a.backend.save_session("pid-2", b"second", 30)
    won = await asyncio.gather(*(n.backend.take_session("pid-2")
                                 for n in (a, b, a, b)))
    assert sorted(won, key=lambda w: w is None) == [b"second", None, None, None]


async def test_sessions_expire(backend: BackendUnderTest, spawn: Spawn) -> None:
    if not backend.capabilities.session_store:
        pytest.skip(f"{backend.name} keeps sessions in its log (session_store=False)")
    a = await spawn()
    await a.backend.save_session("short", b"s", 1.0)
    await a.backend.save_session("long", b"l", 30)
    await asyncio.sleep(2.5)
    assert await a.backend.take_session("short") is None
    assert await a.backend.take_session("long") == b"l"


async def test_the_log_survives_a_broker_restart(backend: BackendUnderTest,
                                                 spawn: Spawn) -> None:
    if backend.broker is None:
        pytest.skip(f"{backend.name}: no broker process this suite can restart")
    a = await spawn()
    await a.append(*(f"before{i}".encode() for i in range(10)))
    await a.wait_for(10)
    await asyncio.to_thread(backend.broker.restart)
    deadline = time.monotonic() + 30
    sent = 0
    while time.monotonic() < deadline:  # publishing fails until the broker is back
        try:
            await a.append(f"after{sent}".encode())
            sent += 1
            if sent == 10:
                break
        except Exception:
            await asyncio.sleep(0.2)
    assert sent == 10, "could not append after the broker restarted"
    seen = await a.wait_for(20, timeout=30)
    assert [p for _, p in seen] == [f"before{i}".encode() for i in range(10)] + [
        f"after{i}".encode() for i in range(10)], "entries lost or repeated"
    assert len({o for o, _ in seen}) == 20
    if not backend.broker.keeps_log:
        return  # tansu (memory storage) lost the first ten with its restart
    # the broker kept them: a node started after the restart reads them back from it
    b = await spawn()
    assert await b.backend.read_log(seen[0][0], b.backend.log_position) == seen[1:]
