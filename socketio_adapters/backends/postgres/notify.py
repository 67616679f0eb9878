"""NOTIFY payload texts: a payload inline as base64, or a reference to a row of the
payload table, each with its index in the batch (Postgres folds identical
notifications of one transaction into one; the index keeps them apart)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import re

__all__ = ["NOTIFY_LIMIT", "decode_notification", "encode_inline", "encode_reference",
           "encoded_size"]

NOTIFY_LIMIT = 8000
"""A NOTIFY payload must be shorter than this many bytes."""
_NOTIFICATION = re.compile(r"([0-9a-f]{1,8})([:@])(.*)\Z", re.DOTALL)


def encoded_size(index: int, payload: bytes) -> int:
    """Length of ``encode_inline(index, payload)`` without encoding it."""
    return len(f"{index:x}:") + 4 * ((len(payload) + 2) // 3)


def encode_inline(index: int, payload: bytes) -> str:
    """A NOTIFY payload carrying ``payload`` itself: ``{index:x}:{base64}``."""
    return f"{index:x}:{base64.b64encode(payload).decode('ascii')}"


def encode_reference(index: int, row_id: int) -> str:
    """A NOTIFY payload pointing at a row of the payload table: ``{index:x}@{id}``."""
    return f"{index:x}@{row_id}"


def decode_notification(text: str) -> bytes | int:
    """The payload (bytes) or the row id (int) a notification carries. Text in
    another format (someone else's NOTIFY on the channel) comes back as its UTF-8
    bytes, for the manager to log and drop as malformed."""
    match = _NOTIFICATION.match(text)
    if match is not None:
        kind, body = match.group(2), match.group(3)
        if kind == ":":
            with contextlib.suppress(binascii.Error, ValueError):
                return base64.b64decode(body, validate=True)
        elif body.isdigit() and body.isascii():
            return int(body)
    return text.encode("utf-8", "surrogateescape")
