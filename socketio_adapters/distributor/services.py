"""Which application servers serve which namespace, from what they announce in their
heartbeats, and which of them handles a given socket (rendezvous hashing: every edge
node picks the same server for a socket from the same set, and when a server leaves
only its own sockets move)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

__all__ = ["SERVES", "announcement", "pick", "serves"]

SERVES = "serves"
"""The heartbeat field: the namespaces an application server handles."""


def announcement(namespaces: Iterable[str]) -> dict[str, Any]:
    """What an application server says of itself in its heartbeats."""
    return {SERVES: sorted(set(namespaces))}


def serves(info: Any, namespace: str) -> bool:
    """Whether a node that announced ``info`` handles ``namespace``."""
    if not isinstance(info, dict):
        return False
    served = info.get(SERVES)
    return isinstance(served, list) and namespace in served


def _weight(key: str, node: str) -> bytes:
    return hashlib.blake2b(f"{node}\0{key}".encode(), digest_size=8).digest()


def pick(key: str, nodes: Iterable[str]) -> str | None:
    """The node with the highest weight for ``key`` (None when there is none)."""
    best: tuple[bytes, str] | None = None
    for node in nodes:
        candidate = (_weight(key, node), node)
        if best is None or candidate > best:
            best = candidate
    return None if best is None else best[1]
