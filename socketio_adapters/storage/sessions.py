"""The session store: small records kept under a private id until they expire,
taken at most once (connection state recovery keeps a lost socket's session there).

A backend that declares ``session_store`` implements :class:`SessionStore` with its
broker's own primitives (keys with an expiry, a key-value bucket, a table, a queue);
on the others the recovery layer keeps sessions in the durable log itself (see
:mod:`socketio_adapters.recovery.log_sessions`).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["SessionStore", "stamp_expiry", "unstamp_expiry"]

_EXPIRY_BYTES = 8


class SessionStore(Protocol):
    """Save and take session records."""

    async def save_session(self, pid: str, data: bytes, ttl: float) -> None:
        """Keep ``data`` under ``pid`` for ``ttl`` seconds (replacing any record)."""

    async def take_session(self, pid: str) -> bytes | None:
        """Return and delete the record under ``pid``: of several takers at once,
        exactly one gets it. ``None`` when there is none or it expired."""


def stamp_expiry(data: bytes, expires: float) -> bytes:
    """``data`` behind its expiry (seconds since the epoch), for a store whose own
    expiry is coarser than one record's."""
    return int(expires * 1000).to_bytes(_EXPIRY_BYTES, "big") + data


def unstamp_expiry(record: bytes, now: float) -> bytes | None:
    """The data of a record made by :func:`stamp_expiry`, or ``None`` once it
    expired (or when ``record`` is too short to be one)."""
    if (len(record) < _EXPIRY_BYTES
            or int.from_bytes(record[:_EXPIRY_BYTES], "big") <= now * 1000):
        return None
    return record[_EXPIRY_BYTES:]
