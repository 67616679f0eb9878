"""Callbacks waiting for the ack of a client on another node (``emit(callback=)``
and ``AsyncServer.call`` for a remote sid), kept at most ``ttl`` seconds."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

__all__ = ["RemoteCallbacks", "ack_value"]


def ack_value(args: list[Any] | tuple[Any, ...]) -> Any:
    """One client's ack as ``AsyncServer.call`` returns it."""
    if len(args) == 0:
        return None
    if len(args) == 1:
        return args[0]
    return tuple(args)


class RemoteCallbacks:
    """Callbacks by request id."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._waiting: dict[str, tuple[float, Callable[..., Any]]] = {}

    def add(self, callback: Callable[..., Any]) -> str:
        request_id = secrets.token_hex(8)
        self._waiting[request_id] = (time.monotonic(), callback)
        return request_id

    def pop(self, request_id: str) -> Callable[..., Any] | None:
        entry = self._waiting.pop(request_id, None)
        return None if entry is None else entry[1]

    def expire(self) -> None:
        """Forget callbacks whose client never answered within ``ttl``."""
        deadline = time.monotonic() - self.ttl
        for request_id, (created, _) in list(self._waiting.items()):
            if created < deadline:
                del self._waiting[request_id]

    def __len__(self) -> int:
        return len(self._waiting)
