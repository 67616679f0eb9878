"""Embedded backend: the processes of one machine form a cluster with no broker.

Features
    Every process that uses the same ``local://NAME`` joins one cluster, whatever
    started it (``uvicorn --workers N``, gunicorn's workers, hypercorn, processes
    started by hand). They meet in a runtime folder (see :mod:`.folder`): the first
    server to take the folder's lock hosts the hub, a small relay on a Unix domain
    socket, and every node connects to it. No process is special for long: when the
    host dies (even by SIGKILL) the kernel frees the lock, another node takes the hub
    over from its own copy of the log and sessions, and the others reconnect.
    Keeps a durable log and a session store (connection state recovery across
    workers), and reaches one node directly.

Connection string
    ``local://NAME`` (a folder per user and name), ``local:///absolute/folder``,
    or ``local://`` (the name ``default``).

Per-room subscriptions (``subscriptions=rooms``)
    The hub keeps which nodes subscribed to each room key (``ROOMS``/``UNROOMS``
    frames, answered once done; the hello carries every key after a reconnect) and
    relays a room's message (``TO_ROOM``) to them only.

Options
    Only the common ones (``channel``, ``connect_timeout``).

Limits
    One machine. The hub runs inside one worker's event loop: a worker that blocks
    its loop delays the cluster's messages until it returns. An emitter (a process
    with no server) never hosts the hub: it needs a server of the cluster running.
"""

from .core import LocalBackend

__all__ = ["LocalBackend"]
