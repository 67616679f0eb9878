"""Brokers in containers (testcontainers), where a Docker engine answers: the images of
conformance/images.py, each listening on fixed loopback ports of the host so that a
restart keeps its address and its data (the same container is stopped and started
again). A :class:`ContainerBroker` is a :class:`~conformance.brokers.LocalBroker`, so
the suite's faults (restart, outage) work on it unchanged. Readiness is asked with the
same protocol probes as the local binaries (conformance/brokers/probes.py).

What only runs where Docker exists: starting, stopping and probing the containers.
What runs everywhere (tests/test_containers.py): the recipes below (image, command,
environment, port mappings, URL) and the probes against a local broker.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .brokers import HOST, BrokerStartError, LocalBroker, free_port
from .brokers.probes import (
    amqp_start,
    kafka_api_versions,
    nats_jetstream,
    postgres_startup,
    redis_cluster_ok,
    redis_ping,
)
from .brokers.process import exchange
from .images import Image, image_for

__all__ = ["ContainerBroker", "Recipe", "docker_engine", "recipe"]

Probe = Callable[[str, int, float], str]
AMQP_LOGIN = "sioa"
"""RabbitMQ's ``guest`` may only log in from the container's own loopback."""
STOP_TIMEOUT = 5
"""Seconds ``docker stop`` waits before it kills."""


@dataclass(frozen=True)
class Recipe:
    """How one image runs as the suite's broker: the host ports are chosen first."""

    command: list[str] | None
    env: dict[str, str]
    ports: dict[int, int]
    """container port -> host port (published on 127.0.0.1 only)."""
    url: str
    probe: Probe
    extra: dict[str, Any] = field(default_factory=dict)


def _cluster_ready(ports: list[int]) -> Probe:
    def probe(host: str, _port: int, timeout: float) -> str:
        def ask(port: int, payload: bytes, timeout: float,
                done: Callable[[bytes], bool]) -> bytes:
            return exchange(port, payload, timeout, done, host=host)
        return redis_cluster_ok(ports, timeout, ask)
    return probe


def _redis_cluster_script(server: str, ports: list[int]) -> str:
    """Three masters in one container, announced on 127.0.0.1 and published on the
    same port numbers, so the slot map's addresses work from the host; the cluster is
    made once and comes back from its nodes.conf after a restart."""
    cli = server.replace("-server", "-cli")
    starts = " && ".join(
        f"mkdir -p /data/{p} && {server} --port {p} --cluster-enabled yes "
        f"--cluster-config-file /data/{p}/nodes.conf --cluster-announce-ip 127.0.0.1 "
        f"--dir /data/{p} --appendonly yes --appendfsync everysec --save '' --daemonize yes"
        for p in ports)
    nodes = " ".join(f"127.0.0.1:{p}" for p in ports)
    return (f"{starts} && sleep 1 && ([ -f /data/created ] || ({cli} --cluster create "
            f"{nodes} --cluster-yes && touch /data/created)) && exec sleep infinity")


