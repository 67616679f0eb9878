"""Restores in flight: the tail of log entries a node delivers after a restore's
boundary, kept until the restored socket is live, and the restore itself."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from ..protocol import Message
from .records import SessionRecord

__all__ = ["Restore", "Tail", "Tails"]


@dataclass
class Tail:
    """Log entries a node delivered after a restore's boundary."""

    entries: deque[tuple[str, Message]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, offset: str, message: Message) -> None:
        self.entries.append((offset, message))
        self.wake.set()


class Tails:
    """The open tails of one node; every log entry it delivers goes to each."""

    def __init__(self) -> None:
        self._open: list[Tail] = []

    def open(self) -> Tail:
        """A tail that starts with the next entry (call it with no ``await`` since
        reading the boundary, so nothing falls between the two)."""
        tail = Tail()
        self._open.append(tail)
        return tail

    def close(self, tail: Tail) -> None:
        if tail in self._open:
            self._open.remove(tail)

    def add(self, offset: str, message: Message) -> None:
        for tail in self._open:
            tail.add(offset, message)


@dataclass
class Restore:
    """A session taken for restoring, with what the socket missed up to the boundary
    and the tail that continues it."""

    record: SessionRecord
    missed: list[tuple[str, Message]]
    tail: Tail
    seen_up_to: str | None = None
    """Set when the client saw further than this node had read (it came from a node
    ahead of this one): tail entries up to this offset, included, are not resent."""
