"""Long-polling answers a Python client can read.

python-engineio's client refuses a polling payload of more than
``engineio.payload.Payload.max_decode_packets`` packets (16 by default: "Too many
packets in payload") and drops its connection, while python-engineio's server answers
a poll with every packet queued for the session. A burst of events between two polls
(a restore replaying missed events, two nodes emitting at once) then ends a Python
client's session: its read loop stops without a disconnect event, and the server ends
the session at the next missed ping. Node's engine.io server sends every queued packet
too, and the JavaScript client reads any number, so only the sessions of Python clients
(their ``User-Agent``: aiohttp's ``Python/...`` or requests' ``python-requests/...``)
get answers of at most that many packets; what is left goes with the next poll.
"""

from __future__ import annotations

from typing import Any

from engineio import payload as eio_payload
from engineio.async_socket import AsyncSocket

from .engine_socket import QueueSocket, wait_without_tasks
from .session_queue import lighten_queue

__all__ = ["PYTHON_AGENTS", "CappedPollSocket", "cap_polls_for"]

PYTHON_AGENTS = ("Python/", "python-requests/")
"""How the User-Agent of python-engineio's clients (asyncio, threads) begins."""


class CappedPollSocket(QueueSocket):
    """python-engineio's session, answering a poll with at most as many packets as
    its client decodes in one payload."""

    @property
    def poll_limit(self) -> int:  # type: ignore[override]
        return max(1, int(eio_payload.Payload.max_decode_packets))


def cap_polls_for(socket: Any, environ: dict[str, Any]) -> None:
    """Make ``socket`` (a new session, connecting with ``environ``) answer polls
    with at most a Python client's limit of packets if its client is Python's, and
    wait for its packets without a task per wait (:mod:`.engine_socket`), in a
    :class:`~.session_queue.SessionQueue`, either way."""
    lighten_queue(socket)
    agent = str(environ.get("HTTP_USER_AGENT", ""))
    if agent.startswith(PYTHON_AGENTS) and type(socket) in (AsyncSocket, QueueSocket):
        socket.__class__ = CappedPollSocket
    else:
        wait_without_tasks(socket)
