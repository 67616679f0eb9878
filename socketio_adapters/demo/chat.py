"""The demo chat's server side: one :class:`Chat` per worker process.

Everything a tab sees comes through the cluster, so two tabs on different workers
see the same room: messages are broadcasts (labelled with the worker that relayed
them), who is online is ``fetch_sockets()`` over every node, each node's process id
comes from a server-side event with acks, and recovery is the server's own
(``connection_state_recovery``). With recovery on, every emit goes through the
durable log, so the ``hello`` a tab asks for after reconnecting reaches it after
every event it missed: the page counts what arrived in between.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Mapping
from typing import Any

from ..errors import ClusterTimeout
from ..server import AsyncServer

__all__ = ["NAME_ROOM", "WHO_EVENT", "Chat"]

NAME_ROOM = "name:"
"""Prefix of the room a socket joins with its tab's name (how presence finds names)."""
WHO_EVENT = "demo:who"
"""Server-side event: every node answers with its process id."""
MAX_NAME = 24
MAX_TEXT = 500
_log = logging.getLogger("socketio_adapters.demo")


def clean(value: Any, limit: int) -> str:
    """A printable one-line string of at most ``limit`` characters."""
    text = value if isinstance(value, str) else ""
    return " ".join("".join(ch for ch in text if ch.isprintable()).split())[:limit]


class Chat:
    """The event handlers of one worker's server."""

    def __init__(self, sio: AsyncServer) -> None:
        self.sio = sio
        self.pid = os.getpid()
        self.node = sio.cluster.uid
        self._numbers = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        sio.on("connect", self.connect)
        sio.on("disconnect", self.disconnect)
        sio.on("hello", self.hello)
        sio.on("chat", self.chat)
        sio.cluster.on(WHO_EVENT, self.who)

    @property
    def worker(self) -> dict[str, Any]:
        return {"pid": self.pid, "node": self.node}

    async def connect(self, sid: str, environ: Mapping[str, Any], auth: Any) -> None:
        """A new session (a recovered one keeps its session data and rooms)."""
        given = auth.get("name") if isinstance(auth, dict) else None
        name = clean(given, MAX_NAME) or f"guest-{sid[:4]}"
        await self.sio.save_session(sid, {"name": name})
        await self.sio.enter_room(sid, NAME_ROOM + name)

    async def disconnect(self, sid: str, reason: Any = None) -> None:
        self._later(self.presence(leaving=sid))

    async def hello(self, sid: str) -> None:
        """The tab (re)connected: tell it where it is, then everyone who is online.
        Emitted through the log, so it arrives after everything the tab missed."""
        session = await self.sio.get_session(sid)
        await self.sio.emit("hello", {**self.worker, "name": session.get("name"),
                                      "recovered": self.sio.recovered(sid)}, to=sid)
        self._later(self.presence())

    async def chat(self, sid: str, data: Any) -> None:
        text = clean(data.get("text") if isinstance(data, dict) else data, MAX_TEXT)
        if not text:
            return
        session = await self.sio.get_session(sid)
        await self.sio.emit("chat", {
            "id": f"{self.node}-{next(self._numbers)}", "name": session.get("name"),
            "text": text, **self.worker})

    def who(self) -> dict[str, Any]:
        return self.worker

    async def presence(self, leaving: str | None = None) -> None:
        """Broadcast who is online on every worker."""
        try:
            sockets = await self.sio.fetch_sockets(skip_sid=leaving)
        except ClusterTimeout as exc:  # a node died while answering
            sockets = exc.partial
        pids: dict[str, Any] = {self.node: self.pid}
        try:
            answers = await self.sio.server_side_emit_with_ack(WHO_EVENT)
        except ClusterTimeout as exc:
            answers = exc.partial
        for answer in answers:
            if isinstance(answer, dict):
                pids[str(answer.get("node"))] = answer.get("pid")
        online = sorted(
            ({"name": room[len(NAME_ROOM):], "node": sock.node, "pid": pids.get(sock.node)}
             for sock in sockets for room in sock.rooms if room.startswith(NAME_ROOM)),
            key=lambda entry: (str(entry["name"]), str(entry["node"])))
        await self.sio.emit("presence", online)

    def _later(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("presence update failed", exc_info=task.exception())
