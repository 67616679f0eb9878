"""An edge node's routes: for each socket it holds in a distributed namespace, the
application server handling it and the steps (connect, events, disconnect) that
server has not yet answered, in order, to send again to another server when it dies.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ..protocol import ClientDone, MessageType

__all__ = ["Route", "Step"]


@dataclass(slots=True)
class Step:
    """One step of a socket for its application server, until it is answered."""

    kind: MessageType
    seq: int
    payload: Any
    done: asyncio.Future[ClientDone]


@dataclass(slots=True)
class Route:
    """One socket of this edge node in a distributed namespace."""

    namespace: str
    sid: str
    server: str | None = None
    """The application server handling it (None: none is alive, the steps wait)."""
    connected: bool = False
    """The server accepted its connect (a new server then takes it without one)."""
    next_seq: int = 0
    steps: dict[int, Step] = field(default_factory=dict)
    """Sent or waiting, not yet answered, in order."""

    def add(self, kind: MessageType, build: Any) -> Step:
        """A new step, numbered next; ``build(seq)`` makes its payload."""
        seq = self.next_seq
        self.next_seq += 1
        step = Step(kind, seq, build(seq),
                    asyncio.get_running_loop().create_future())
        self.steps[seq] = step
        return step

    def answered(self, done: ClientDone) -> Step | None:
        """The step ``done`` answers, now settled (None: not waiting for it)."""
        step = self.steps.pop(done.seq, None)
        if step is not None and not step.done.done():
            step.done.set_result(done)
        return step

    def abandon(self, seq: int) -> None:
        """Stop waiting for step ``seq`` (timed out): it is not sent again."""
        step = self.steps.pop(seq, None)
        if step is not None and not step.done.done():
            step.done.cancel()

    @property
    def taken_up_to(self) -> int:
        """The last step a server that takes this socket over must count as done:
        the one before the first unanswered step."""
        return (min(self.steps) if self.steps else self.next_seq) - 1
