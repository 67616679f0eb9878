"""A broker that refuses the credentials fails ``start()`` at once with
``AuthenticationFailed``, on every backend that has authentication, against the real
broker started with authentication on; the right credentials work. A refusal on a
later reconnect is logged as one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import aiokafka.errors  # type: ignore[import-untyped]
import pytest
import redis.asyncio as aioredis

from conformance.brokers import LocalBroker
from conformance.cluster import eventually
from socketio_adapters import AuthenticationFailed, BrokerUnavailable, create_manager
from socketio_adapters.backends.kafka import KafkaBackend
from socketio_adapters.backends.kafka.topics import scram_refusal
from tests.auth_brokers import (
    AuthKafka,
    AuthNats,
    AuthPostgres,
    AuthRabbitMQ,
    AuthRedis,
    OnFirstUse,
)

pytestmark = pytest.mark.broker

FAILS_WITHIN = 5.0
"""start() must fail within this, far below CONNECT_TIMEOUT: a refusal is not retried."""
CONNECT_TIMEOUT = 60.0
DEADLINE = 20.0
WRONG = "not-the-Password-7"
"""A wrong password that the error message must not show."""

_KINDS: dict[str, Callable[[], LocalBroker]] = {
    "redis": AuthRedis, "rabbitmq": AuthRabbitMQ, "nats": AuthNats,
    "postgres": AuthPostgres, "kafka": AuthKafka}


@pytest.fixture(scope="module")
def brokers() -> Iterator[dict[str, Any]]:
    """Each kind of broker started on first use, stopped after the module."""
    on_first_use = OnFirstUse(lambda kind: _KINDS[kind]())
    yield {"get": on_first_use.get}
    on_first_use.stop()


Case = tuple[str, Callable[[Any], str]]

REFUSED: dict[str, Case] = {
    "redis-wrong-password": ("redis", lambda b: b.url_as(None, WRONG)),
    "redis-acl-user-wrong-password": ("redis", lambda b: b.url_as(b.acl_user, WRONG)),
    "redis-no-password": ("redis", lambda b: b.url_as(None, None)),
    "redis-unknown-user": ("redis", lambda b: b.url_as("mallory", WRONG)),
    "amqp-wrong-password": ("rabbitmq", lambda b: b.url_as(b.user, WRONG)),
    "amqp-unknown-user": ("rabbitmq", lambda b: b.url_as("mallory", WRONG)),
    "nats-wrong-password": ("nats", lambda b: b.url_as(b.user, WRONG)),
    "nats-no-credentials": ("nats", lambda b: b.url_as(None, None)),
    "postgres-scram-wrong-password": ("postgres", lambda b: b.url_as(b.user, WRONG)),
    "postgres-md5-wrong-password": ("postgres", lambda b: b.url_as(b.md5_user, WRONG)),
    "postgres-unknown-role": ("postgres", lambda b: b.url_as("mallory", WRONG)),
    "kafka-scram-refused": ("kafka", lambda b: b.url_as("mallory", WRONG)),
}

ACCEPTED: dict[str, Case] = {
    "redis-password": ("redis", lambda b: b.url_as(None, b.password)),
    "redis-acl-user": ("redis", lambda b: b.url_as(b.acl_user, b.acl_password)),
    "amqp": ("rabbitmq", lambda b: b.url_as(b.user, b.password)),
    "nats": ("nats", lambda b: b.url_as(b.user, b.password)),
    "postgres-scram": ("postgres", lambda b: b.url_as(b.user, b.password)),
    "postgres-md5": ("postgres", lambda b: b.url_as(b.md5_user, b.md5_password)),
}


def _manager(url: str, **options: Any) -> Any:
    return create_manager(url, connect_timeout=CONNECT_TIMEOUT, heartbeat_interval=0.2,
                          heartbeat_timeout=5.0, **options)


@pytest.mark.parametrize("case", list(REFUSED.values()), ids=list(REFUSED))
async def test_refused_credentials_fail_start_at_once(brokers: dict[str, Any],
                                                      case: Case) -> None:
    kind, url_of = case
    url = url_of(brokers["get"](kind))
    manager = _manager(url)
    with pytest.raises(AuthenticationFailed) as caught:
        await asyncio.wait_for(manager.start(), FAILS_WITHIN)
    message = str(caught.value)
    assert "authentication failed" in message and "wrong user or password" in message
    assert url.split("?")[0].replace(WRONG, "***") in message
    assert WRONG not in message
    assert isinstance(caught.value, BrokerUnavailable)  # existing handlers catch it
    assert not manager.started and not manager.backend.started


async def test_a_nats_emitter_fails_start_at_once(brokers: dict[str, Any]) -> None:
    broker = brokers["get"]("nats")
    emitter = _manager(broker.url_as(broker.user, WRONG), write_only=True)
    with pytest.raises(AuthenticationFailed, match="authentication failed"):
        await asyncio.wait_for(emitter.start(), FAILS_WITHIN)


async def test_an_emitter_keeps_what_a_refusing_broker_did_not_take(
        brokers: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    # a Postgres emitter connects on its first publish: the refusal comes there
    broker = brokers["get"]("postgres")
    emitter = _manager(broker.url_as(broker.user, WRONG), write_only=True)
    await asyncio.wait_for(emitter.start(), DEADLINE)
    caplog.set_level(logging.WARNING, logger="socketio_adapters")
    try:
        await emitter.emit("job", 1, namespace="/", to="room")
        await eventually(lambda: any(
            r.levelno == logging.ERROR and "publish failed (authentication failed" in
            r.getMessage() for r in caplog.records), True, "the refusal is logged as one")
        stats = emitter.stats()
        assert (stats["queued"], stats["publish_dropped"]) == (1, 0)  # kept, retried
    finally:
        await asyncio.wait_for(emitter.stop(goodbye=False), DEADLINE)


@pytest.mark.parametrize("case", list(ACCEPTED.values()), ids=list(ACCEPTED))
async def test_the_right_credentials_work(brokers: dict[str, Any], case: Case) -> None:
    kind, url_of = case
    url = url_of(brokers["get"](kind))
    a, b = _manager(url), _manager(url)
    try:
        await asyncio.wait_for(a.start(), DEADLINE)
        await asyncio.wait_for(b.start(), DEADLINE)
        await eventually(lambda: asyncio.gather(a.server_count(), b.server_count()),
                         [2, 2], "two nodes see each other through the broker")
    finally:
        for manager in (a, b):
            await asyncio.wait_for(manager.stop(), DEADLINE)


async def test_a_refusal_on_reconnect_is_logged_as_one(
        brokers: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    broker = brokers["get"]("redis")
    manager = _manager(broker.url_as(None, broker.password))
    admin = aioredis.Redis.from_url(broker.url_as(broker.acl_user, broker.acl_password))
    await asyncio.wait_for(manager.start(), DEADLINE)
    caplog.set_level(logging.WARNING, logger="socketio_adapters")
    try:
        # the password changes under the running node, which then loses its connection
        await admin.config_set("requirepass", "rotated-pw")
        await admin.client_kill_filter(_type="pubsub")
        # the listener's (an emit in flight on its connection may log one too, from
        # the outbox, when it tries again on a connection of its own)
        await eventually(lambda: _refusals(caplog, "socketio_adapters.redis"), True,
                         "the failed reconnect is logged as a refusal, at error level")
        assert manager.backend.state.refusal is not None
        await admin.config_set("requirepass", broker.password)  # the listener retries
        await eventually(lambda: manager.backend.state.connected, True, "subscribed again")
    finally:
        await admin.config_set("requirepass", broker.password)
        await admin.aclose()
        await asyncio.wait_for(manager.stop(), DEADLINE)


def _refusals(caplog: pytest.LogCaptureFixture, logger: str) -> bool:
    return any(r.levelno == logging.ERROR and r.name == logger
               and "authentication failed" in r.getMessage()
               and "AuthenticationError" in r.getMessage() for r in caplog.records)


def test_kafka_maps_a_sasl_refusal_and_nothing_else() -> None:
    backend = KafkaBackend("kafka://u:p@127.0.0.1:1", security_protocol="SASL_PLAINTEXT")
    assert backend.is_auth_error(aiokafka.errors.SaslAuthenticationFailed("bad login"))
    assert backend.is_auth_error(aiokafka.errors.UnsupportedSaslMechanismError("PLAIN"))
    assert not backend.is_auth_error(aiokafka.errors.KafkaConnectionError("gone"))
    assert scram_refusal(KeyError("v")) is None  # only the one from aiokafka's SCRAM code
