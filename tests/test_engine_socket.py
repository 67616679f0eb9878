"""An engine.io session that waits for its packets without a task per wait
(socketio_adapters/engine_socket.py): the same answers as python-engineio's poll,
the same timeout, no task made for a wait, nothing lost at the timeout; the sessions
of real servers become one; and once its websocket is the transport, packets skip the
queue while the writer waits on an empty one, in order, count against its timeout,
and never go to a websocket that is not (or no longer) the transport."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sys
from typing import Any

import aiohttp
import pytest
import socketio
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket

from socketio_adapters import AsyncServer, create_manager
from socketio_adapters.engine_socket import QueueSocket, wait_without_tasks
from socketio_adapters.polling import CappedPollSocket
from socketio_adapters.websocket import websocket_compression

from .test_websocket_compression import served


class _Server:
    logger = logging.getLogger("tests.engine_socket")

    def __init__(self, ping_interval: float = 25, ping_timeout: float = 20) -> None:
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout

    def create_queue(self) -> asyncio.Queue[Any]:
        return asyncio.Queue()


def _pair(**server: float) -> tuple[Any, Any]:
    """python-engineio's session and ours, on the same kind of server."""
    ours = AsyncSocket(_Server(**server), "ours")
    wait_without_tasks(ours)
    return AsyncSocket(_Server(**server), "theirs"), ours


async def test_a_poll_answers_what_python_engineio_answers() -> None:
    for socket in _pair():
        for item in (1, 2, 3):
            socket.queue.put_nowait(item)
        assert await socket.poll() == [1, 2, 3]
        socket.queue.put_nowait(4)
        socket.queue.put_nowait(None)
        assert await socket.poll() == [4]  # then the end, kept for the next poll
        assert await socket.poll() == []
        assert socket.queue.qsize() == 0


async def test_a_waiting_poll_takes_what_comes_without_a_task_of_its_own() -> None:
    theirs, ours = _pair()
    assert type(ours) is QueueSocket
    # python-engineio's waits in asyncio.wait_for, a task of its own before Python 3.12
    theirs_extra = 1 if sys.version_info < (3, 12) else 0
    for socket, extra_tasks in ((theirs, theirs_extra), (ours, 0)):
        before = len(asyncio.all_tasks())
        poll = asyncio.ensure_future(socket.poll())
        await asyncio.sleep(0.01)
        assert len(asyncio.all_tasks()) - before == 1 + extra_tasks  # the poll (+ wait)
        socket.queue.put_nowait("a")
        socket.queue.put_nowait("b")
        assert await poll == ["a", "b"]


async def test_no_packet_within_the_ping_timeout_ends_the_poll() -> None:
    for socket in _pair(ping_interval=0.05, ping_timeout=0.05):
        with pytest.raises(eio_exceptions.QueueEmpty):
            await socket.poll()
    _, ours = _pair(ping_interval=0.05, ping_timeout=0.05)
    task = asyncio.ensure_future(ours.poll())
    with pytest.raises(eio_exceptions.QueueEmpty):
        await task
    # the timer's cancellation is not left on the task (counted from Python 3.11)
    assert getattr(task, "cancelling", lambda: 0)() == 0


async def test_a_cancelled_poll_ends_as_python_engineio_s_does() -> None:
    for socket in _pair():
        task = asyncio.ensure_future(socket.poll())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(eio_exceptions.QueueEmpty):
            await task


@pytest.mark.parametrize("first", ["packet", "end"])
async def test_a_packet_that_comes_as_the_wait_ends_stays_queued(first: str) -> None:
    _, ours = _pair()
    task = asyncio.ensure_future(ours.poll())
    await asyncio.sleep(0.01)  # waiting on the empty queue
    # in one loop turn, in either order: a packet comes and the wait is ended (as the
    # timer ends it, or the writer's cancellation)
    if first == "packet":
        ours.queue.put_nowait("late")
        task.cancel()
    else:
        task.cancel()
        ours.queue.put_nowait("late")
    with pytest.raises(eio_exceptions.QueueEmpty):
        await task
    assert ours.queue.get_nowait() == "late"  # for the next poll: not lost


def test_only_python_engineio_s_own_session_class_is_changed() -> None:
    class Other(AsyncSocket):  # type: ignore[misc]
        pass

    other = Other(_Server(), "x")
    wait_without_tasks(other)
    wait_without_tasks(None)
    assert type(other) is Other
    assert issubclass(CappedPollSocket, QueueSocket)


