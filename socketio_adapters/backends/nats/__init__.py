"""NATS backend: core NATS subjects through nats-py; JetStream for recovery. The
design is in docs/backends/nats.md.

Features
    Every node subscribes (plainly, never in a queue group) to ``{channel}.all`` and
    to its own ``{channel}.node.{node uid}``, the channel and uid escaped (``%XX``
    for anything outside ``[A-Za-z0-9_-]``). A batch is handed to nats-py's buffer,
    then one PING/PONG round trip confirms the server routed it. nats-py reconnects
    by itself and subscribes again; when it gives up, the shared supervisor connects
    from scratch. Payloads over the server's ``max_payload`` travel in chunks. For
    connection state recovery (``nats-server -js``): the log is the JetStream stream
    ``{name}_log`` on ``{channel}.log`` (one message per record, packed entries;
    offsets ``"{seq}.{index}"``), followed through an ephemeral push consumer;
    sessions live in the key-value bucket ``{name}_sessions``.

Connection string
    ``nats://[user:password@|token@]host[:port][,host[:port]...]`` or ``tls://...``
    (IPv6 in brackets, port 4222 by default; the credentials apply to every server).

Per-room subscriptions (``subscriptions=rooms``)
    A room key is the subject ``<channel>.r.<key>``, subscribed on the listener's
    connection; a join returns once the server answered a PING written after the
    SUB (nats-py's own ``flush()`` can write its PING ahead of the SUB: see
    ``link.written``). nats-py restores the subscriptions when it reconnects; a new
    connection subscribes every key before it is ready.

Options
    ``channel`` and ``connect_timeout`` (see the base backend), ``publish_timeout``
    (default ``5`` s), ``storage`` (``file`` or ``memory``) and ``replicas`` (default
    ``1``) for the stream and the bucket, and nats-py's own: ``name``,
    ``reconnect_time_wait``, ``max_reconnect_attempts`` (``-1``: for ever),
    ``ping_interval``, ``max_outstanding_pings``, ``pending_size``,
    ``dont_randomize``, ``tls_ca_file``, ``tls_cert_file``, ``tls_key_file``,
    ``tls_hostname``, ``tls_handshake_first``.
"""

from .core import NatsBackend
from .naming import NatsNames, NatsServers, escape_token, name_token, parse_url, unescape_token

__all__ = ["NatsBackend", "NatsNames", "NatsServers", "escape_token", "name_token",
           "parse_url", "unescape_token"]
