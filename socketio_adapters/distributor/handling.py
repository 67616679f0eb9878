"""An application server's sockets: for each socket an edge node handed it, the
edge node holding it and its steps, handled one at a time in their order, each once.

A step numbered at or below the last one taken is a copy (an edge node sent it again
after a takeover) and is answered without running anything. When the edge node
holding a socket is gone, the socket's disconnect handler runs ("transport close").
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import AdapterError, NotStarted
from ..protocol import ClientConnect, ClientDisconnect, ClientDone, ClientEvent

__all__ = ["HandledSocket", "Sockets", "StepPayload"]

StepPayload = ClientConnect | ClientEvent | ClientDisconnect
Run = Callable[[str, StepPayload], Awaitable[ClientDone]]
"""Runs one step's handler for ``(namespace, step)``; its answer."""
Answer = Callable[[str, str, ClientDone], None]
"""Sends ``answer`` for ``(namespace, edge uid)``."""

_log = logging.getLogger("socketio_adapters.app")


@dataclass(slots=True)
class HandledSocket:
    """One socket this server handles."""

    edge: str
    """The edge node holding it (the sender of its latest step)."""
    taken: int = -1
    """The highest step number received."""
    queue: deque[tuple[str, StepPayload]] = field(default_factory=deque)
    """(edge uid, step) waiting to run."""
    running: bool = False


class Sockets:
    """The sockets of one application server, by (namespace, sid)."""

    def __init__(self, run: Run, answer: Answer, spawn: Callable[[Awaitable[Any]], None]
                 ) -> None:
        self.run = run
        self.answer = answer
        self.spawn = spawn
        self.table: dict[tuple[str, str], HandledSocket] = {}
        self.copies = 0
        """Steps received twice (answered, not run again)."""

    def edge_of(self, namespace: str, sid: str) -> str | None:
        sock = self.table.get((namespace, sid))
        return None if sock is None else sock.edge

    def take(self, namespace: str, edge: str, step: StepPayload) -> None:
        """A step from ``edge``: queued behind the socket's earlier steps."""
        key = (namespace, step.sid)
        sock = self.table.get(key)
        if sock is None:
            sock = self.table[key] = HandledSocket(edge)
        sock.edge = edge
        if isinstance(step, ClientConnect) and not step.run_handler:
            sock.taken = step.seq  # handed over: its earlier steps ran elsewhere
            return
        if step.seq <= sock.taken:
            self.copies += 1
            self.answer(namespace, edge, ClientDone(step.sid, step.seq, handled=False))
            return
        sock.taken = step.seq
        sock.queue.append((edge, step))
        if not sock.running:
            sock.running = True
            self.spawn(self._drain(namespace, step.sid, sock))

    def edge_gone(self, edge: str) -> list[tuple[str, str]]:
        """The sockets held by ``edge``, which is gone; each gets a disconnect."""
        lost = [key for key, sock in self.table.items() if sock.edge == edge]
        for namespace, sid in lost:
            sock = self.table[(namespace, sid)]
            sock.taken += 1
            sock.queue.append((edge, ClientDisconnect(sid, sock.taken, "transport close")))
            if not sock.running:
                sock.running = True
                self.spawn(self._drain(namespace, sid, sock))
        return lost

    async def _drain(self, namespace: str, sid: str, sock: HandledSocket) -> None:
        try:
            while sock.queue:
                edge, step = sock.queue.popleft()
                try:
                    done = await self.run(namespace, step)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    _log.exception("handling %s of %s [%s] failed",
                                   type(step).__name__, sid, namespace)
                    done = ClientDone(sid, step.seq, handled=False)
                ended = isinstance(step, ClientDisconnect) or done.refused is not None
                if ended and self.table.get((namespace, sid)) is sock and not sock.queue:
                    del self.table[(namespace, sid)]
                try:
                    self.answer(namespace, edge, done)
                except NotStarted:
                    return  # this server is stopping: the edge node sends it again
                except AdapterError as exc:
                    _log.warning("the answer to step %d of %s [%s] was not sent: %s",
                                 step.seq, sid, namespace, exc)
        finally:
            sock.running = False
