"""Real message brokers started from local binaries, for tests and benchmarks.

Each broker is a child process in its own session, bound to 127.0.0.1 on a port
chosen once per object, with its own temporary data dir (holding its log, removed
by ``stop()``). ``restart()`` and ``outage()`` keep port and data dir, so durable
state survives them as it does in production: Redis runs with its append-only file
(a Redis Cluster's three masters also keep their ``nodes.conf``),
RabbitMQ keeps its queues and streams, NATS its JetStream file store, Postgres its
tables. Kafka (tansu, memory storage) comes back empty: ``keeps_log`` says which.
Binaries: scripts/install-brokers.sh.

Readiness is checked at the protocol level: Redis ``PING``; Redis Cluster
``CLUSTER INFO`` saying ``cluster_state:ok`` on every node; NATS a JetStream
``$JS.API.INFO`` request; Kafka an ApiVersions request (tansu answers it once it
serves, and a produce right after works); RabbitMQ the AMQP 0-9-1 header answered
by Connection.Start; Postgres ``pg_isready``.
"""

from pathlib import Path

from .kafka_tansu import KafkaBroker
from .local_hub import LocalHubProcess
from .nats_server import NatsBroker
from .postgres_server import PostgresBroker
from .process import HOST, BrokerStartError, LocalBroker, free_port, listening
from .rabbitmq_server import RabbitMQBroker
from .redis_cluster import RedisClusterBroker
from .redis_server import RedisBroker

__all__ = ["HOST", "KINDS", "BrokerStartError", "KafkaBroker", "LocalBroker", "LocalHubProcess",
           "NatsBroker", "PostgresBroker", "RabbitMQBroker", "RedisBroker", "RedisClusterBroker",
           "available", "broker_for", "free_port", "listening"]

_CLASSES: dict[str, type[LocalBroker]] = {
    cls.kind: cls for cls in (RedisBroker, RedisClusterBroker, RabbitMQBroker, NatsBroker,
                               PostgresBroker, KafkaBroker, LocalHubProcess)
}
KINDS: tuple[str, ...] = tuple(_CLASSES)


def _broker_class(kind: str) -> type[LocalBroker]:
    if kind not in _CLASSES:
        raise ValueError(f"unknown broker kind {kind!r}; known: {', '.join(KINDS)}")
    return _CLASSES[kind]


def broker_for(kind: str, workdir: Path | None = None) -> LocalBroker:
    """A stopped broker of that kind, its data dir to be made under workdir (default:
    the system temp dir). Raises BrokerStartError if its binary is not installed."""
    return _broker_class(kind)(workdir)


def available(kind: str) -> bool:
    """Whether the binary for that kind of broker is installed."""
    return _broker_class(kind).find_binary() is not None
