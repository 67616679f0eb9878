"""Clients for the recovery suite: the same small interface over our Python
``AsyncClient`` and over the official JavaScript ``socket.io-client`` (driven in a
Node.js process by ``js/client.mjs``), so every scenario runs with both."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

from socketio_adapters import AsyncClient

JS_DIR = Path(__file__).parent / "js"
DEFAULT_TRANSPORTS = "default"
"""The JS client's transport when it keeps its defaults: long-polling first, then the
upgrade to websocket (as in a browser)."""


class RecoveringClient:
    """What a recovery scenario does with a client."""

    kind = "?"

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.events: dict[tuple[str, str], asyncio.Queue[list[Any]]] = defaultdict(
            asyncio.Queue)
        self.disconnected = asyncio.Event()

    # what each kind implements
    async def connect(self, url: str, namespaces: tuple[str, ...] = ("/",),
                      auth: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    async def disconnect(self) -> None:
        raise NotImplementedError

    async def call(self, event: str, value: Any = None, namespace: str = "/") -> Any:
        raise NotImplementedError

    def sid(self, namespace: str = "/") -> str:
        raise NotImplementedError

    def recovered(self, namespace: str = "/") -> bool:
        raise NotImplementedError

    def pid(self, namespace: str = "/") -> str | None:
        raise NotImplementedError

    def offset(self, namespace: str = "/") -> str | None:
        raise NotImplementedError

    @property
    def eio_sid(self) -> str:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    # shared
    async def next(self, event: str, namespace: str = "/", timeout: float = 10.0) -> Any:
        """The arguments of the next ``event`` (one value, or a list for several)."""
        args = await asyncio.wait_for(self.events[(namespace, event)].get(), timeout)
        return args[0] if len(args) == 1 else args

    async def take(self, event: str, count: int, namespace: str = "/",
                   timeout: float = 20.0) -> list[Any]:
        """The next ``count`` ``event``s; if one does not come within ``timeout``,
        an assertion error says how many came, the last ones, and whether the client
        was disconnected meanwhile (a lost event and a lost session look alike)."""
        got: list[Any] = []
        for _ in range(count):
            try:
                got.append(await self.next(event, namespace, timeout))
            except asyncio.TimeoutError:
                raise AssertionError(
                    f"{len(got)} of {count} {event!r} events came, then none for "
                    f"{timeout}s; the last ones: {got[-5:]}; the client "
                    f"{'was' if self.disconnected.is_set() else 'was not'} "
                    "disconnected") from None
        return got

    def pending(self, event: str, namespace: str = "/") -> list[Any]:
        """The ``event``s received and not yet taken (taking them)."""
        queue = self.events[(namespace, event)]
        got = [queue.get_nowait() for _ in range(queue.qsize())]
        return [args[0] if len(args) == 1 else args for args in got]

    def _got(self, namespace: str, event: str, args: list[Any]) -> None:
        self.events[(namespace, event)].put_nowait(args)


class PythonClient(RecoveringClient):
    """socketio_adapters.AsyncClient, reconnecting by hand (a new ``connect`` keeps
    the pid and offset, as its automatic reconnection does)."""

    kind = "python"

    def __init__(self, transport: str) -> None:
        super().__init__(transport)
        self.sio = AsyncClient(reconnection=False)

        @self.sio.on("*", namespace="*")  # type: ignore[untyped-decorator]
        async def any_event(event: str, namespace: str, *args: Any) -> None:
            self._got(namespace, event, list(args))

        @self.sio.on("disconnect", namespace="*")  # type: ignore[untyped-decorator]
        async def disconnect(namespace: str, reason: Any = None) -> None:
            self.disconnected.set()

    async def connect(self, url: str, namespaces: tuple[str, ...] = ("/",),
                      auth: dict[str, Any] | None = None) -> None:
        self.disconnected.clear()
        await self.sio.connect(url, transports=[self.transport],
                               namespaces=list(namespaces), auth=auth, wait_timeout=10)

    async def disconnect(self) -> None:
        await self.sio.disconnect()

    async def call(self, event: str, value: Any = None, namespace: str = "/") -> Any:
        return await self.sio.call(event, value, namespace=namespace, timeout=10)

    def sid(self, namespace: str = "/") -> str:
        return str(self.sio.get_sid(namespace))

    def recovered(self, namespace: str = "/") -> bool:
        return self.sio.is_recovered(namespace)

    def pid(self, namespace: str = "/") -> str | None:
        return self.sio._pids.get(namespace)

    def offset(self, namespace: str = "/") -> str | None:
        return self.sio.offset(namespace)

    @property
    def eio_sid(self) -> str:
        return str(self.sio.eio.sid)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.disconnect(), 5)


async def end_driver(proc: asyncio.subprocess.Process, reader: asyncio.Task[None] | None,
                     timeout: float) -> None:
    """End a Node.js driver (js/driver.mjs): close its stdin, so it disconnects its
    sockets and exits; killed after ``timeout`` seconds; then stop ``reader``."""
    with contextlib.suppress(Exception):
        if proc.stdin is not None:
            proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
    if reader is not None:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


def node_binary() -> str | None:
    return shutil.which("node")


def js_client_installed() -> bool:
    return (JS_DIR / "node_modules" / "socket.io-client" / "package.json").is_file()


def _from_json(value: Any) -> Any:
    """Undo client.mjs's encoding of binary arguments."""
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return base64.b64decode(value["$bin"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


class JsClient(RecoveringClient):
    """The official socket.io-client (npm), in a Node.js process that this class
    drives with one JSON command per line and that reports events the same way."""

    kind = "js"

    def __init__(self, transport: str) -> None:
        super().__init__(transport)
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._state: dict[str, dict[str, Any]] = {}
        self._eio_sid = ""
        self._connected: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.stderr: list[str] = []

    async def _start(self) -> None:
        node = node_binary()
        if node is None:
            raise RuntimeError("Node.js (node) is not installed")
        self.proc = await asyncio.create_subprocess_exec(
            node, str(JS_DIR / "client.mjs"), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(JS_DIR),
            env={**os.environ, "NODE_NO_WARNINGS": "1"})
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                self.stderr.append(line.decode(errors="replace"))
                continue
            kind = message.get("type")
            if kind == "reply":
                future = self._replies.pop(message["id"], None)
                if future is not None and not future.done():
                    if "error" in message:
                        future.set_exception(RuntimeError(message["error"]))
                    else:
                        future.set_result(message.get("value"))
            elif kind == "event":
                self._got(message["nsp"], message["event"],
                          [_from_json(a) for a in message["args"]])
                if message.get("offset") is not None:  # as the client's _lastOffset
                    self._state.setdefault(message["nsp"], {})["offset"] = message[
                        "offset"]
            elif kind == "connect":
                self._state[message["nsp"]] = message
                self._eio_sid = message.get("eio") or self._eio_sid
                self._connected[message["nsp"]].set()
            elif kind == "disconnect":
                self._connected[message["nsp"]].clear()
                self.disconnected.set()

    async def _command(self, **command: Any) -> Any:
        if self.proc is None:
            await self._start()
        assert self.proc is not None and self.proc.stdin is not None
        self._next_id += 1
        command["id"] = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[self._next_id] = future
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        await self.proc.stdin.drain()
        try:
            return await asyncio.wait_for(future, 15)
        except asyncio.TimeoutError:
            err = b""
            if self.proc.stderr is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    err = await asyncio.wait_for(self.proc.stderr.read(4000), 0.2)
            raise AssertionError(f"js client: no answer to {command['cmd']}: "
                                 f"{err.decode(errors='replace')}") from None

    async def connect(self, url: str, namespaces: tuple[str, ...] = ("/",),
                      auth: dict[str, Any] | None = None) -> None:
        self.disconnected.clear()
        for nsp in namespaces:
            self._connected[nsp].clear()
        transports = None if self.transport == DEFAULT_TRANSPORTS else [self.transport]
        await self._command(cmd="connect", url=url, namespaces=list(namespaces),
                            transports=transports, auth=auth)
        for nsp in namespaces:
            await asyncio.wait_for(self._connected[nsp].wait(), 10)

    async def disconnect(self) -> None:
        await self._command(cmd="disconnect")

    async def call(self, event: str, value: Any = None, namespace: str = "/") -> Any:
        return await self._command(cmd="call", event=event, value=value, nsp=namespace)

    def sid(self, namespace: str = "/") -> str:
        return str(self._state[namespace]["sid"])

    def recovered(self, namespace: str = "/") -> bool:
        return bool(self._state[namespace].get("recovered"))

    def pid(self, namespace: str = "/") -> str | None:
        value = self._state.get(namespace, {}).get("pid")
        return None if value is None else str(value)

    def offset(self, namespace: str = "/") -> str | None:
        value = self._state.get(namespace, {}).get("offset")
        return None if value is None else str(value)

    @property
    def eio_sid(self) -> str:
        return self._eio_sid

    async def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            await end_driver(proc, self._reader, 3)
