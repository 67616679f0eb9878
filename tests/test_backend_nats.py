"""The NATS backend's pure logic: subject escaping, URL parsing, options. No broker
here; the conformance suite runs it against a real nats-server."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

pytest.importorskip("nats")

import nats.errors

from socketio_adapters import ConfigurationError, create_backend, create_manager
from socketio_adapters.backends.base import LOG
from socketio_adapters.backends.nats import (
    NatsBackend,
    NatsServers,
    escape_token,
    log_entries,
    log_offset,
    name_token,
    pack_session,
    parse_offset,
    parse_url,
    unescape_token,
    unpack_session,
)
from socketio_adapters.chunks import pack_log_entries

AWKWARD = ["socketio", "a.b", "a%2Eb", "a*", "a>", ">", "*", "a b", "a\tb", "a\r\nb",
           "$SYS", "café", "ca%C3%A9", "日本", "%", "%%", "a_b", "a-b", "a/b", "a:b",
           "\U0001f600", "a\x00b", "x.all", "node", ".", ".."]


@pytest.mark.parametrize("text", AWKWARD)
def test_escaped_token_is_one_plain_ascii_token_and_reversible(text: str) -> None:
    token = escape_token(text)
    assert token.isascii() and token.isprintable()
    assert not set(token) & set(".*> \t\r\n$")
    assert unescape_token(token) == text
    assert escape_token(text) == token  # deterministic


def test_safe_characters_are_kept() -> None:
    assert escape_token("Chat_room-42") == "Chat_room-42"


def test_different_channels_never_share_a_subject() -> None:
    backends = [NatsBackend("nats://127.0.0.1:4222", channel=c) for c in AWKWARD]
    subjects = [s for b in backends for s in (b.broadcast_subject, b.node_subject("n1"))]
    assert len(set(subjects)) == len(subjects)
    for a, b in itertools.combinations(backends, 2):
        assert a.node_subject("x") != b.node_subject("x")


def test_subject_layout() -> None:
    backend = NatsBackend("nats://127.0.0.1:4222", channel="my.app")
    assert backend.broadcast_subject == "my%2Eapp.all"
    assert backend.node_subject("abc.d") == "my%2Eapp.node.abc%2Ed"
    # a node named "all" and the broadcast subject differ in depth
    assert backend.node_subject("all") != backend.broadcast_subject


@pytest.mark.parametrize("url, expected", [
    ("nats://127.0.0.1", NatsServers(("nats://127.0.0.1:4222",))),
    ("nats://127.0.0.1:4333/", NatsServers(("nats://127.0.0.1:4333",))),
    ("nats://h1:4222,h2:5222,h3", NatsServers(
        ("nats://h1:4222", "nats://h2:5222", "nats://h3:4222"))),
    ("tls://h1:4222, h2:4223", NatsServers(("tls://h1:4222", "tls://h2:4223"))),
    ("NATS://[::1]:4222,[fe80::1]", NatsServers(("nats://[::1]:4222", "nats://[fe80::1]:4222"))),
    ("nats://alice:s%40cret:x@h1:4222,h2:4222", NatsServers(
        ("nats://h1:4222", "nats://h2:4222"), user="alice", password="s@cret:x")),
    ("nats://bob:@h1", NatsServers(("nats://h1:4222",), user="bob", password="")),
    ("nats://t0k%2Fen@h1:4222", NatsServers(("nats://h1:4222",), token="t0k/en")),
])
def test_parse_url(url: str, expected: NatsServers) -> None:
    assert parse_url(url) == expected


def test_tls_scheme() -> None:
    assert parse_url("tls://h:4222").tls
    assert not parse_url("nats://h:4222").tls
    assert NatsBackend("tls://h:4222")._tls is not None
    assert NatsBackend("nats://h:4222")._tls is None


@pytest.mark.parametrize("url, message", [
    ("nats://", "empty host"),
    ("nats://h1:4222,,h2", "empty host"),
    ("nats://h1:4222,", "empty host"),
    ("nats://h1:port", "bad port"),
    ("nats://h1:", "bad port"),
    ("nats://h1:70000", "bad port"),
    ("nats://h1:0", "bad port"),
    ("nats://::1:4222", "brackets"),
    ("nats://[::1", "IPv6"),
    ("nats://[::1]x", "IPv6"),
    ("nats://h1:4222/sub.ject", "no path"),
    ("redis://h1", "not a NATS URL"),
])
def test_bad_urls_raise_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_url(url)


def test_password_is_not_in_the_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_url("nats://alice:hunter2@h1:nope")
    assert "hunter2" not in str(caught.value)


def test_scheme_picks_the_backend_and_options_reach_it() -> None:
    backend = create_backend("nats://127.0.0.1:4222,127.0.0.2:4222?name=node-a"
                             "&reconnect_time_wait=0.25&max_reconnect_attempts=-1"
                             "&dont_randomize=yes&channel=app")
    assert isinstance(backend, NatsBackend)
    assert backend.settings["name"] == "node-a"
    assert backend.settings["reconnect_time_wait"] == 0.25
    assert backend.settings["max_reconnect_attempts"] == -1
    assert backend.settings["dont_randomize"] is True
    assert backend.channel == "app"
    assert isinstance(create_backend("tls://127.0.0.1:4222"), NatsBackend)
    manager = create_manager("nats://127.0.0.1:4222?heartbeat_interval=2&ping_interval=5")
    assert isinstance(manager.backend, NatsBackend)
    assert manager.backend.settings["ping_interval"] == 5.0


@pytest.mark.parametrize("query, option", [
    ("name=", "name"),
    ("reconnect_time_wait=soon", "reconnect_time_wait"),
    ("reconnect_time_wait=0", "reconnect_time_wait"),
    ("max_reconnect_attempts=0", "max_reconnect_attempts"),
    ("max_reconnect_attempts=-2", "max_reconnect_attempts"),
    ("ping_interval=-1", "ping_interval"),
    ("max_outstanding_pings=1.5", "max_outstanding_pings"),
    ("pending_size=0", "pending_size"),
    ("publish_timeout=never", "publish_timeout"),
    ("dont_randomize=maybe", "dont_randomize"),
    ("tls_handshake_first=2", "tls_handshake_first"),
    ("queue=workers", "queue"),
])
def test_bad_options_name_the_option(query: str, option: str) -> None:
    with pytest.raises(ConfigurationError, match=f"'{option}'"):
        create_backend(f"nats://127.0.0.1:4222?{query}")


def test_key_without_certificate_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="tls_key_file"):
        create_backend("nats://127.0.0.1:4222?tls_key_file=/nonexistent.key")


def test_missing_tls_files_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="TLS"):
        create_backend("tls://127.0.0.1:4222?tls_ca_file=/nonexistent/ca.pem")


def test_declared_errors_and_capabilities() -> None:
    for error in (nats.errors.ConnectionClosedError, nats.errors.NoServersError,
                  nats.errors.OutboundBufferLimitError, nats.errors.UnexpectedEOF,
                  nats.errors.FlushTimeoutError, ConnectionError):
        assert issubclass(error, NatsBackend.connection_errors)
    caps = NatsBackend.capabilities
    assert caps.direct and caps.multi_process
    assert caps.max_payload is None  # chunking carries payloads over max_payload
    assert caps.durable_log and caps.session_store
    # a log entry over max_payload is dropped by the outbox, not retried for ever
    assert not issubclass(nats.errors.MaxPayloadError, NatsBackend.connection_errors)


@pytest.mark.parametrize("text", AWKWARD)
def test_name_token_is_a_valid_stream_and_bucket_name(text: str) -> None:
    token = name_token(text)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token) or (token == "" and text == "")
    assert name_token(text) == token


def test_name_tokens_never_collide() -> None:
    texts = {*AWKWARD, "_", "_5F", "a_2Eb", "a_b"}
    assert len({name_token(text) for text in texts}) == len(texts)
    assert name_token("Chat-42") == "Chat-42"
    assert name_token("my.app_x") == "my_2Eapp_5Fx"


def test_log_and_session_names() -> None:
    backend = NatsBackend("nats://127.0.0.1:4222", channel="my.app")
    assert backend.log_subject == "my%2Eapp.log"
    assert backend.log_stream == "my_2Eapp_log"
    assert backend.session_bucket == "my_2Eapp_sessions"
    names = set()
    for channel in AWKWARD:
        b = NatsBackend("nats://127.0.0.1:4222", channel=channel)
        names |= {b.log_stream, f"KV_{b.session_bucket}"}
        assert b.log_subject not in (b.broadcast_subject, b.node_subject("log"))
    assert len(names) == 2 * len(AWKWARD)


def test_a_channel_too_long_for_a_stream_name_is_refused() -> None:
    backend = NatsBackend("nats://127.0.0.1:4222", channel="é" * 50)
    with pytest.raises(ConfigurationError, match="too long"):
        backend.enable_log(None, 60, 100)
    NatsBackend("nats://127.0.0.1:4222", channel="a" * 240).enable_log(None, 60, 100)


def test_log_offsets_are_a_sequence_and_an_index() -> None:
    for seq in (1, 2, 41, 2**64 - 1):
        for index in (0, 1, 1023):
            assert parse_offset(log_offset(seq, index)) == (seq, index)
    assert log_offset(1, 0) == "1.0"
    assert log_offset(10, 12) == "10.12"
    # the index is only a syntax check here: whether it exists is for the stream
    assert parse_offset("1.5") == (1, 5)
    assert parse_offset("18446744073709551615.0") == (2**64 - 1, 0)


@pytest.mark.parametrize("text", [
    "", "0", "1", "42", "01", "-1", "+1", " 1", "1 ", "1-0", "1e3", "\x00", "ﾟ", "١٢",
    "²", "0.0", "01.0", "1.01", "1.-1", "1.+1", "1.", ".1", "1.0.0", "1..0", "1,0",
    "1.0 ", " 1.0", "1.0\n", "1.\u0661", "\u0661.0", "1.1234567", "1.²",
    "18446744073709551616.0", "9" * 21 + ".0",  # past a stream sequence (64 bits)
])
def test_anything_else_is_not_an_offset(text: str) -> None:
    assert parse_offset(text) is None


def test_a_stream_message_reads_as_its_entries() -> None:
    (frame, count), = pack_log_entries([b"\xc1\x02", b"", b"two"], 1024)
    assert count == 3
    assert log_entries({"Sio-Entries": "3"}, frame) == [b"\xc1\x02", b"", b"two"]
    # without the header a body is one entry, even one that looks like a frame
    assert log_entries(None, frame) == [frame]
    assert log_entries({"Nats-Msg-Id": "x"}, frame) == [frame]
    assert log_entries(None, b"plain") == [b"plain"]
    # a frame that does not hold what it announces is one entry, on every node
    for bad in ("2", "4", "1", "0", "-3", " 3", "3.0", "x", "٣", ""):
        assert log_entries({"Sio-Entries": bad}, frame) == [frame]
    assert log_entries({"Sio-Entries": "3"}, frame[:-1]) == [frame[:-1]]


def test_a_batch_frames_each_run_of_log_entries_in_place() -> None:
    backend = NatsBackend("nats://127.0.0.1:4222", channel="app")
    backend.enable_log(None, 60.0, 100)
    messages = backend._messages([(LOG, b"1"), (LOG, b"2"), (None, b"b"), (LOG, b"3"),
                                  ("node", b"d"), (LOG, b"4"), (LOG, b"5"), (LOG, b"6")])
    assert [(subject, headers) for subject, _, headers in messages] == [
        (None, {"Sio-Entries": "2"}), ("app.all", None), (None, None),
        ("app.node.node", None), (None, {"Sio-Entries": "3"})]
    assert messages[2][1] == b"3"
    assert log_entries(messages[4][2], messages[4][1]) == [b"4", b"5", b"6"]


def test_frames_respect_the_servers_max_payload() -> None:
    backend = NatsBackend("nats://127.0.0.1:4222", channel="app")
    backend.enable_log(None, 60.0, 100)
    backend.message_limit = 4096
    messages = backend._messages([(LOG, b"z" * 100)] * 500)
    assert len(messages) > 1
    assert all(len(payload) <= 4096 - 256 for _, payload, _ in messages)
    entries = [e for _, payload, headers in messages for e in log_entries(headers, payload)]
    assert entries == [b"z" * 100] * 500
    backend.message_limit = None  # before the first connection: frame_cap alone
    assert len(backend._messages([(LOG, b"z" * 100)] * 500)) == 1


async def test_read_log_refuses_bad_offsets_without_a_broker() -> None:
    backend = NatsBackend("nats://127.0.0.1:4222")
    backend.enable_log(None, 60.0, 100)
    assert await backend.read_log("garbage", "5.0") is None
    assert await backend.read_log("5", "5.0") is None  # an offset of the unframed log
    assert await backend.read_log("5.0", "7") is None
    assert await backend.read_log("5.0", None) is None
    # max_length messages or more behind: at least as many entries
    assert await backend.read_log("5.0", "105.0") is None
    assert await backend.read_log("5.3", "105.0") is None


def _live(backend: NatsBackend, fail_at: set[bytes]) -> list[tuple[str, bytes]]:
    delivered: list[tuple[str, bytes]] = []

    async def deliver(offset: str, payload: bytes) -> None:
        if payload in fail_at:
            fail_at.clear()
            raise RuntimeError("the manager failed")
        delivered.append((offset, payload))

    backend.enable_log(deliver, 60.0, 100)
    return delivered


async def test_the_live_reader_resumes_inside_a_message() -> None:
    backend = NatsBackend("nats://127.0.0.1:4222")
    delivered = _live(backend, set())
    backend._log_next = 4
    # a reader stopped after entry 4.1 (the connection dropped): the next one reads
    # message 4 again, and the reader it replaced may still hand it over too
    backend._log_skip = 2
    await backend._log_message(4, [b"a", b"b", b"c", b"d"])
    await backend._log_message(4, [b"a", b"b", b"c", b"d"])
    await backend._log_message(3, [b"old"])
    await backend._log_message(5, [b"e"])
    assert delivered == [("4.2", b"c"), ("4.3", b"d"), ("5.0", b"e")]
    assert backend.log_position == "5.0"
    assert (backend._log_next, backend._log_skip) == (6, 0)


async def test_the_live_reader_moves_its_position_before_each_entry() -> None:
    backend = NatsBackend("nats://127.0.0.1:4222")
    seen: list[Any] = []

    async def deliver(offset: str, payload: bytes) -> None:
        seen.append((offset, backend._log_next, backend._log_skip, backend.log_position))

    backend.enable_log(deliver, 60.0, 100)
    backend._log_next = 7
    await backend._log_message(7, [b"a", b"b"])
    assert seen == [("7.0", 7, 1, "7.0"), ("7.1", 7, 2, "7.1")]
    assert backend._seen_seq == 7


async def test_after_trimmed_messages_the_whole_next_one_is_delivered() -> None:
    backend = NatsBackend("nats://127.0.0.1:4222")
    delivered = _live(backend, {b"b"})  # a failing entry is logged and skipped
    backend._log_next, backend._log_skip = 4, 2  # message 4 was trimmed meanwhile
    await backend._log_message(9, [b"a", b"b", b"c"])
    assert delivered == [("9.0", b"a"), ("9.2", b"c")]
    assert (backend._log_next, backend._log_skip) == (10, 0)


def test_session_records_carry_their_expiry() -> None:
    record = pack_session(b"\x00data\xff", 1000.0)
    assert unpack_session(record, 999.0) == b"\x00data\xff"
    assert unpack_session(record, 1000.0) is None
    assert unpack_session(pack_session(b"", 10.0), 9.0) == b""
    assert unpack_session(b"short", 0.0) is None


def test_storage_option() -> None:
    assert NatsBackend("nats://h", storage="Memory").settings["storage"] == "memory"
    with pytest.raises(ConfigurationError, match="storage"):
        NatsBackend("nats://h", storage="disk")
