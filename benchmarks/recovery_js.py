"""bench_recovery's JavaScript client: the official socket.io-client (npm, from
conformance/js) in a Node.js process (benchmarks/recovery_client.mjs), with its default
transports (long-polling, then the upgrade to websocket). It measures in its own
process, with ``performance.now()``, so the servers' process does no per-event work for
the measurement."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from typing import Any

from conformance.recovery_clients import JS_DIR, js_client_installed

from .environment import REPO_ROOT

JS_CLIENT = REPO_ROOT / "benchmarks" / "recovery_client.mjs"
REPLY_TIMEOUT = 70.0
"""Seconds to wait for the Node.js process's answer (its own waits are bounded at 60)."""


class JsClientError(RuntimeError):
    """The Node.js client could not start, or answered with an error."""


class JsRecoveringClient:
    """One Node.js process; each :meth:`connect` opens a new socket.io client in it."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.proc: asyncio.subprocess.Process | None = None
        self.sid = ""
        self.eio_sid = ""

    async def start(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise JsClientError("Node.js (node) is not installed")
        if not js_client_installed():
            raise JsClientError(f"socket.io-client is not installed: npm ci --prefix "
                                f"{JS_DIR.relative_to(REPO_ROOT)}")
        self.proc = await asyncio.create_subprocess_exec(
            node, str(JS_CLIENT), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, cwd=REPO_ROOT)

    async def _command(self, **command: Any) -> dict[str, Any]:
        if self.proc is None:
            await self.start()
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(command).encode() + b"\n")
        await proc.stdin.drain()
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), REPLY_TIMEOUT)
        except asyncio.TimeoutError:
            raise JsClientError(f"no answer to {command['cmd']} in "
                                f"{REPLY_TIMEOUT:g}s") from None
        if not line:
            raise JsClientError(f"the Node.js client exited (code {proc.returncode})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise JsClientError(f"{command['cmd']}: {reply['error']}")
        return reply

    async def connect(self, url: str) -> float:
        """A new client on ``url``, in room ``r``; how long it took to connect (ms)."""
        reply = await self._command(cmd="connect", url=url)
        self.sid, self.eio_sid = str(reply["sid"]), str(reply["eio"])
        return float(reply["connect_ms"])

    async def wait_hello(self) -> str | None:
        """The offset of the first event."""
        offset = (await self._command(cmd="hello"))["offset"]
        return None if offset is None else str(offset)

    async def wait_dropped(self) -> None:
        await self._command(cmd="dropped")

    async def recover(self, url: str) -> dict[str, Any]:
        """Back on ``url``: the client's own measurement (ms) and what it received."""
        return await self._command(cmd="recover", url=url, expected=self.expected)

    async def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(Exception):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
