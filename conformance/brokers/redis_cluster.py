"""A Redis Cluster of three masters (no replicas), each a redis-server with its
append-only file, created once with ``redis-cli --cluster create``."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .probes import redis_cluster_ok
from .process import (
    HOST,
    LocalBroker,
    NotReady,
    exchange,
    exited,
    free_port,
    spawn,
    stop_child,
    wait_for,
    which,
)

__all__ = ["RedisClusterBroker"]

MASTERS = 3
NODE_TIMEOUT_MS = 2000
"""``cluster-node-timeout``: short, so a restarted cluster agrees it is ``ok`` soon."""


class RedisClusterBroker(LocalBroker):
    """Three redis-server masters on free loopback ports (``port`` is the first's),
    each with its own dir under the data dir (its ``nodes.conf`` and append-only file)
    and its own cluster bus port (also a free port: the default, port + 10000, could
    be an ephemeral port some client holds). The first start creates the cluster;
    ``restart()`` brings the same three nodes back, which find each other from their
    ``nodes.conf``, with the slots and data they had. Ready: ``CLUSTER INFO`` says
    ``cluster_state:ok`` on every node."""

    kind = "redis-cluster"

    def __init__(self, workdir: Path | None = None) -> None:
        super().__init__(workdir)
        self.ports: list[int] = [self.port] + [free_port() for _ in range(MASTERS - 1)]
        self.bus_ports: list[int] = [free_port() for _ in range(MASTERS)]
        self._procs: list[subprocess.Popen[bytes]] = []

    @classmethod
    def find_binary(cls) -> Path | None:
        server = which("redis-server")
        return server if server is not None and cls._cli() is not None else None

    @staticmethod
    def _cli() -> Path | None:
        return which("redis-cli")

    @property
    def seeds(self) -> str:
        return ",".join(f"{HOST}:{p}" for p in self.ports)

    @property
    def url(self) -> str:
        return f"redis+cluster://{self.seeds}/0"

    @property
    def running(self) -> bool:
        return len(self._procs) == MASTERS and not any(map(exited, self._procs))

    def _node_dir(self, index: int) -> Path:
        return self.data_dir / f"node-{self.ports[index]}"

    def _node_command(self, index: int) -> list[str]:
        return [str(self.binary), "--port", str(self.ports[index]), "--bind", HOST,
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(self.bus_ports[index]),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                "--dir", str(self._node_dir(index)), "--daemonize", "no", "--logfile", ""]

    @property
    def _created(self) -> Path:
        return self.data_dir / "cluster-created"

    def _prepare(self) -> None:
        for index in range(MASTERS):
            self._node_dir(index).mkdir()

    def _launch(self, deadline: float) -> None:
        self._procs = [spawn(self._node_command(i), self.log_path) for i in range(MASTERS)]
        self._proc = self._procs[0]
        if self._created.exists():
            return  # the nodes know their cluster from nodes.conf
        if not wait_for(lambda: all(self._pong(p) for p in self.ports),
                        deadline - time.monotonic()):
            raise self._start_error("cannot create the cluster: a node does not answer PING")
        cli = self._cli()
        if cli is None:
            raise self._start_error("cannot create the cluster: redis-cli not found")
        with open(self.log_path, "ab") as out:
            code = subprocess.run(
                [str(cli), *self._cli_options(), "--cluster", "create",
                 *(f"{HOST}:{p}" for p in self.ports), "--cluster-replicas", "0",
                 "--cluster-yes"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                timeout=max(5.0, deadline - time.monotonic()), check=False).returncode
        if code != 0:
            raise self._start_error(f"redis-cli --cluster create exited with {code}")
        self._created.touch()

    def _cli_options(self) -> list[str]:
        """redis-cli's options to reach the nodes (a subclass adds TLS, a password)."""
        return []

    def _ask(self, port: int, payload: bytes, timeout: float,
             done: Callable[[bytes], bool]) -> bytes:
        """Send inline commands to a node; its answer, once ``done(answer)``."""
        return exchange(port, payload, timeout, done)

    def _pong(self, port: int) -> bool:
        try:
            return self._ask(port, b"PING\r\n", 1.0, lambda b: b"\r\n" in b) == b"+PONG\r\n"
        except (OSError, NotReady):
            return False

    def _halt(self) -> None:
        procs, self._procs, self._proc = self._procs, [], None
        for proc in procs:  # SIGTERM: each writes its AOF and nodes.conf, then exits
            stop_child(proc)

    def _probe(self, timeout: float) -> str | None:
        return redis_cluster_ok(self.ports, timeout, self._ask)