@pytest.mark.parametrize("kind", ["our-server", "plain-server-driver"])
async def test_sessions_of_real_servers_wait_without_tasks(kind: str) -> None:
    manager = create_manager(f"memory://engine-socket-{secrets.token_hex(4)}")
    if kind == "our-server":
        sio: socketio.AsyncServer = AsyncServer(manager, async_mode="aiohttp")
    else:  # python-socketio's server with this project's websocket driver
        sio = socketio.AsyncServer(client_manager=manager, async_mode="aiohttp")
        websocket_compression(sio, False)
    sio.on("ping_me", lambda sid: "pong")
    client = socketio.AsyncClient(reconnection=False)
    async with served(sio) as base:
        await client.connect(base, transports=["websocket"], wait_timeout=5)
        try:
            assert await client.call("ping_me", timeout=5) == "pong"
            [session] = sio.eio.sockets.values()
            assert isinstance(session, QueueSocket)  # CappedPollSocket: a Python client
        finally:
            await client.disconnect()


def _message(text: str) -> Any:
    return eio_packet.Packet(eio_packet.MESSAGE, text)


class _Driver:
    """A websocket driver's ``write_now``: what it was handed, and whether it takes
    more."""

    def __init__(self) -> None:
        self.written: list[str | bytes] = []
        self.takes = True

    def write_now(self, message: str | bytes) -> bool:
        if self.takes:
            self.written.append(message)
        return self.takes


def _upgraded(**server: float) -> tuple[Any, _Driver]:
    _, ours = _pair(**server)
    driver = _Driver()
    ours.write_now = driver.write_now
    ours.upgraded = True
    ours.last_ping = None  # no ping awaiting its answer
    return ours, driver


async def test_while_the_writer_waits_packets_go_straight_to_the_driver() -> None:
    ours, driver = _upgraded()
    writer = asyncio.ensure_future(ours.poll())
    await asyncio.sleep(0.01)  # the writer waits on the empty queue
    await ours.send(_message("a"))
    await ours.send(_message("b"))
    assert driver.written == ["4a", "4b"]
    assert ours.queue.empty()
    await asyncio.sleep(0.01)
    assert not writer.done()  # not woken
    writer.cancel()
    with pytest.raises(eio_exceptions.QueueEmpty):
        await writer


async def test_packets_after_a_queued_one_keep_their_turn() -> None:
    ours, driver = _upgraded()
    writer = asyncio.ensure_future(ours.poll())
    await asyncio.sleep(0.01)
    driver.takes = False  # past the high-water mark: this one is queued
    await ours.send(_message("a"))
    driver.takes = True
    await ours.send(_message("b"))  # the writer has not taken "a" yet: after it
    assert [p.data for p in await writer] == ["a", "b"]
    assert driver.written == []
    await ours.send(_message("c"))  # nobody waits: queued
    assert ours.queue.qsize() == 1


async def test_a_session_not_upgraded_always_queues() -> None:
    ours, driver = _upgraded()
    ours.upgraded = False  # a long-poll waits: its response carries the packets
    poll = asyncio.ensure_future(ours.poll())
    await asyncio.sleep(0.01)
    await ours.send(_message("a"))
    assert [p.data for p in await poll] == ["a"]
    assert driver.written == []


async def test_packets_written_past_the_queue_count_against_the_writer_s_timeout() -> None:
    ours, driver = _upgraded(ping_interval=0.1, ping_timeout=0.1)  # 0.2 s
    writer = asyncio.ensure_future(ours.poll())
    loop = asyncio.get_running_loop()
    began = loop.time()
    for i in range(8):  # 0.4 s of packets, one every 0.05 s
        await asyncio.sleep(0.05)
        await ours.send(_message(str(i)))
    assert not writer.done()
    quiet = loop.time()
    with pytest.raises(eio_exceptions.QueueEmpty):
        await writer
    ended = loop.time()
    assert len(driver.written) == 8
    assert ended - began >= 0.4 + 0.15
    assert 0.15 <= ended - quiet < 0.5
    assert getattr(writer, "cancelling", lambda: 0)() == 0  # counted from Python 3.11


async def test_a_write_that_fails_leaves_the_packet_to_the_writer() -> None:
    ours, _ = _upgraded()

    def broken(message: str | bytes) -> bool:
        raise OSError("the transport broke")

    ours.write_now = broken
    writer = asyncio.ensure_future(ours.poll())
    await asyncio.sleep(0.01)
    await ours.send(_message("a"))  # the emitter is not the one to see the error
    assert [p.data for p in await writer] == ["a"]  # the writer meets it, and closes


