"""What the distributor demo's two backends share: the cluster options of every demo
node, the labels that say which processes handled something, and a process's main.

Each backend (:mod:`.chat_backend`, :mod:`.counter_backend`) is an
:class:`~socketio_adapters.distributor.ApplicationServer` in a process of its own;
the edge workers (:mod:`.edge`) announce their process id in their heartbeats, so a
backend can name the edge worker that holds a socket.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

from ..distributor import ApplicationServer
from .app import DEFAULT_URL, MAX_DISCONNECTION, URL_VARIABLE

__all__ = ["EDGE_PID", "NODE_OPTIONS", "RECOVERY", "Labels", "auth_name", "clean", "main",
           "serve"]

NODE_OPTIONS: dict[str, Any] = {"heartbeat_interval": 1.0, "heartbeat_timeout": 3.0}
"""Every demo node's cluster options: a backend that crashed is noticed within 3 s,
and its sockets move to its replacement."""
RECOVERY: dict[str, Any] = {"max_disconnection_duration": MAX_DISCONNECTION}
EDGE_PID = "edge_pid"
"""The field of an edge worker's heartbeat announcement that holds its process id."""


class Labels:
    """Names the processes involved in handling a socket's step."""

    def __init__(self, app: ApplicationServer) -> None:
        self.app = app
        self.pid = os.getpid()

    def edge_pid(self, uid: str | None) -> int | None:
        """The process id the edge node ``uid`` announced (None: not known yet)."""
        info = None if uid is None else self.app.manager.node_info(uid)
        pid = info.get(EDGE_PID) if isinstance(info, dict) else None
        return pid if isinstance(pid, int) else None

    def of(self, sid: str) -> dict[str, Any]:
        """``{"backend": pid, "edge": pid}`` for a step of ``sid`` handled here now."""
        uid = self.app.sockets.edge_of(self.app.namespace, sid)
        return {"backend": self.pid, "edge": self.edge_pid(uid)}


def clean(value: Any, limit: int) -> str:
    """A printable one-line string of at most ``limit`` characters."""
    text = value if isinstance(value, str) else ""
    return " ".join("".join(ch for ch in text if ch.isprintable()).split())[:limit]


def auth_name(auth: Any, sid: str) -> str:
    """The player's or chatter's name from the client's ``auth`` (or a guest name)."""
    given = auth.get("name") if isinstance(auth, dict) else None
    return clean(given, 24) or f"guest-{sid[:4]}"


async def serve(app: ApplicationServer, title: str) -> None:
    """Start ``app``, say so on stdout, run until SIGINT or SIGTERM, then stop."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping.set)
    await app.start()
    print(f"{title} backend ready: pid {os.getpid()}, namespace {app.namespace}",
          flush=True)
    try:
        await stopping.wait()
    finally:
        await app.stop()


def main(title: str, build: Callable[[str], ApplicationServer],
         argv: Sequence[str] | None = None) -> None:
    """A backend process: ``python -m socketio_adapters.demo.<title>_backend [--url]``."""
    parser = argparse.ArgumentParser(description=f"The distributor demo's {title} backend.")
    parser.add_argument("--url", default=os.environ.get(URL_VARIABLE) or DEFAULT_URL,
                        help=f"the cluster's URL (default: ${URL_VARIABLE}, "
                             f"else {DEFAULT_URL})")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(build(args.url), title))
