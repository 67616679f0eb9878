"""The AMQP backend's own logic: URLs, options, names, errors. No broker here: the
conformance suite runs it against a real RabbitMQ."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any

import aiormq.exceptions
import pytest

from socketio_adapters import ConfigurationError, create_backend, create_manager
from socketio_adapters.backends.amqp import (
    AmqpBackend,
    log_entries,
    log_offset,
    stream_arguments,
    stream_offset,
)
from socketio_adapters.backends.base import LOG, BrokerUnavailable
from socketio_adapters.chunks import pack_log_entries


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
    query = backend._connect_url.query
    assert query["heartbeat"] == "0" and query["name"] == "node-a"
    assert "prefetch" not in query and "confirm" not in query  # ours, not aiormq's


def test_options_go_to_the_broker_url_but_the_password_stays_out_of_names() -> None:
    backend = _backend("amqps://user:secret@broker:5671/vhost?cafile=/ca.pem")
    url = backend._connect_url
    assert (url.scheme, url.host, url.port, url.path) == ("amqps", "broker", 5671, "/vhost")
    assert url.query["cafile"] == "/ca.pem"
    assert "secret" not in backend.broadcast_exchange + backend.direct_exchange


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


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="'prefech'"):
        create_manager("amqp://127.0.0.1/?prefech=10")


def test_reserved_channel_prefix_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="'channel'"):
        create_backend("amqp://127.0.0.1/?channel=amq.app")


def test_names_follow_the_channel() -> None:
    backend = _backend("amqp://127.0.0.1/", channel="chat")
    assert backend.broadcast_exchange == "chat"
    assert backend.direct_exchange == "chat#nodes"
    assert backend.node_queue("abc", 2) == "chat#abc.2"
    assert backend.node_queue("abc", 2) != backend.node_queue("abc", 3)
    assert backend.log_stream == "chat#log"
    assert backend.session_queue("pid-1") == "chat#session#pid-1"
    # no node queue (uid + "." + attempt) can take the name of the log or a session
    assert backend.log_stream not in {backend.node_queue("log", n) for n in range(3)}


def test_log_offsets_are_stream_offsets_plus_one_and_an_index() -> None:
    for n in (0, 1, 41, 2**63 - 2):
        for index in (0, 1, 1023):
            assert stream_offset(log_offset(n, index)) == (n, index)
    assert log_offset(0, 0) == "1.0"
    assert log_offset(9, 12) == "10.12"
    # the index is only a syntax check here: whether it exists is for the stream
    assert stream_offset("1.5") == (0, 5)


@pytest.mark.parametrize("text", [
    "", "0", "1", "-1", "+1", "01", "1e3", " 1", "1 ", "\x00", "ﾟ", "²", "\u0661",
    "1-0", "0-0", "0.0", "01.0", "1.01", "1.-1", "1.", ".1", "1.0.0", "1..0", "1,0",
    "1.0 ", " 1.0", "1.0\n", "1.\u0661", "\u0661.0", "1.1234567",
    "99999999999999999999.0", f"{2**63 + 1}.0",  # past a stream offset (signed 64 bits)
])
def test_anything_else_is_not_an_offset(text: str) -> None:
    assert stream_offset(text) is None


def test_a_stream_message_reads_as_its_entries() -> None:
    (frame, count), = pack_log_entries([b"\xc1\x02", b"", b"two"], 1024)
    assert log_entries({"sio-entries": count}, frame) == [b"\xc1\x02", b"", b"two"]
    # without the header a body is one entry, even one that looks like a frame
    assert log_entries({"sio-time": 1}, frame) == [frame]
    assert log_entries(None, b"plain") == [b"plain"]
    # a frame that does not hold what it announces is one entry, on every node
    assert log_entries({"sio-entries": 2}, frame) == [frame]
    assert log_entries({"sio-entries": True}, frame) == [frame]
    assert log_entries({"sio-entries": 3}, frame[:-1]) == [frame[:-1]]
    assert log_entries({"sio-marker": "t"}, b"") is None


def test_a_batch_frames_each_run_of_log_entries_in_place() -> None:
    backend = _backend("amqp://127.0.0.1/", channel="app")
    backend.enable_log(None, 60.0, 100)
    messages = backend._messages([(LOG, b"1"), (LOG, b"2"), (None, b"b"), (LOG, b"3"),
                                  ("node", b"d"), (LOG, b"4"), (LOG, b"5"), (LOG, b"6")])
    routes = [(exchange, key) for exchange, key, _, _ in messages]
    assert routes == [("", "app#log"), ("app", ""), ("", "app#log"),
                      ("app#nodes", "node"), ("", "app#log")]
    counts = [(props.headers or {}).get("sio-entries") if props else None
              for _, _, _, props in messages]
    assert counts == [2, None, None, None, 3]
    assert messages[2][2] == b"3"
    without_log = _backend("amqp://127.0.0.1/")
    with pytest.raises(RuntimeError, match="enable_log"):
        without_log._messages([(LOG, b"x")])


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


async def test_read_log_refuses_bad_offsets_without_a_broker() -> None:
    backend = _backend("amqp://127.0.0.1/")
    backend.enable_log(None, 60.0, 100)
    assert await backend.read_log("garbage", "5.0") is None
    assert await backend.read_log("5", "5.0") is None  # an offset of the unframed log
    assert await backend.read_log("5.0", None) is None
    assert await backend.read_log("5.0", "garbage") is None
    # more than max_length messages behind: at least as many entries
    assert await backend.read_log("5.0", "105.0") is None
    assert await backend.read_log("206.0", "105.0") is None  # far ahead


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


def _stream_message(offset: int, headers: dict[str, object], body: bytes) -> Any:
    properties = SimpleNamespace(headers={"x-stream-offset": offset, **headers})
    return SimpleNamespace(header=SimpleNamespace(properties=properties), body=body)


async def test_a_reader_that_stops_in_a_frame_resumes_after_its_position() -> None:
    delivered: list[tuple[str, bytes]] = []
    fail_at = {b"c"}

    async def deliver(offset: str, payload: bytes) -> None:
        if payload in fail_at:
            fail_at.clear()
            raise ConnectionResetError("lost while delivering")
        delivered.append((offset, payload))

    backend = _backend("amqp://127.0.0.1/")
    backend.enable_log(deliver, 60.0, 100)
    backend._log_next = 4
    (frame, count), = pack_log_entries([b"a", b"b", b"c", b"d"], 1024)
    message = _stream_message(4, {"sio-entries": count}, frame)
    with pytest.raises(ConnectionResetError):
        await backend._log_entry(message)
    assert backend.log_position == "5.2"  # handed over when the connection broke
    # the reconnected reader reads that message again and skips what it delivered
    await backend._log_entry(message)
    await backend._log_entry(_stream_message(5, {"sio-marker": "t"}, b""))
    await backend._log_entry(_stream_message(6, {}, b"e"))
    assert delivered == [("5.0", b"a"), ("5.1", b"b"), ("5.3", b"d"), ("7.0", b"e")]
    assert backend.log_position == "7.0"
    assert (backend._log_next, backend._log_skip) == (7, 0)


async def test_a_reader_after_trimmed_messages_delivers_the_whole_next_one() -> None:
    delivered: list[str] = []

    async def deliver(offset: str, payload: bytes) -> None:
        delivered.append(offset)

    backend = _backend("amqp://127.0.0.1/")
    backend.enable_log(deliver, 60.0, 100)
    backend._log_next, backend._log_skip = 4, 2  # message 4 was trimmed meanwhile
    (frame, count), = pack_log_entries([b"a", b"b", b"c"], 1024)
    await backend._log_entry(_stream_message(9, {"sio-entries": count}, frame))
    assert delivered == ["10.0", "10.1", "10.2"]
