"""The local:// backend's own parts: where a cluster meets, bad input to its hub, a
hub whose process dies (SIGKILL), and the log and sessions that survive it. The
conformance suite runs the whole contract on it."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from conformance.cluster import eventually
from socketio_adapters import ConfigurationError, create_backend
from socketio_adapters.backends.local import LocalBackend
from socketio_adapters.backends.local.folder import RuntimeFolder

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_a_name_is_a_folder_of_this_user(monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    folder = RuntimeFolder("local://shop")
    assert folder.path == tmp_path / "socketio-adapters" / "shop"
    folder.create()
    assert oct(folder.path.parent.stat().st_mode & 0o777) == "0o700"
    assert RuntimeFolder("local://").path == tmp_path / "socketio-adapters" / "default"
    assert RuntimeFolder(f"local://{tmp_path}/x").path == tmp_path / "x"


@pytest.mark.parametrize("url, says", [
    ("local://bad name", "a name is"),
    ("local://.hidden", "a name is"),
    ("local://../up", "not both"),
    ("local://name/and/path", "not both"),
    ("local:///" + "x" * 120, "longer than Unix sockets allow"),
])
def test_bad_urls_are_refused_clearly(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        create_backend(url)


def test_a_shared_root_of_another_mode_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "socketio-adapters").mkdir(mode=0o777)
    os.chmod(tmp_path / "socketio-adapters", 0o777)
    with pytest.raises(ConfigurationError, match="mode 0700"):
        RuntimeFolder("local://x").create()


async def _node(url: str, log: bool = True) -> tuple[LocalBackend, list[Any]]:
    backend = create_backend(url)
    assert isinstance(backend, LocalBackend)
    got: list[Any] = []

    async def deliver(payload: bytes) -> None:
        got.append(payload)

    async def deliver_entry(offset: str, payload: bytes) -> None:
        got.append((offset, payload))

    if log:
        backend.enable_log(deliver_entry, 60.0, 1000)
    await backend.start(os.urandom(4).hex(), deliver)
    return backend, got


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    yield f"local://{tmp_path}/c"


async def test_garbage_on_the_hub_socket_is_dropped_and_logged(
        url: str, caplog: pytest.LogCaptureFixture) -> None:
    a, got = await _node(url, log=False)
    b, _ = await _node(url, log=False)
    try:
        hub = a.hub or b.hub
        assert hub is not None
        garbage = [b"\xc1\xc1", msgpack.packb("not a list"), msgpack.packb([99, 1]),
                   msgpack.packb([2]), msgpack.packb([3, "text, not bytes"])]
        with caplog.at_level(logging.WARNING, logger="socketio_adapters"):
            for junk in garbage:
                reader, writer = await asyncio.open_unix_connection(
                    str(a.folder.socket_path))
                writer.write(junk)
                assert await asyncio.wait_for(reader.read(), 10) == b""  # closed on us
                writer.close()
        assert hub.dropped == len(garbage)
        assert caplog.text.count("local hub: closing the connection") == len(garbage)
        await b.publish([(None, b"still fine")])
        await eventually(lambda: got, [b"still fine"], "the hub still relays")
    finally:
        await b.stop()
        await a.stop()


_HOST = """
import asyncio, sys
from socketio_adapters import create_backend
async def main():
    backend = create_backend(sys.argv[1])
    async def nothing(*args): pass
    backend.enable_log(nothing, 60.0, 1000)
    await backend.start("host", nothing)
    print("HUB" if backend.hub is not None else "NOT HUB", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def test_a_hub_killed_with_sigkill_is_taken_over_with_its_log_and_sessions(
        url: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOST, url, stdout=asyncio.subprocess.PIPE, cwd=REPO_ROOT)
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 20)).strip() == b"HUB"
        a, got_a = await _node(url)
        b, got_b = await _node(url)
        assert a.hub is None and b.hub is None
        await a.publish([("\x00log", b"one"), ("\x00log", b"two")])
        await b.save_session("pid-1", b"session", 60)
        await eventually(lambda: len(got_b), 2, "b follows the log")
        await eventually(lambda: len(b._sessions.records), 1, "b copies the session")

        os.kill(proc.pid, signal.SIGKILL)
        await eventually(lambda: (a.hub is not None) + (b.hub is not None), 1,
                         "one survivor hosts the hub")
        await eventually(lambda: a.state.connected and b.state.connected, True,
                         "both reconnect to it")
        assert await a.take_session("pid-1") == b"session"  # kept by the new hub
        assert await b.take_session("pid-1") is None  # once
        await b.publish([("\x00log", b"three")])
        await eventually(lambda: [p for _, p in got_a], [b"one", b"two", b"three"],
                         "a gets the log in order, once")
        offsets = [o for o, _ in got_a]
        assert offsets == sorted(offsets, key=lambda o: tuple(
            int(n) for n in o.replace(".", "-").split("-")))
        assert offsets[2].split("-")[0] != offsets[0].split("-")[0]  # the new hub's term
        records = await a.fetch_log(_key(offsets[0]), _key(offsets[2]), 10)
        assert records is not None and [r.body for r in records] == [b"one", b"two", b"three"]
        await a.stop()
        await b.stop()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_the_hub_writes_the_copies_before_it_acknowledges(url: str) -> None:
    # a hub killed between the two would leave an acknowledged session or record on
    # no other node: the node that takes over must have it (the test above). The
    # sender is the first node that connected: the hub goes through its peers in that
    # order, so writing them in it would answer the sender first
    b, got_b = await _node(url)
    a, _ = await _node(url)
    try:
        hub = b.hub
        assert hub is not None
        writes: list[tuple[str, list[Any]]] = []
        for peer in hub._peers:
            def spy(data: bytes, write: Any = peer.writer.write,
                    node: str = peer.node_id) -> None:
                writes.extend((node, frame) for frame in msgpack.Unpacker(
                    io.BytesIO(data), raw=False))
                write(data)
            peer.writer.write = spy  # type: ignore[method-assign,assignment]
        await b.save_session("pid-1", b"session", 60)
        await b.publish([("\x00log", b"one")])
        kinds = [(node == b.node_id, frame[0]) for node, frame in writes]
        copies = [kinds.index((False, 14)), kinds.index((False, 12))]  # SESSION, RECORD
        replies = [i for i, kind in enumerate(kinds) if kind == (True, 13)]  # REPLY
        assert len(replies) == 2 and copies[0] < replies[0] and copies[1] < replies[1]
    finally:
        await a.stop()
        await b.stop()


