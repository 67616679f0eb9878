"""What of a connecting client's WSGI/ASGI ``environ`` travels from the edge node to
the application server: the CGI-style string variables (``HTTP_*`` headers,
``QUERY_STRING``, ``REMOTE_ADDR``, ``PATH_INFO``, ...). Servers' objects (the ASGI
scope, streams, callables) stay on the edge node: only msgpack types cross the broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["IDENTITY", "portable_environ"]

IDENTITY = "socketio_adapters.identity"
"""The environ key under which an edge node's ``authenticate`` result travels."""


def portable_environ(environ: Mapping[str, Any], identity: Any = None) -> dict[str, str]:
    """The string variables of ``environ`` whose names are upper case, plus the
    edge's verdict on the client under :data:`IDENTITY` (as a string)."""
    out = {key: value for key, value in environ.items()
           if isinstance(key, str) and key.isupper() and isinstance(value, str)}
    if identity is not None:
        out[IDENTITY] = str(identity)
    return out
