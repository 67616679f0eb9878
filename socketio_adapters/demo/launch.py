"""What ``socketio-adapters distributor-demo`` runs: the processes of the distributor
demo, for :class:`~socketio_adapters.demo.processes.Supervisor`.

- on a ``local://`` URL, the cluster's hub (``socketio-adapters hub``), first, so that
  killing a backend never takes the hub (and the recovery log it keeps) with it;
- the chat backend and the counter backend (:data:`BACKENDS`), each restarted when
  it exits;
- the edge: uvicorn running :data:`EDGE_APP` with ``edges`` workers on one port,
  without websocket compression (``--ws-per-message-deflate false``), as
  :class:`~socketio_adapters.AsyncServer` defaults to.
"""

from __future__ import annotations

import sys

from ..backends.local.folder import RuntimeFolder
from .processes import Child

__all__ = ["BACKENDS", "EDGE_APP", "children"]

EDGE_APP = "socketio_adapters.demo.edge:app"
BACKENDS = {"chat backend": "socketio_adapters.demo.chat_backend",
            "counter backend": "socketio_adapters.demo.counter_backend"}
"""The backends: name -> module run with ``python -m``."""


def children(url: str, host: str, port: int, edges: int,
             access_log: bool = False) -> list[Child]:
    """The demo's processes, in the order to start them (the workers of the edge
    read ``SOCKETIO_ADAPTER_URL``: the caller sets it)."""
    python = sys.executable
    started: list[Child] = []
    if url.startswith("local://"):
        folder = RuntimeFolder(url)
        started.append(Child("hub", [python, "-m", "socketio_adapters", "hub", url],
                             restart=True, ready=lambda pid: folder.hub_pid() == pid))
    started.extend(Child(name, [python, "-m", module, "--url", url], restart=True)
                   for name, module in BACKENDS.items())
    edge = [python, "-m", "uvicorn", EDGE_APP, "--workers", str(edges), "--host", host,
            "--port", str(port), "--lifespan", "on", "--timeout-graceful-shutdown", "5",
            "--ws-per-message-deflate", "false"]  # as AsyncServer's default
    started.append(Child("edge", edge if access_log else [*edge, "--no-access-log"]))
    return started
