"""The distributor demo's counter game: ``python -m socketio_adapters.demo.counter_backend``.

An :class:`~socketio_adapters.distributor.ApplicationServer` for ``/counter``: one
shared counter that every player increments by clicking. A player's score is kept
in the socket's session (``app.session()``), which lives on the edge worker with
the socket, so it outlives this process; each click's ack is the new total and
the player's new score, and everyone gets the total and the leaderboard.

This process keeps only the total and the leaderboard, in memory. A replacement
started after a crash rebuilds both before its first step: the total is the
highest one the players' pages saw (``emit_with_ack("sync")``), the leaderboard
is read from the sessions of the players online (``fetch_sockets``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..distributor import ApplicationServer
from ..errors import ClusterTimeout
from .backend import NODE_OPTIONS, RECOVERY, Labels, auth_name, main

__all__ = ["NAMESPACE", "Game", "build"]

NAMESPACE = "/counter"
SYNC_SECONDS = 2.0
"""How long a (re)started backend waits for the pages to say the total they saw."""
LEADERS = 10
_log = logging.getLogger("socketio_adapters.demo.counter")


class Game:
    """The counter, the leaderboard and the handlers of ``/counter``."""

    def __init__(self, app: ApplicationServer) -> None:
        self.app = app
        self.labels = Labels(app)
        self.total = 0
        self.scores: dict[str, int] = {}
        self._synced = False
        self._sync_lock = asyncio.Lock()
        app.on("connect", self.connect)
        app.on("hello", self.hello)
        app.on("click", self.click)

    async def connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        await self._sync()
        await self.app.save_session(sid, {"name": auth_name(auth, sid), "score": 0})

    async def hello(self, sid: str) -> dict[str, Any]:
        """The tab (re)connected: the game as it stands, and who serves it (the ack)."""
        await self._sync()
        session = await self.app.get_session(sid)
        return {"name": session.get("name"), "score": session.get("score", 0),
                "total": self.total, "leaders": self.leaders(), **self.labels.of(sid)}

    async def click(self, sid: str) -> dict[str, Any]:
        """One more: the ack is the new total and this player's new score."""
        await self._sync()
        async with self.app.session(sid) as session:
            score = int(session.get("score", 0)) + 1
            session["score"] = score
        name = str(session.get("name"))
        self.total += 1
        self.scores[name] = score
        labels = self.labels.of(sid)
        await self.app.emit("count", {"total": self.total, "name": name, "score": score,
                                      "leaders": self.leaders(), **labels})
        return {"total": self.total, "score": score, **labels}

    def leaders(self) -> list[dict[str, Any]]:
        """The best scores, highest first."""
        best = sorted(self.scores.items(), key=lambda item: (-item[1], item[0]))
        return [{"name": name, "score": score} for name, score in best[:LEADERS]]

    async def _sync(self) -> None:
        """Once per process, before its first step: the total and the leaderboard
        as the players know them (nothing to find on a first start)."""
        if self._synced:
            return
        async with self._sync_lock:
            if self._synced:
                return
            try:
                seen = await self.app.emit_with_ack("sync", timeout=SYNC_SECONDS)
            except ClusterTimeout as exc:  # a page that is away does not answer
                seen = exc.partial
            self.total = max([self.total, *(n for n in seen if isinstance(n, int))])
            try:
                sockets = await self.app.fetch_sockets()
            except ClusterTimeout as exc:
                sockets = exc.partial
            for sock in sockets:
                try:
                    session = await self.app.get_session(sock.sid)
                except KeyError:  # gone meanwhile
                    continue
                score = session.get("score")
                if isinstance(score, int) and score > 0:
                    self.scores[str(session.get("name"))] = score
            self._synced = True
            _log.info("counter synced: total %d, %d players", self.total, len(self.scores))


def build(url: str) -> ApplicationServer:
    """The counter backend's application server on the cluster at ``url``."""
    app = ApplicationServer(url, NAMESPACE, connection_state_recovery=RECOVERY,
                            **NODE_OPTIONS)
    Game(app)
    return app


if __name__ == "__main__":
    main("counter", build)
