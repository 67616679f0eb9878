"""The AMQP backend's own logic: URLs, options, names, errors. No broker here: the
conformance suite runs it against a real RabbitMQ."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Sequence

import aiormq.exceptions
import pytest

from socketio_adapters import ConfigurationError, create_backend, create_manager
from socketio_adapters.backends.amqp import (
    AmqpBackend,
    AmqpNames,
    record_key,
    stream_arguments,
)
from socketio_adapters.backends.base import LOG, BrokerUnavailable, Outgoing
from socketio_adapters.storage import entries_of


def _backend(url: str, **options: object) -> AmqpBackend:
    backend = create_backend(url, **options)
    assert isinstance(backend, AmqpBackend)
    return backend


def test_schemes_pick_the_amqp_backend() -> None:
    for url in ("amqp://guest:guest@127.0.0.1:5672/", "amqps://u:p@broker:5671/vhost",
                "AMQP://127.0.0.1"):
        assert isinstance(create_backend(url), AmqpBackend)


def test_defaults() -> None:
    backend = _backend("amqp://127.0.0.1/")
    assert backend.prefetch == 1000
    assert backend.confirm is False
    assert backend.settings["heartbeat"] == 20
    assert backend.capabilities.direct
    assert backend.capabilities.max_payload == 128 * 1024 * 1024
    assert backend.capabilities.durable_log and backend.capabilities.session_store
    assert backend.settings["log_max_bytes"] == 1 << 30


def test_query_options_and_keywords() -> None:
    backend = _backend("amqp://127.0.0.1/?prefetch=50&confirm=yes&heartbeat=0&channel=app",
                       name="node-a")
    assert (backend.prefetch, backend.confirm, backend.channel) == (50, True, "app")
    query = backend.connect_url.query
    assert query["heartbeat"] == "0" and query["name"] == "node-a"
    assert "prefetch" not in query and "confirm" not in query  # ours, not aiormq's


def test_options_go_to_the_broker_url_but_the_password_stays_out_of_names() -> None:
    backend = _backend("amqps://user:secret@broker:5671/vhost?name=n1")
    url = backend.connect_url
    assert (url.scheme, url.host, url.port, url.path) == ("amqps", "broker", 5671, "/vhost")
    assert url.query["name"] == "n1"
    assert backend.tls is not None and backend.tls.verify_mode == ssl.CERT_REQUIRED
    names = backend.names
    assert "secret" not in names.broadcast_exchange + names.direct_exchange


@pytest.mark.parametrize(("option", "value"), [
    ("prefetch", "0"), ("prefetch", "many"), ("prefetch", True), ("confirm", "maybe"),
    ("heartbeat", "-1"), ("heartbeat", "70000"), ("heartbeat", "soon"),
    ("log_max_bytes", "0"), ("log_max_bytes", "lots"),
])
def test_bad_values_name_the_option(option: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=repr(option)):
        create_backend("amqp://127.0.0.1/", **{option: value})
    with pytest.raises(ConfigurationError, match=repr(option)):
        create_manager(f"amqp://127.0.0.1/?{option}={value}")


@pytest.mark.parametrize("query", ["cafile=/nonexistent/ca.pem",
                                   "tls_ca_file=/nonexistent/ca.pem"])
def test_tls_files_are_checked_when_the_backend_is_made(query: str) -> None:
    with pytest.raises(ConfigurationError, match="amqp backend: bad TLS files"):
        create_backend(f"amqps://127.0.0.1/?{query}")


def test_tls_options_need_amqps() -> None:
    with pytest.raises(ConfigurationError, match="amqps://"):
        create_backend("amqp://127.0.0.1/?no_verify_ssl=1")
    assert _backend("amqp://127.0.0.1/").tls is None
    unverified = _backend("amqps://127.0.0.1/?no_verify_ssl=1").tls
    assert unverified is not None and unverified.verify_mode == ssl.CERT_NONE


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="'prefech'"):
        create_manager("amqp://127.0.0.1/?prefech=10")


def test_reserved_channel_prefix_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="'channel'"):
        create_backend("amqp://127.0.0.1/?channel=amq.app")


def test_names_follow_the_channel() -> None:
    names = _backend("amqp://127.0.0.1/", channel="chat").names
    assert names == AmqpNames("chat")
    assert names.broadcast_exchange == "chat"
    assert names.direct_exchange == "chat#nodes"
    assert names.node_queue("abc", 2) == "chat#abc.2"
    assert names.node_queue("abc", 2) != names.node_queue("abc", 3)
    assert names.log_stream == "chat#log"
    assert names.session_queue("pid-1") == "chat#session#pid-1"
    # no node queue (uid + "." + attempt) can take the name of the log or a session
    assert names.log_stream not in {names.node_queue("log", n) for n in range(3)}


def test_a_log_record_is_a_stream_message_keyed_by_its_offset_plus_one() -> None:
    assert record_key({"x-stream-offset": 0, "sio-time": 1}) == (1,)
    assert record_key({"x-stream-offset": 41}) == (42,)
    # a marker takes a stream offset but is no record; nor is a message without one
    assert record_key({"x-stream-offset": 7, "sio-marker": "t"}) is None
    assert record_key({"sio-time": 1}) is None
    assert record_key({"x-stream-offset": True}) is None
    assert record_key(None) is None
    backend = _backend("amqp://127.0.0.1/")
    backend.enable_log(None, 60.0, 100)
    codec = backend.log_reader.codec
    key = record_key({"x-stream-offset": 9})
    assert key is not None and codec.format(key, 12) == "10.12"
    # the largest stream offset RabbitMQ gives (signed 64 bits) still makes an offset
    largest = record_key({"x-stream-offset": 2**63 - 2})
    assert largest is not None and codec.parse(codec.format(largest, 0)) is not None


async def test_a_batch_packs_each_run_of_log_entries_into_one_stream_message(
        monkeypatch: pytest.MonkeyPatch) -> None:
    backend = _backend("amqp://127.0.0.1/", channel="app")
    backend.enable_log(None, 60.0, 100)
    published: list[list[Outgoing]] = []

    async def publish(batch: Sequence[Outgoing]) -> None:
        published.append(list(batch))

    monkeypatch.setattr(backend, "publish", publish)
    before = int(time.time() * 1000)
    await backend.send([(LOG, b"1"), (LOG, b"2"), (None, b"b"), (LOG, b"3"),
                        ("node", b"d"), (LOG, b"4"), (LOG, b"\xc1\x02"), (LOG, b"")])
    messages = backend.messages(published[0])
    routes = [(exchange, key) for exchange, key, _, _ in messages]
    assert routes == [("", "app#log"), ("app", ""), ("", "app#log"),
                      ("app#nodes", "node"), ("", "app#log")]
    assert [body for _, key, body, _ in messages if key != "app#log"] == [b"b", b"d"]
    records = [(body, props) for _, key, body, props in messages if key == "app#log"]
    assert [entries_of(body) for body, _ in records] == [
        [b"1", b"2"], [b"3"], [b"4", b"\xc1\x02", b""]]
    for _, props in records:  # the append time, and no count: the body tells it
        assert props is not None and set(props.headers or {}) == {"sio-time"}
        stamp = (props.headers or {})["sio-time"]
        assert isinstance(stamp, int) and before <= stamp <= time.time() * 1000
    assert all(props is None for _, key, _, props in messages if key != "app#log")
    without_log = _backend("amqp://127.0.0.1/")
    with pytest.raises(RuntimeError, match="enable_log"):
        without_log.messages([(LOG, b"x")])


def test_stream_arguments_follow_the_log_settings() -> None:
    arguments = stream_arguments(retention=120.0, max_bytes=64 << 20)
    assert arguments == {"x-queue-type": "stream", "x-max-age": "120s",
                         "x-max-length-bytes": 64 << 20,
                         "x-stream-max-segment-size-bytes": 8 << 20}
    # RabbitMQ takes whole seconds; a segment is never below 1 MiB
    small = stream_arguments(retention=0.2, max_bytes=1000)
    assert small["x-max-age"] == "1s"
    assert small["x-stream-max-segment-size-bytes"] == 1 << 20
    assert stream_arguments(1.5, 1 << 30)["x-max-age"] == "2s"


def test_connection_errors_cover_the_client_library() -> None:
    errors = AmqpBackend.connection_errors
    for exc in (aiormq.exceptions.AMQPConnectionError("x"),
                aiormq.exceptions.ConnectionClosed(320, "forced"),
                aiormq.exceptions.ChannelInvalidStateError("closed"),
                ConnectionResetError(), TimeoutError()):
        assert isinstance(exc, errors)
    # a refused message is not a lost connection: the outbox must not retry it forever
    assert not isinstance(aiormq.exceptions.ChannelPreconditionFailed("too big"), errors)


async def test_publish_before_start_is_a_connection_error() -> None:
    backend = _backend("amqp://127.0.0.1/")
    with pytest.raises(AmqpBackend.connection_errors):
        await backend.publish([(None, b"x")])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_start_without_a_broker_fails_after_connect_timeout() -> None:
    backend = _backend(f"amqp://guest:guest@127.0.0.1:{_closed_port()}/",
                       connect_timeout=0.5)
    with pytest.raises(BrokerUnavailable, match="guest:\\*\\*\\*@"):
        await backend.start("node", _ignore)
    assert not backend.started and not backend.state.connected


async def test_publish_without_a_broker_is_a_connection_error() -> None:
    backend = _backend(f"amqp://127.0.0.1:{_closed_port()}/", connect_timeout=0.5)
    await backend.start("emitter", None)  # an emitter connects on its first publish
    try:
        with pytest.raises(AmqpBackend.connection_errors):
            await backend.publish([(None, b"x")])
    finally:
        await backend.stop()
        await backend.stop()  # idempotent


async def _ignore(payload: bytes) -> None:
    pass
