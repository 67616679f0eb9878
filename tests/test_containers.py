"""The container path of the suite's brokers, where no Docker engine is needed: image
choice, the source chosen for a spec, the recipes (command, environment, loopback port
mappings, URL), and the readiness probes the containers share with the local brokers,
against the local brokers. Starting containers runs only where a Docker engine answers
(the CI matrix in .github/workflows/ci.yml)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conformance.brokers import BrokerStartError, LocalBroker, available, broker_for, free_port
from conformance.brokers.probes import (
    amqp_start,
    kafka_api_versions,
    nats_jetstream,
    postgres_startup,
    redis_ping,
)
from conformance.brokers.process import NotReady
from conformance.containers import ContainerBroker, docker_engine, recipe
from conformance.images import IMAGES, image_for
from conformance.sources import choose, parse_spec
from socketio_adapters.registry import backend_class

NO_ENGINE = "FileNotFoundError: no socket"


def test_every_image_is_pinned_and_named() -> None:
    for kind, versions in IMAGES.items():
        assert versions, kind
        for version, image in versions.items():
            repository, _, tag = image.ref.rpartition(":")
            assert repository and tag and tag != "latest", image.ref
            assert tag.count(".") >= 1 or tag.isdigit(), f"{kind}@{version}: {image.ref}"
            assert image_for(kind, version) is image
            assert image.product


def test_an_unknown_image_names_the_versions_there_are() -> None:
    with pytest.raises(ValueError, match=r"kafka@2.8; versions of kafka: 3.9, 4.0"):
        image_for("kafka", "2.8")
    with pytest.raises(ValueError, match="no container image for 'memory'"):
        image_for("memory", "1")


@pytest.mark.parametrize(("spec", "wanted", "engine", "source", "version"), [
    ("redis://127.0.0.1:6379/0", "container", NO_ENGINE, "url", None),
    ("memory", "container", NO_ENGINE, "none", None),
    ("redis", "auto", NO_ENGINE, "local", None),
    ("redis", "auto", None, "container", "7.4"),  # the first image of its kind
    ("redis", "local", None, "local", None),
    ("local", "auto", None, "local", None),  # the hub process: no image
    ("kafka@4.0", "auto", None, "container", "4.0"),
    ("postgres@14", "container", None, "container", "14"),
])
def test_the_source_of_a_spec(spec: str, wanted: str, engine: str | None, source: str,
                              version: str | None) -> None:
    choice = choose(spec, wanted, engine)
    assert (choice.source, choice.version) == (source, version)


def test_a_source_that_cannot_be_had_is_a_clear_error() -> None:
    with pytest.raises(BrokerStartError, match=r"kafka@3.9 needs a Docker engine.*no socket"):
        choose("kafka@3.9", "auto", NO_ENGINE)
    with pytest.raises(BrokerStartError, match="redis needs a Docker engine"):
        choose("redis", "container", NO_ENGINE)
    with pytest.raises(ValueError, match="SIOA_BROKER_SOURCE=local runs only the local"):
        choose("nats@2.10", "local", None)
    with pytest.raises(ValueError, match="SIOA_BROKER_SOURCE='docker': one of auto"):
        choose("redis", "docker", None)
    with pytest.raises(ValueError, match="unknown backend 'mongo'"):
        parse_spec("mongo@7")
    with pytest.raises(ValueError, match="a version after '@'"):
        parse_spec("redis@")


@pytest.mark.parametrize(("kind", "version"), [
    (kind, version) for kind, versions in IMAGES.items() for version in versions])
def test_a_recipe_publishes_on_loopback_and_gives_a_url_our_backend_takes(
        kind: str, version: str) -> None:
    ports = [free_port() for _ in range(3 if kind == "redis-cluster" else 1)]
    made = recipe(kind, image_for(kind, version), ports)
    assert sorted(made.ports.values()) == sorted(ports)
    assert f"127.0.0.1:{ports[0]}" in made.url
    backend_class(made.url)  # a scheme the registry knows
    if kind == "kafka":  # a Kafka client connects where the broker advertises
        assert made.env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://127.0.0.1:{ports[0]}"
        assert made.ports == {ports[0]: ports[0]}
    if kind == "redis-cluster":  # MOVED names announced addresses: the same ports outside
        assert made.ports == {p: p for p in ports}
        assert made.command is not None and "--cluster-announce-ip 127.0.0.1" in made.command[-1]
    if version.startswith("valkey"):
        assert made.command is not None and made.command[0] == "valkey-server"


def test_with_no_engine_a_container_broker_says_so() -> None:
    why = docker_engine()
    if why is None:
        pytest.skip("a Docker engine answers here: the CI matrix starts containers")
    with pytest.raises(BrokerStartError, match="no Docker engine answers"):
        ContainerBroker("redis", "7.4")


PROBES = {"redis": redis_ping, "nats": nats_jetstream, "kafka": kafka_api_versions,
          "rabbitmq": amqp_start, "postgres": postgres_startup}
TELLS = {"redis": "Redis ", "nats": "nats-server 2.", "kafka": "", "rabbitmq": "RabbitMQ 3.",
         "postgres": "PostgreSQL 1"}


@pytest.fixture(scope="module", params=sorted(PROBES))
def local_broker(request: pytest.FixtureRequest) -> Iterator[LocalBroker]:
    kind: str = request.param
    if not available(kind):
        pytest.skip(f"{kind} not installed: scripts/install-brokers.sh {kind}")
    broker = broker_for(kind)
    broker.start()
    yield broker
    broker.stop()


@pytest.mark.broker
def test_the_containers_probes_against_a_local_broker(local_broker: LocalBroker) -> None:
    probe = PROBES[local_broker.kind]
    told = probe(local_broker.host, local_broker.port, 5.0)
    assert told.startswith(TELLS[local_broker.kind])
    with pytest.raises((OSError, NotReady)):  # nothing listens there
        probe("127.0.0.1", free_port(), 1.0)