def _key(offset: str) -> tuple[int, ...]:
    return tuple(int(n) for n in offset.split(".")[0].split("-"))


async def test_an_emitter_without_a_server_says_so(url: str) -> None:
    emitter = create_backend(url, connect_timeout=0.5)
    with pytest.raises(ConnectionError, match="no process serves the cluster"):
        await emitter.start("emitter", None)


def test_the_hub_socket_is_private(tmp_path: Path) -> None:
    async def main() -> int:
        node, _ = await _node(f"local://{tmp_path}/c", log=False)
        try:
            return (tmp_path / "c" / "hub.sock").stat().st_mode & 0o777
        finally:
            await node.stop()

    assert asyncio.run(main()) == 0o600
    with socket.socket(socket.AF_UNIX) as sock, pytest.raises(OSError):
        sock.connect(str(tmp_path / "c" / "hub.sock"))  # gone with its host


async def test_a_hub_that_is_still_starting_is_waited_for_quietly(
        url: str, caplog: pytest.LogCaptureFixture) -> None:
    from socketio_adapters.backends.local.folder import HubLock
    from socketio_adapters.backends.local.hub import Hub, LogLimits
    from socketio_adapters.storage import MemoryLog, MemorySessions

    folder = RuntimeFolder(url)
    folder.create()
    lock = HubLock(folder)
    assert lock.try_acquire()  # another process took the lock, not listening yet
    hub = Hub(folder, lock, MemoryLog(), MemorySessions(), LogLimits(),
              logging.getLogger("test"))
    with caplog.at_level(logging.WARNING, logger="socketio_adapters"):
        node = asyncio.create_task(_node(url, log=False))
        await asyncio.sleep(0.3)
        assert not node.done()
        await hub.start()
        backend, _ = await asyncio.wait_for(node, 10)
    try:
        assert backend.hub is None and backend.state.connected
        assert "connection lost" not in caplog.text
    finally:
        await backend.stop()
        await hub.stop()