async def test_a_closed_session_refuses_packets_as_python_engineio_s_does() -> None:
    ours, driver = _upgraded()
    writer = asyncio.ensure_future(ours.poll())
    await asyncio.sleep(0.01)
    ours.closed = True
    with pytest.raises(eio_exceptions.SocketIsClosedError):
        await ours.send(_message("late"))
    assert driver.written == []
    writer.cancel()
    with pytest.raises(eio_exceptions.QueueEmpty):
        await writer


async def _bound(session: Any) -> Any:
    """The session's ``write_now`` once its websocket is its transport (its writer has
    sent through it)."""
    for _ in range(500):
        if session.write_now is not None:
            return session.write_now
        await asyncio.sleep(0.01)
    raise AssertionError("the websocket never became the session's transport")


@pytest.mark.parametrize("transports", [["websocket"], ["polling", "websocket"]])
async def test_a_real_server_writes_events_in_order_past_the_queue(
        transports: list[str]) -> None:
    manager = create_manager(f"memory://engine-socket-{secrets.token_hex(4)}")
    sio = socketio.AsyncServer(client_manager=manager, async_mode="aiohttp")
    websocket_compression(sio, False)
    got: list[int] = []
    done = asyncio.Event()
    client = socketio.AsyncClient(reconnection=False)

    def on_n(i: int) -> None:
        got.append(i)
        if len(got) == 200:
            done.set()

    client.on("n", on_n)

    async with served(sio) as base:
        await client.connect(base, transports=transports, wait_timeout=5)
        try:
            [session] = sio.eio.sockets.values()
            written: list[str | bytes] = []
            write = await _bound(session)  # after the upgrade, with long-polling first

            def counting(message: str | bytes) -> bool:
                taken = bool(write(message))
                if taken:
                    written.append(message)
                return taken

            session.write_now = counting
            for i in range(200):  # one at a time, and bursts of ten in one turn
                await sio.emit("n", i)
                if i % 10 == 9:
                    await asyncio.sleep(0.002)
            await asyncio.wait_for(done.wait(), 10)
            assert got == list(range(200))
            assert written  # some went past the queue
        finally:
            await client.disconnect()


async def test_a_websocket_that_ends_no_longer_takes_the_session_s_packets() -> None:
    manager = create_manager(f"memory://engine-socket-{secrets.token_hex(4)}")
    sio = socketio.AsyncServer(client_manager=manager, async_mode="aiohttp")
    websocket_compression(sio, False)
    client = socketio.AsyncClient(reconnection=False)
    async with served(sio) as base:
        await client.connect(base, transports=["websocket"], wait_timeout=5)
        [session] = sio.eio.sockets.values()
        await _bound(session)
        await client.disconnect()
        for _ in range(500):
            if session.write_now is None:
                break
            await asyncio.sleep(0.01)
        assert session.write_now is None  # nor does the session keep its driver alive


async def test_events_go_to_the_upgraded_websocket_not_to_a_second_attempt() -> None:
    # a long-polling session opens two websockets; the first completes the upgrade
    # (probe, then UPGRADE), the second only ever opened: the session's events must
    # reach the first
    manager = create_manager(f"memory://engine-socket-{secrets.token_hex(4)}")
    sio = socketio.AsyncServer(client_manager=manager, async_mode="aiohttp")
    websocket_compression(sio, False)
    async with served(sio) as base, aiohttp.ClientSession() as http:
        opened = await (await http.get(base + "/socket.io/?EIO=4&transport=polling")).text()
        sid = json.loads(opened[1:])["sid"]
        polling = base + f"/socket.io/?EIO=4&transport=polling&sid={sid}"
        await (await http.post(polling, data="40")).text()
        assert (await (await http.get(polling)).text()).startswith("40")
        ws_url = base.replace("http", "ws") + f"/socket.io/?EIO=4&transport=websocket&sid={sid}"
        first = await http.ws_connect(ws_url)
        second = await http.ws_connect(ws_url)
        try:
            await first.send_str("2probe")
            assert (await asyncio.wait_for(first.receive(), 5)).data == "3probe"
            await first.send_str("5")
            assert (await asyncio.wait_for(first.receive(), 5)).data == "6"  # NOOP
            await asyncio.sleep(0.05)
            await sio.emit("hello", 1)
            await sio.emit("hello", 2)
            got = [(await asyncio.wait_for(first.receive(), 5)).data for _ in range(2)]
            assert got == ['42["hello",1]', '42["hello",2]']
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(second.receive(), 0.3)
        finally:
            await first.close()
            await second.close()
