"""The Postgres backend's own parts, with no broker: names, notification texts, the
connection string and its options, and the offsets of its log (row ids).

No mock: the real LISTEN/NOTIFY path, the log and the session store are proven by
``conformance/``.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

pytest.importorskip("asyncpg")

from socketio_adapters import ConfigurationError, create_backend, create_manager
from socketio_adapters.backends.postgres import (
    MAX_IDENTIFIER,
    NOTIFY_LIMIT,
    PostgresBackend,
    advisory_key,
    decode_notification,
    encode_inline,
    encode_reference,
    encoded_size,
    pg_identifier,
    quote_identifier,
)
from socketio_adapters.storage import Offset

URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def test_short_names_are_kept() -> None:
    assert pg_identifier("socketio") == "socketio"
    assert pg_identifier("socketio#0123456789abcdef") == "socketio#0123456789abcdef"
    name = "x" * MAX_IDENTIFIER
    assert pg_identifier(name) == name


def test_long_names_fit_and_never_collide() -> None:
    prefix = "app-" + "y" * 70
    a, b = pg_identifier(prefix + "#node-a"), pg_identifier(prefix + "#node-b")
    assert a != b
    for name in (a, b):
        assert len(name.encode()) <= MAX_IDENTIFIER
        assert name.startswith("app-y")
    # the same on every node and in every version (nodes of a rolling upgrade must
    # LISTEN on the channels the others NOTIFY)
    assert a == "app-" + "y" * 42 + "~b5e0eae684d18536"


def test_truncation_keeps_valid_utf8() -> None:
    name = pg_identifier("é" * 40)  # 80 bytes, cut inside a two-byte character
    assert len(name.encode()) <= MAX_IDENTIFIER
    assert name.encode().decode() == name


def test_a_short_name_cannot_pose_as_a_shortened_one() -> None:
    long = "z" * 80
    shortened = pg_identifier(long)
    assert len(shortened.encode()) <= MAX_IDENTIFIER
    # a channel literally named like the shortened form is shortened in turn
    assert pg_identifier(shortened) != shortened


def test_identifiers_are_quoted() -> None:
    assert quote_identifier("socketio") == '"socketio"'
    assert quote_identifier('a"b') == '"a""b"'


@pytest.mark.parametrize("payload", [b"", b"\x00\xff", b"\x84\xa3uid", bytes(range(256)) * 7])
def test_inline_notifications_round_trip(payload: bytes) -> None:
    text = encode_inline(3, payload)
    assert text.isascii()
    assert encoded_size(3, payload) == len(text)
    assert decode_notification(text) == payload


def test_identical_payloads_of_one_batch_differ_on_the_wire() -> None:
    # Postgres folds identical notifications of one transaction into one
    assert encode_inline(0, b"same") != encode_inline(1, b"same")


def test_references() -> None:
    assert decode_notification(encode_reference(10, 123456789)) == 123456789


@pytest.mark.parametrize("text", ["hello", "", "1:not base64!", "1@12a", "zz:AAAA", "ü"])
def test_foreign_text_is_handed_on_as_bytes(text: str) -> None:
    # the manager logs and drops it as malformed
    assert decode_notification(text) == text.encode()


def test_inline_limit_is_below_the_notify_limit() -> None:
    fits = b"\x01" * 5990
    assert encoded_size(511, fits) < NOTIFY_LIMIT
    assert encoded_size(0, b"\x01" * 6000) >= NOTIFY_LIMIT


def test_channels_and_table_follow_the_channel_option() -> None:
    backend = create_backend(URL + "?channel=myapp")
    assert isinstance(backend, PostgresBackend)
    assert backend.broadcast_channel == "myapp"
    assert backend.node_channel("abc") == "myapp#abc"
    assert backend.table == "myapp_payloads"


def test_libpq_options_reach_asyncpg_and_ours_do_not() -> None:
    backend = create_backend(
        URL + "?channel=c&sslmode=require&payload_ttl=5&application_name=chat")
    assert isinstance(backend, PostgresBackend)
    parts = urlsplit(backend.dsn)
    assert parse_qs(parts.query) == {"sslmode": ["require"], "application_name": ["chat"]}
    assert parts.netloc == "postgres@127.0.0.1:5432" and parts.path == "/postgres"
    assert backend.payload_ttl == 5.0


def test_options_in_the_url_given_directly() -> None:
    backend = PostgresBackend("postgres://u:pw@h/db?ping_interval=2&sslmode=disable")
    assert backend.ping_interval == 2.0
    assert "sslmode=disable" in backend.dsn
    assert "ping_interval" not in backend.dsn


@pytest.mark.parametrize(("query", "option"), [
    ("sslmode=sometimes", "sslmode"),
    ("payload_ttl=-1", "payload_ttl"),
    ("ping_interval=soon", "ping_interval"),
    ("port=http", "port"),
    ("target_session_attrs=leader", "target_session_attrs"),
    ("frobnicate=1", "frobnicate"),
])
def test_bad_options_name_themselves(query: str, option: str) -> None:
    with pytest.raises(ConfigurationError, match=repr(option)):
        create_manager(f"{URL}?{query}")


def test_several_ports_reach_asyncpg() -> None:
    backend = PostgresBackend("postgresql://u@h1:5432,h2:5433/db?port=5432,5433")
    assert parse_qs(urlsplit(backend.dsn).query)["port"] == ["5432,5433"]
    assert urlsplit(backend.dsn).netloc == "u@h1:5432,h2:5433"


@pytest.mark.parametrize("port", ["0", "65536", "5432,", "\u0661", "5432,x"])
def test_bad_port_options_are_refused(port: str) -> None:
    with pytest.raises(ConfigurationError, match=r"'port'.*port number"):
        PostgresBackend(URL, port=port)


def test_bad_port_and_channel() -> None:
    with pytest.raises(ConfigurationError, match="port"):
        create_backend("postgresql://h:99999/db")
    with pytest.raises(ConfigurationError, match="'channel'"):
        create_backend(URL, channel="a\x00b")


def test_offsets_are_row_ids_and_an_index() -> None:
    backend = PostgresBackend(URL)
    backend.enable_log(None, 60.0, 500)
    codec = backend.log_reader.codec
    assert codec.parse("42.0") == Offset((42,), 0)
    assert codec.parse(f"{2**63 - 1}.0") == Offset((2**63 - 1,), 0)  # the largest bigint
    for other in ("42", "1-0.0", f"{2**63}.0", "01.0", "-1.0", "\u0661.0"):
        # "\u0661" is ARABIC-INDIC DIGIT ONE: str.isdigit() would accept it
        assert codec.parse(other) is None


def test_log_names_follow_the_channel_option() -> None:
    backend = create_backend(URL + "?channel=myapp")
    assert isinstance(backend, PostgresBackend)
    assert backend.log_table == "myapp_log"
    assert backend.log_channel == "myapp#log"
    assert backend.sessions_table == "myapp_sessions"
    assert backend.capabilities.durable_log and backend.capabilities.session_store
    long = PostgresBackend(URL, channel="c" * 80)
    for name in (long.log_table, long.log_channel, long.sessions_table):
        assert len(name.encode()) <= MAX_IDENTIFIER
    assert len({long.log_table, long.log_channel, long.sessions_table, long.table}) == 4


def test_the_append_lock_key_is_a_stable_bigint_per_table() -> None:
    # every node, of every version, takes the same lock: appends of a rolling upgrade
    # still commit in id order
    assert advisory_key("myapp_log") == -5313301944569997968
    assert advisory_key("socketio_log") == 3525618183909930813
    assert advisory_key("other_log") != advisory_key("myapp_log")
