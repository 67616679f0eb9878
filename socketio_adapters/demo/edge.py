"""The distributor demo's edge node: ``uvicorn socketio_adapters.demo.edge:app --workers 2``.

Each worker process builds one edge node of the cluster named by
``SOCKETIO_ADAPTER_URL`` (default: the embedded ``local://socketio-adapters-demo``).
It runs no application code: :class:`~socketio_adapters.distributor.EdgeRelay`
carries its clients' connects, events and disconnects of ``/chat`` and ``/counter``
to the chat and counter backends (:mod:`.chat_backend`, :mod:`.counter_backend`),
which answer them from processes of their own. It holds the sockets and their
sessions, with connection state recovery, and needs no sticky routing; it announces
its process id in its heartbeats so that the backends can say which worker relayed
what. It serves ``static/distributor.html`` as its page.
"""

from __future__ import annotations

import os
from typing import Any

import socketio

from ..distributor import EdgeRelay
from ..lifecycle import LifespanMiddleware
from ..registry import create_manager
from ..server import AsyncServer
from .app import DEFAULT_URL, STATIC, URL_VARIABLE
from .backend import EDGE_PID, NODE_OPTIONS, RECOVERY

__all__ = ["NAMESPACES", "app", "create_app"]

NAMESPACES = ("/chat", "/counter")
STEP_TIMEOUT = 15.0
"""Seconds a client's step waits for its backend (one restarting included)."""


def create_app(url: str) -> LifespanMiddleware:
    """The ASGI app of one edge worker on the cluster at ``url``."""
    manager = create_manager(url, **NODE_OPTIONS)
    manager.announce({EDGE_PID: os.getpid()})  # known from the first heartbeat on
    sio = AsyncServer(manager, async_mode="asgi", connection_state_recovery=RECOVERY)
    EdgeRelay(sio, NAMESPACES, step_timeout=STEP_TIMEOUT)
    static: dict[str, Any] = {
        "/": {"filename": str(STATIC / "distributor.html"), "content_type": "text/html"},
        "/static": str(STATIC),
    }
    return LifespanMiddleware(socketio.ASGIApp(sio, static_files=static), manager)


app = create_app(os.environ.get(URL_VARIABLE) or DEFAULT_URL)
