"""Many clients at once, for the no-sticky-sessions tests: python-socketio's own
``AsyncClient`` (:class:`PySwarm`) and the official JavaScript client, all in one
Node.js process (:class:`JsSwarm`, driving ``conformance/js/swarm.mjs``).

Every client keeps the ``news`` it receives and answers ``question`` N with N + 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from typing import Any

import socketio

from conformance.recovery_clients import JS_DIR, end_driver, node_binary

__all__ = ["JsSwarm", "PySwarm"]


class PySwarm:
    def __init__(self) -> None:
        self.clients: list[socketio.AsyncClient] = []
        self.news: list[list[Any]] = []

    async def connect(self, url: str, count: int, transports: list[str],
                      at_once: int = 10) -> None:
        """Connect ``count`` clients, ``at_once`` at a time; raises if one fails."""
        for start in range(0, count, at_once):
            await asyncio.gather(*(self._one(url, transports)
                                   for _ in range(min(at_once, count - start))))

    async def _one(self, url: str, transports: list[str]) -> None:
        client = socketio.AsyncClient(reconnection=False)
        got: list[Any] = []

        async def news(value: Any, *offset: Any) -> None:
            got.append(value)

        async def question(value: int) -> int:
            return value + 1

        client.on("news", news)
        client.on("question", question)
        self.clients.append(client)
        self.news.append(got)
        await client.connect(url, transports=transports, wait_timeout=20)

    def transports(self) -> list[str]:
        return [client.transport() for client in self.clients]

    async def close(self) -> None:
        await asyncio.gather(*(asyncio.wait_for(c.disconnect(), 10) for c in self.clients),
                             return_exceptions=True)


class JsSwarm:
    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0

    async def _start(self) -> None:
        node = node_binary()
        if node is None:
            raise RuntimeError("Node.js (node) is not installed")
        self.proc = await asyncio.create_subprocess_exec(
            node, str(JS_DIR / "swarm.mjs"), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, cwd=str(JS_DIR),
            env={**os.environ, "NODE_NO_WARNINGS": "1"}, limit=2**24)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            reply = json.loads(line)
            future = self._replies.pop(reply["id"], None)
            if future is not None and not future.done():
                if "error" in reply:
                    future.set_exception(RuntimeError(reply["error"]))
                else:
                    future.set_result(reply["value"])

    async def command(self, cmd: str, timeout: float = 60.0, **args: Any) -> Any:
        if self.proc is None:
            await self._start()
        assert self.proc is not None and self.proc.stdin is not None
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[self._next_id] = future
        self.proc.stdin.write(json.dumps({"id": self._next_id, "cmd": cmd, **args}
                                         ).encode() + b"\n")
        await self.proc.stdin.drain()
        return await asyncio.wait_for(future, timeout)

    async def connect(self, url: str, count: int, transports: list[str]) -> Any:
        """``{"connected": N, "errors": [...]}``."""
        return await self.command("connect", url=url, count=count, transports=transports)

    async def close(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            await self.command("close", timeout=5)
        proc, self.proc = self.proc, None
        await end_driver(proc, self._reader, 5)
