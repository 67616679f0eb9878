"""Which other nodes are alive, from their heartbeats, and what each announces of
itself in them (the namespaces an application server serves)."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["NodeTable"]


class NodeTable:
    """Last time each peer node was heard from; a node silent for ``timeout`` seconds,
    or one that said goodbye, is gone."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._seen: dict[str, float] = {}
        self._info: dict[str, Any] = {}

    def announce(self, uid: str, info: Any) -> bool:
        """What a known node says of itself in its heartbeats; True when it changed."""
        if uid not in self._seen or self._info.get(uid) == info:
            return False
        self._info[uid] = info
        return True

    def info(self, uid: str) -> Any:
        """What ``uid`` announced last (None: nothing, or not alive)."""
        return self._info.get(uid)

    def touch(self, uid: str) -> bool:
        """Record a sign of life; True when the node was not known before."""
        new = uid not in self._seen
        self._seen[uid] = time.monotonic()
        return new

    def refresh(self, uid: str) -> None:
        """A sign of life from a node that is already known."""
        if uid in self._seen:
            self._seen[uid] = time.monotonic()

    def pause(self, seconds: float) -> None:
        """This node could hear nobody for ``seconds`` (its own connection was down):
        that time does not count against the others' silence."""
        now = time.monotonic()
        for uid, seen in self._seen.items():
            self._seen[uid] = min(now, seen + seconds)

    def remove(self, uid: str) -> bool:
        self._info.pop(uid, None)
        return self._seen.pop(uid, None) is not None

    def expire(self) -> list[str]:
        """Forget nodes silent for longer than the timeout; return their uids."""
        deadline = time.monotonic() - self.timeout
        gone = [uid for uid, seen in self._seen.items() if seen < deadline]
        for uid in gone:
            del self._seen[uid]
            self._info.pop(uid, None)
        return gone

    def alive(self) -> set[str]:
        return set(self._seen)

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, uid: object) -> bool:
        return uid in self._seen
