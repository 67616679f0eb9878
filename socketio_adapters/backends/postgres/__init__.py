"""Postgres backend: LISTEN/NOTIFY through asyncpg, large payloads through a table,
and tables for the durable log and the session store of connection state recovery.
The design is in docs/backends/postgres.md.

Features
    Every node LISTENs on ``{channel}`` (broadcasts) and ``{channel}#{node uid}``
    (what is addressed to it) on one connection, watched by a termination callback
    and a ``SELECT 1`` after ``ping_interval`` seconds of silence; when it drops, the
    shared backoff reconnects and LISTENs again. Names over 63 bytes are shortened
    with a hash, never to a shared name. A payload travels base64-encoded in the
    NOTIFY; one that would reach 8000 bytes goes through the table
    ``{channel}_payloads`` and only its row id is notified. A batch is one statement
    (one transaction with large payloads) on a second connection. Durable log: the
    table ``{channel}_log``, one row per entry, offsets ``"{id}.0"``, appends
    serialized by an advisory lock and announced on ``{channel}#log``; sessions: the
    table ``{channel}_sessions``.

Connection string
    ``postgres://[user[:password]@][host][:port][/database][?option=value&...]`` or
    ``postgresql://...``; several hosts as ``host1:5432,host2:5432``, a Unix socket
    directory as ``postgresql:///db?host=/var/run/postgresql``.

Per-room subscriptions (``subscriptions=rooms``)
    A room key is the channel ``<channel>#r#<key>`` (shortened to 63 bytes like every
    name), LISTENed on the listening connection by its own task; a join returns once
    LISTEN completed. A new listening connection LISTENs to every key before it is
    ready.

Options
    ``channel`` and ``connect_timeout`` (see the base backend; ``channel`` also names
    the tables, in the first schema of the ``search_path``); ``payload_ttl`` (default
    ``60`` seconds); ``ping_interval`` (default ``5`` seconds); ``application_name``
    (default ``socketio-adapters``); and the libpq parameters asyncpg reads from a
    URL, passed to it: ``host``, ``port``, ``user``, ``password``,
    ``dbname``/``database``, ``passfile``, ``service``, ``sslmode``, ``sslcert``,
    ``sslkey``, ``sslrootcert``, ``sslcrl``, ``sslpassword``, ``sslnegotiation``,
    ``ssl_min_protocol_version``, ``ssl_max_protocol_version``,
    ``target_session_attrs``, ``krbsrvname``, ``gsslib``; and ``tls_ca_file``,
    ``tls_cert_file``, ``tls_key_file`` (:mod:`socketio_adapters.tls`), passed to
    asyncpg as ``sslrootcert``, ``sslcert``, ``sslkey``.
"""

from .core import PostgresBackend
from .naming import MAX_IDENTIFIER, advisory_key, pg_identifier, quote_identifier
from .notify import (
    NOTIFY_LIMIT,
    decode_notification,
    encode_inline,
    encode_reference,
    encoded_size,
)
from .url import LIBPQ_OPTIONS, libpq_dsn, split_url

__all__ = ["LIBPQ_OPTIONS", "MAX_IDENTIFIER", "NOTIFY_LIMIT", "PostgresBackend",
           "advisory_key", "decode_notification", "encode_inline", "encode_reference",
           "encoded_size", "libpq_dsn", "pg_identifier", "quote_identifier", "split_url"]
