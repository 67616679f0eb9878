"""The local:// backend's hub as a process."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from .process import LocalBroker

__all__ = ["LocalHubProcess"]


class LocalHubProcess(LocalBroker):
    """The ``local://`` backend has no broker: its "broker" here is a process that
    hosts the cluster's hub (``python -m socketio_adapters.backends.local``).
    Restarting it moves the hub to one of the servers, which must survive that."""

    kind = "local"

    @classmethod
    def find_binary(cls) -> Path | None:
        return Path(sys.executable)

    @property
    def url(self) -> str:
        return f"local://{self.data_dir / 'cluster'}"

    def _command(self) -> list[str]:
        return [str(self.binary), "-m", "socketio_adapters.backends.local", self.url]

    @property
    def source(self) -> str:
        return f"hub process ({self.binary} -m socketio_adapters.backends.local)"

    def _probe(self, timeout: float) -> str | None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.data_dir / "cluster" / "hub.sock"))
        return "local:// hub (no broker)"
