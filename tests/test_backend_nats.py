"""The NATS backend's own parts, with no broker: subject and stream names, URL
parsing, options, and what a batch turns into on the wire. The conformance suite runs
it (its log and session store included) against a real nats-server."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import pytest

pytest.importorskip("nats")

import nats.errors

from socketio_adapters import ConfigurationError, create_backend, create_manager
from socketio_adapters.backends.base import LOG, Outgoing
from socketio_adapters.backends.nats import (
    NatsBackend,
    NatsServers,
    escape_token,
    name_token,
    parse_url,
    unescape_token,
)
from socketio_adapters.framing import unpack_frame
from socketio_adapters.storage import Offset, entries_of

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
    subjects = [s for b in backends for s in (b.names.broadcast_subject, b.node_subject("n1"))]
    assert len(set(subjects)) == len(subjects)
    for a, b in itertools.combinations(backends, 2):
        assert a.node_subject("x") != b.node_subject("x")


def test_subject_layout() -> None:
    backend = NatsBackend("nats://127.0.0.1:4222", channel="my.app")
    assert backend.subject(None) == "my%2Eapp.all"
    assert backend.node_subject("abc.d") == "my%2Eapp.node.abc%2Ed"
    assert backend.subject("abc.d") == backend.node_subject("abc.d")
    assert backend.subject(LOG) == "my%2Eapp.log"
    # a node named "all" and the broadcast subject differ in depth
    assert backend.node_subject("all") != backend.subject(None)


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
    assert NatsBackend("tls://h:4222").tls is not None
    assert NatsBackend("nats://h:4222").tls is None
    assert NatsBackend("nats://h:4222", tls_handshake_first=True).tls is not None


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
    # chunking carries payloads over the server's max_payload, within the client's
    # pending bytes (64 MiB): conformance/test_payload.py measures it
    assert caps.max_payload == 32 * 1024 * 1024
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
    assert backend.names.log_subject == "my%2Eapp.log"
    assert backend.names.log_stream == "my_2Eapp_log"
    assert backend.names.session_bucket == "my_2Eapp_sessions"
    names = set()
    for channel in AWKWARD:
        b = NatsBackend("nats://127.0.0.1:4222", channel=channel)
        names |= {b.names.log_stream, f"KV_{b.names.session_bucket}"}
        assert b.names.log_subject not in (b.subject(None), b.node_subject("log"))
    assert len(names) == 2 * len(AWKWARD)


def test_a_channel_too_long_for_a_stream_name_is_refused() -> None:
    backend = NatsBackend("nats://127.0.0.1:4222", channel="é" * 50)
    with pytest.raises(ConfigurationError, match="too long"):
        backend.enable_log(None, 60, 100)
    NatsBackend("nats://127.0.0.1:4222", channel="a" * 240).enable_log(None, 60, 100)


def test_log_offsets_are_a_stream_sequence_and_an_index() -> None:
    backend = NatsBackend("nats://127.0.0.1:4222")
    backend.enable_log(None, 60.0, 100)
    codec = backend.log_reader.codec
    assert codec.format((10,), 12) == "10.12"
    assert codec.parse("18446744073709551615.0") == Offset((2**64 - 1,), 0)
    for text in ("18446744073709551616.0", "1-0.0", "7"):  # past 64 bits; not NATS's
        assert codec.parse(text) is None


class _Wire(NatsBackend):
    """Records what ``send`` hands to ``publish``."""

    def __init__(self) -> None:
        super().__init__("nats://127.0.0.1:4222", channel="app")
        self.batches: list[list[Outgoing]] = []
        self.enable_log(None, 60.0, 100)

    async def publish(self, batch: Sequence[Outgoing]) -> None:
        self.batches.append(list(batch))


async def test_a_batch_packs_each_run_of_log_entries_into_one_record() -> None:
    backend = _Wire()
    await backend.send([(LOG, b"1"), (LOG, b"2"), (None, b"b"), (LOG, b"3"),
                        ("node", b"d"), (LOG, b"4"), (LOG, b"5"), (LOG, b"6")])
    (batch,) = backend.batches
    assert [(backend.subject(target), entries_of(body)) for target, body in batch] == [
        ("app.log", [b"1", b"2"]), ("app.all", [b"b"]), ("app.log", [b"3"]),
        ("app.node.node", [b"d"]), ("app.log", [b"4", b"5", b"6"])]
    assert batch[2][1] == b"3"  # a lone entry travels as itself
    # a record of several entries is a frame: its body alone tells them apart
    assert unpack_frame(batch[4][1]) == [b"4", b"5", b"6"]


async def test_log_records_fit_the_servers_max_payload() -> None:
    backend = _Wire()
    backend.message_limit = 4096
    await backend.send([(LOG, b"z" * 100)] * 500)
    (batch,) = backend.batches
    assert len(batch) > 1
    assert all(target == LOG and len(body) <= 4096 for target, body in batch)
    assert [e for _, body in batch for e in entries_of(body)] == [b"z" * 100] * 500
    backend.message_limit = None  # before the first connection: frame_cap alone
    await backend.send([(LOG, b"z" * 100)] * 500)
    assert len(backend.batches[1]) == 1


def test_storage_option() -> None:
    assert NatsBackend("nats://h", storage="Memory").settings["storage"] == "memory"
    with pytest.raises(ConfigurationError, match="storage"):
        NatsBackend("nats://h", storage="disk")
