"""Pure logic of the Kafka backend: URL parsing, options, record filtering and order.
No broker and no mock of one: whatever talks to Kafka is proven by the conformance
suite against a real Kafka-protocol broker."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

pytest.importorskip("aiokafka")

from socketio_adapters.backends.kafka import (
    KafkaBackend,
    in_time_order,
    parse_bootstrap,
    partition_for,
    target_of,
)
from socketio_adapters.errors import ConfigurationError
from socketio_adapters.registry import create_backend
from socketio_adapters.storage import Offset


def test_several_bootstrap_servers_with_default_port_and_ipv6() -> None:
    servers, credentials = parse_bootstrap("kafka://a:9093, b ,[::1]:19092,[fe80::1]")
    assert servers == ["a:9093", "b:9092", "[::1]:19092", "[fe80::1]:9092"]
    assert credentials is None


def test_every_client_is_given_every_bootstrap_server_in_order() -> None:
    backend = create_backend("kafka://127.0.0.1:29001,127.0.0.1:29002,[::1]?partitions=3")
    assert isinstance(backend, KafkaBackend)
    servers = ["127.0.0.1:29001", "127.0.0.1:29002", "[::1]:9092"]
    assert backend.servers == servers
    assert [(h.host, h.port) for h in backend.hosts] == [
        ("127.0.0.1", 29001), ("127.0.0.1", 29002), ("::1", 9092)]
    assert backend._client_options()["bootstrap_servers"] == servers
    assert backend.settings["partitions"] == 3


def test_credentials_are_unquoted() -> None:
    servers, credentials = parse_bootstrap("kafka://us%40er:p%3Ass@h:1")
    assert servers == ["h:1"]
    assert credentials is not None
    assert (credentials.username, credentials.password) == ("us@er", "p:ss")


@pytest.mark.parametrize("url", [
    "kafka://", "kafka://a:1,,b:2", "kafka://a:0", "kafka://a:65536", "kafka://a:x",
    "kafka://::1:9092", "kafka://[::1", "kafka://a:1/topic", "kafka://user@a:1",
])
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_bootstrap(url)


def test_options_from_the_query_are_parsed() -> None:
    backend = create_backend("kafka://127.0.0.1:1?channel=app.events&partitions=3"
                             "&linger_ms=0&max_message_size=500000")
    assert isinstance(backend, KafkaBackend)
    assert backend.topic == "app.events"
    assert backend.settings["partitions"] == 3
    assert backend.settings["linger_ms"] == 0
    assert backend.message_limit == 500000
    assert not backend.capabilities.direct


@pytest.mark.parametrize(("query", "option"), [
    ("partitions=0", "partitions"), ("replication_factor=x", "replication_factor"),
    ("linger_ms=-1", "linger_ms"), ("health_interval=0", "health_interval"),
    ("security_protocol=carrier-pigeon", "security_protocol"),
    ("channel=no%20spaces", "channel"),
])
def test_bad_option_values_name_the_option(query: str, option: str) -> None:
    with pytest.raises(ConfigurationError, match=repr(option)):
        create_backend(f"kafka://127.0.0.1:1?{query}")


def test_credentials_need_a_sasl_protocol() -> None:
    with pytest.raises(ConfigurationError, match="security_protocol"):
        create_backend("kafka://u:p@127.0.0.1:1")
    with pytest.raises(ConfigurationError, match="security_protocol"):
        create_backend("kafka://127.0.0.1:1?security_protocol=SASL_PLAINTEXT")
    backend = create_backend("kafka://u:p@127.0.0.1:1?security_protocol=sasl_plaintext")
    assert backend.settings["security_protocol"] == "SASL_PLAINTEXT"


def test_option_values_are_folded_to_upper_case() -> None:
    backend = create_backend("kafka://u:p@127.0.0.1:1?security_protocol=%20sasl_ssl%20"
                             "&sasl_mechanism=scram-sha-256")
    assert backend.settings["security_protocol"] == "SASL_SSL"
    assert backend.settings["sasl_mechanism"] == "SCRAM-SHA-256"
    with pytest.raises(ConfigurationError, match="'sasl_mechanism'"):
        create_backend("kafka://u:p@127.0.0.1:1?security_protocol=SASL_SSL"
                       "&sasl_mechanism=GSSAPI")


@pytest.mark.parametrize(("query", "match"), [
    ("ssl_cafile=/nonexistent/ca.pem", "bad TLS files"),
    ("ssl_keyfile=/nonexistent/key.pem", "needs its certificate"),
])
def test_bad_tls_files_are_configuration_errors(query: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        create_backend(f"kafka://127.0.0.1:1?security_protocol=SSL&{query}")


def test_tls_files_are_ignored_without_tls() -> None:
    create_backend("kafka://127.0.0.1:1?ssl_cafile=/nonexistent/ca.pem")


def test_kafka_errors_are_connection_errors() -> None:
    import aiokafka.errors  # type: ignore[import-untyped]

    errors = KafkaBackend.connection_errors
    for cls in (aiokafka.errors.KafkaConnectionError, aiokafka.errors.NodeNotReadyError,
                aiokafka.errors.RequestTimedOutError, aiokafka.errors.KafkaTimeoutError):
        assert issubclass(cls, errors)
    assert not issubclass(aiokafka.errors.MessageSizeTooLargeError, errors)


def test_target_header() -> None:
    assert target_of(None) is None
    assert target_of([("other", b"x")]) is None
    assert target_of([("other", b"x"), ("to", b"node-1")]) == b"node-1"


def test_what_every_node_reads_in_one_order_goes_to_the_first_partition() -> None:
    partitions = [0, 1, 2]
    assert partition_for(None, "me", partitions) == 0  # for every node
    assert partition_for("me", "me", partitions) == 0  # a node's markers to itself
    assert partition_for(None, "me", [3, 4]) == 3
    for target in ("me", "other", None):  # one partition: everything in it
        assert partition_for(target, "me", [0]) == 0


def test_records_for_one_node_spread_over_the_other_partitions_by_its_uid() -> None:
    partitions = [0, 1, 2, 3]
    uids = [f"node-{n}" for n in range(200)]
    chosen = {uid: partition_for(uid, "me", partitions) for uid in uids}
    assert set(chosen.values()) == {1, 2, 3}  # spread, never the first
    # the same node always gets the same partition, whoever sends to it
    assert all(partition_for(uid, "someone else", partitions) == chosen[uid]
               for uid in uids)


@dataclass
class Record:
    timestamp: int
    value: bytes


def test_partitions_are_merged_by_time_keeping_each_partitions_order() -> None:
    first = [Record(1, b"a1"), Record(5, b"a2"), Record(3, b"a3")]  # a clock step back
    second = [Record(2, b"b1"), Record(4, b"b2")]
    merged = [r.value for r in in_time_order([first, [], second])]
    assert merged == [b"a1", b"b1", b"b2", b"a2", b"a3"]
    assert [v for v in merged if v.startswith(b"a")] == [b"a1", b"a2", b"a3"]


def test_log_offsets_are_the_partition_offset_and_the_timestamp() -> None:
    backend = create_backend("kafka://127.0.0.1:1")
    backend.enable_log(None, 60.0, 1000)
    codec = backend.log_reader.codec
    assert codec.format((0, 1717171717171), 0) == "0-1717171717171.0"
    assert codec.parse("1041-1717171717171.0") == Offset((1041, 1717171717171), 0)
    assert codec.parse(codec.format((2**63 - 1, 5), 0)) == Offset((2**63 - 1, 5), 0)


@pytest.mark.parametrize("text", [
    "0-1717171717171",  # the format before offsets named an entry of a record
    "17.0", "9223372036854775808-1.0", "1-9223372036854775808.0",
])
def test_other_offsets_are_not_this_logs(text: str) -> None:
    backend = create_backend("kafka://127.0.0.1:1")
    backend.enable_log(None, 60.0, 1000)
    assert backend.log_reader.codec.parse(text) is None


def test_log_topic_defaults_to_the_channel_and_can_be_set() -> None:
    backend = create_backend("kafka://127.0.0.1:1?channel=app")
    assert isinstance(backend, KafkaBackend)
    assert backend.log_topic == "app.log"
    assert backend.capabilities.durable_log and not backend.capabilities.session_store
    other = create_backend("kafka://127.0.0.1:1?channel=app&log_topic=app-recovery")
    assert isinstance(other, KafkaBackend)
    assert other.log_topic == "app-recovery"


@pytest.mark.parametrize("query", ["channel=app&log_topic=app", "log_topic=no%20spaces",
                                   f"channel={'c' * 249}"])
def test_bad_log_topics_are_refused_when_the_log_is_enabled(query: str) -> None:
    backend = create_backend(f"kafka://127.0.0.1:1?{query}")
    with pytest.raises(ConfigurationError, match="log_topic"):
        backend.enable_log(None, 60.0, 1000)



def test_an_unknown_server_error_is_retried_for_a_while_then_refused() -> None:
    import aiokafka.errors

    from socketio_adapters.backends.kafka.core import UNKNOWN_ERROR_GRACE

    backend = create_backend("kafka://127.0.0.1:1")
    assert isinstance(backend, KafkaBackend)
    error: BaseException = aiokafka.errors.UnknownError()
    with pytest.raises(aiokafka.errors.KafkaConnectionError) as caught:
        backend._retry_unknown(error)  # tansu's answer for a moment after a restart
    assert isinstance(caught.value, backend.connection_errors)
    assert caught.value.__cause__ == error
    assert backend._unknown_since is not None
    backend._unknown_since -= UNKNOWN_ERROR_GRACE  # still answered after the grace
    backend._retry_unknown(error)  # no connection error: the caller raises the refusal
