"""redis-server with its append-only file."""

from __future__ import annotations

from pathlib import Path

from .probes import redis_ping
from .process import HOST, LocalBroker, which

__all__ = ["RedisBroker"]


class RedisBroker(LocalBroker):
    kind = "redis"

    @classmethod
    def find_binary(cls) -> Path | None:
        return which("redis-server")

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _command(self) -> list[str]:
        # persistence as production runs it: the append-only file (written on every
        # command, flushed each second, and at a graceful stop)
        return [str(self.binary), "--port", str(self.port), "--bind", HOST, "--save", "",
                "--appendonly", "yes", "--appendfsync", "everysec", "--dir",
                str(self.data_dir), "--daemonize", "no", "--logfile", ""]

    def _probe(self, timeout: float) -> str | None:
        return redis_ping(HOST, self.port, timeout)
