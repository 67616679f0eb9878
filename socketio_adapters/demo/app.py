"""The demo's ASGI app: ``uvicorn socketio_adapters.demo.app:app --workers 2``.

Each worker process imports this module and builds its own node of the cluster
named by ``SOCKETIO_ADAPTER_URL`` (default: the embedded
``local://socketio-adapters-demo``, no broker). The manager starts with the app
(:class:`~socketio_adapters.lifecycle.LifespanMiddleware`), so a worker is part of the
cluster before its first client arrives. The page and the socket.io client are served
from ``static/``; nothing comes from a CDN.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import socketio

from ..lifecycle import LifespanMiddleware
from ..registry import create_manager
from ..server import AsyncServer
from .chat import Chat

__all__ = ["DEFAULT_URL", "MAX_DISCONNECTION", "URL_VARIABLE", "app", "create_app"]

URL_VARIABLE = "SOCKETIO_ADAPTER_URL"
DEFAULT_URL = "local://socketio-adapters-demo"
MAX_DISCONNECTION = 120.0
"""Seconds a dropped tab's session is kept for it to recover."""
STATIC = Path(__file__).resolve().parent / "static"


def create_app(url: str) -> LifespanMiddleware:
    """The ASGI app of one worker: the chat server on a manager for ``url``."""
    manager = create_manager(url)
    sio = AsyncServer(manager, async_mode="asgi", connection_state_recovery={
        "max_disconnection_duration": MAX_DISCONNECTION})
    Chat(sio)
    static: dict[str, Any] = {
        "/": {"filename": str(STATIC / "index.html"), "content_type": "text/html"},
        "/static": str(STATIC),
    }
    return LifespanMiddleware(socketio.ASGIApp(sio, static_files=static), manager)


app = create_app(os.environ.get(URL_VARIABLE) or DEFAULT_URL)