def recipe(kind: str, image: Image, ports: list[int]) -> Recipe:
    """The command, environment, port mappings and URL of ``image`` as broker
    ``kind`` on the given host ports (one, or three for a Redis Cluster)."""
    port = ports[0]
    server = "valkey-server" if image.ref.startswith("valkey/") else "redis-server"
    if kind == "redis":
        return Recipe([server, "--port", "6379", "--appendonly", "yes", "--appendfsync",
                       "everysec", "--save", ""], {}, {6379: port},
                      f"redis://{HOST}:{port}/0", redis_ping)
    if kind == "redis-cluster":
        return Recipe(["sh", "-c", _redis_cluster_script(server, ports)], {},
                      {p: p for p in ports},
                      "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in ports),
                      _cluster_ready(ports))
    if kind == "rabbitmq":
        return Recipe(None, {"RABBITMQ_DEFAULT_USER": AMQP_LOGIN,
                             "RABBITMQ_DEFAULT_PASS": AMQP_LOGIN}, {5672: port},
                      f"amqp://{AMQP_LOGIN}:{AMQP_LOGIN}@{HOST}:{port}/", amqp_start)
    if kind == "nats":
        return Recipe(["-js", "-sd", "/data/jetstream"], {}, {4222: port},
                      f"nats://{HOST}:{port}", nats_jetstream)
    if kind == "kafka":  # KRaft, one node; it advertises the host's address
        return Recipe(None, {
            "KAFKA_NODE_ID": "1", "KAFKA_PROCESS_ROLES": "broker,controller",
            "KAFKA_LISTENERS": f"PLAINTEXT://:{port},CONTROLLER://:9093",
            "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{HOST}:{port}",
            "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
            "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        }, {port: port}, f"kafka://{HOST}:{port}", kafka_api_versions)
    if kind == "postgres":
        return Recipe(None, {"POSTGRES_HOST_AUTH_METHOD": "trust"}, {5432: port},
                      f"postgresql://postgres@{HOST}:{port}/postgres", postgres_startup)
    raise ValueError(f"no container recipe for {kind!r}")


@functools.lru_cache(maxsize=1)
def docker_engine() -> str | None:
    """None when a Docker engine answers (``DOCKER_HOST`` or the default socket), else
    why it does not; asked once per process."""
    try:
        import docker  # from testcontainers

        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # the docker client raises many kinds: all mean "no engine"
        return f"{type(exc).__name__}: {exc}"
    return None


class ContainerBroker(LocalBroker):
    """``kind@version``: the pinned image of conformance/images.py in a container."""

    kind: ClassVar[str] = "container"

    def __init__(self, kind: str, version: str, workdir: Path | None = None) -> None:
        self.image = image_for(kind, version)
        self.backend_kind = kind
        super().__init__(workdir)
        self.ports = [self.port] + ([free_port(), free_port()] if kind == "redis-cluster"
                                    else [])
        self.recipe = recipe(kind, self.image, self.ports)
        self._container: Any = None  # testcontainers' DockerContainer, once created

    @classmethod
    def find_binary(cls) -> Path | None:
        why = docker_engine()
        if why is not None:
            raise BrokerStartError(f"no Docker engine answers ({why}): containers need "
                                   "one; SIOA_BROKER_SOURCE=local runs the local binaries")
        return Path("docker")

    @property
    def url(self) -> str:
        return self.recipe.url

    @property
    def source(self) -> str:
        return f"container {self.image.ref} (testcontainers)"

    @property
    def running(self) -> bool:
        if self._container is None:
            return False
        with contextlib.suppress(Exception):
            wrapped = self._container.get_wrapped_container()
            wrapped.reload()
            return bool(wrapped.status == "running")
        return False

    def _launch(self, deadline: float) -> None:
        if self._container is not None:  # a restart: the same container, its data kept
            self._container.get_wrapped_container().start()
            return
        from testcontainers.core.container import DockerContainer

        container = DockerContainer(self.image.ref)
        if self.recipe.command is not None:
            container.with_command(self.recipe.command)
        for name, value in self.recipe.env.items():
            container.with_env(name, value)
        for inside, outside in self.recipe.ports.items():  # loopback only
            container.ports[f"{inside}/tcp"] = (HOST, outside)  # type: ignore[assignment]
        self._container = container.start()

    def _halt(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.get_wrapped_container().stop(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        container, self._container = self._container, None
        try:
            if container is not None:
                with contextlib.suppress(Exception):
                    container.stop()
        finally:
            super().stop()

    def log_tail(self, lines: int = 40) -> str:
        if self._container is None:
            return "(no container)"
        with contextlib.suppress(Exception):
            out = self._container.get_wrapped_container().logs(tail=lines)
            return str(out.decode(errors="replace"))
        return "(no logs)"

    def _probe(self, timeout: float) -> str | None:
        told = self.recipe.probe(HOST, self.port, timeout)
        return told or self.image.product
