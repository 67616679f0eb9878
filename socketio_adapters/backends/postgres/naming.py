"""Postgres names: identifiers that fit in 63 bytes without ever colliding, quoted
for SQL, and the advisory lock key of a log table."""

from __future__ import annotations

import functools
import hashlib
import re

__all__ = ["MAX_IDENTIFIER", "advisory_key", "pg_identifier", "quote_identifier"]

MAX_IDENTIFIER = 63
"""Bytes in a Postgres identifier (NAMEDATALEN - 1); LISTEN truncates longer names."""
_HASH_HEX = 16
_HASHED_SHAPE = re.compile(r"~[0-9a-f]{16}\Z")


@functools.lru_cache(maxsize=4096)
def pg_identifier(name: str) -> str:
    """``name`` if it fits in 63 bytes, else its first bytes, ``~`` and a 64-bit
    blake2b hash of the whole name (63 bytes at most).

    A name that already looks hashed (ends with ``~`` and 16 hex digits) is hashed
    too, so a short name can never equal the shortened form of a long one.
    """
    raw = name.encode()
    if len(raw) <= MAX_IDENTIFIER and not _HASHED_SHAPE.search(name):
        return name
    digest = hashlib.blake2b(raw, digest_size=_HASH_HEX // 2).hexdigest()
    head = raw[:MAX_IDENTIFIER - _HASH_HEX - 1].decode("utf-8", "ignore")
    return f"{head}~{digest}"


def quote_identifier(name: str) -> str:
    """A double-quoted SQL identifier (embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def advisory_key(table: str) -> int:
    """The ``pg_advisory_xact_lock`` key that serializes appends to the log ``table``
    (a signed 64-bit hash of its name, the same on every node)."""
    digest = hashlib.blake2b(f"socketio_adapters log {table}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)
