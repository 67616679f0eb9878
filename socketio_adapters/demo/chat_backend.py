"""The distributor demo's chat backend: ``python -m socketio_adapters.demo.chat_backend``.

An :class:`~socketio_adapters.distributor.ApplicationServer` for ``/chat``, holding
no connection: the edge workers relay their clients' connects and events here. A
client's name comes from its ``auth`` and is kept in its session (which lives on
the edge, with the socket); who is online is read from the edge workers'
sockets (``fetch_sockets``), so a restarted backend knows it at once. Every
message is labelled with this process's id and the edge worker's.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

from ..distributor import ApplicationServer
from ..errors import ClusterTimeout
from .backend import NODE_OPTIONS, RECOVERY, Labels, auth_name, clean, main

__all__ = ["NAMESPACE", "build"]

NAMESPACE = "/chat"
NAME_ROOM = "name:"
"""Prefix of the room a socket joins with its name (how the member list finds it)."""
MAX_TEXT = 500
_log = logging.getLogger("socketio_adapters.demo.chat")


def build(url: str) -> ApplicationServer:
    """The chat backend's application server on the cluster at ``url``."""
    app = ApplicationServer(url, NAMESPACE, connection_state_recovery=RECOVERY,
                            **NODE_OPTIONS)
    labels = Labels(app)
    numbers = itertools.count(1)

    async def members(leaving: str | None = None) -> None:
        """Broadcast who is online, with the edge worker each one is on."""
        try:
            sockets = await app.fetch_sockets(skip_sid=leaving)
        except ClusterTimeout as exc:  # an edge worker died while answering
            sockets = exc.partial
        online = sorted(
            ({"name": room[len(NAME_ROOM):], "edge": labels.edge_pid(sock.node)}
             for sock in sockets for room in sock.rooms if room.startswith(NAME_ROOM)),
            key=lambda entry: (str(entry["name"]), str(entry["edge"])))
        await app.emit("members", online)

    @app.on("connect")
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        name = auth_name(auth, sid)
        await app.save_session(sid, {"name": name})
        await app.enter_room(sid, NAME_ROOM + name)

    @app.on("disconnect")
    async def disconnect(sid: str, reason: str) -> None:
        await members(leaving=sid)

    @app.event
    async def hello(sid: str) -> dict[str, Any]:
        """The tab (re)connected: its name and who serves it (the ack); then the
        member list, to everyone."""
        session = await app.get_session(sid)
        await members()
        return {"name": session.get("name"), **labels.of(sid)}

    @app.event
    async def chat(sid: str, data: Any) -> dict[str, Any] | None:
        text = clean(data.get("text") if isinstance(data, dict) else data, MAX_TEXT)
        if not text:
            return None
        session = await app.get_session(sid)
        message = {"id": f"{labels.pid}-{next(numbers)}", "name": session.get("name"),
                   "text": text, **labels.of(sid)}
        await app.emit("chat", message)
        return {"id": message["id"]}

    return app


if __name__ == "__main__":
    main("chat", build)
