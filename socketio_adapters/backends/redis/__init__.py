"""Redis backend: pub/sub (or sharded pub/sub), a stream for the durable log, keys
with an expiry for sessions. The design is in docs/backends/redis.md.

Features
    Every node subscribes to ``{channel}`` (broadcasts) and ``{channel}#{node uid}``
    (what is addressed to it), with ``sharded=true`` through SPUBLISH/SSUBSCRIBE
    (Redis 7). Publishing is pipelined and written in raw RESP on connections redis-py
    opened. After a lost connection the listener reconnects with the shared backoff
    and subscribes again. For connection state recovery (Redis 6.2+): the log is the
    stream ``{channel}#log`` (one XADD per entry, trimmed by length and age; offsets
    ``ms-seq.0`` from the entry IDs), followed with XREAD BLOCK; sessions are keys
    ``{channel}#session#{pid}`` written with ``SET ... PX`` and taken with GETDEL.

Connection string
    ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS) or
    ``unix:///path/to/redis.sock[?db=N]``; for a Redis Cluster
    ``redis+cluster://host:port,host:port[/0]`` (:mod:`.cluster`).

Per-room subscriptions (``subscriptions=rooms``)
    A room key is the channel ``<channel>#r#<key>`` (``{channel}#r#<key>`` on
    redis+cluster: the app's hash slot, so one sharded subscriber connection keeps
    the order), SUBSCRIBEd (SSUBSCRIBE when ``sharded``) on the listener's connection;
    a join returns on Redis's reply. Every key is subscribed again on reconnect.

Options
    ``channel`` and ``connect_timeout`` (see the base backend), ``sharded`` (default
    ``false``), ``ping_interval`` (default ``5`` seconds: a subscriber connection
    silent that long is sent a PING, checked every half interval, and one that does
    not answer within another interval is dropped and reconnected: a half-open
    connection is noticed within 10 to 13 s), and redis-py's own
    connection options: ``db``, ``socket_timeout``,
    ``socket_connect_timeout``, ``socket_keepalive``, ``health_check_interval``,
    ``max_connections``, ``retry_on_timeout``, ``ssl_cert_reqs``,
    ``ssl_check_hostname``, ``timeout``; for ``rediss``, ``tls_ca_file``,
    ``tls_cert_file``, ``tls_key_file`` (:mod:`socketio_adapters.tls`; redis-py's
    ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` are aliases).
"""

from .core import RedisBackend
from .log import keep_length, previous_id, xadd, xadd_head
from .resp import RawConnection, command

__all__ = ["RawConnection", "RedisBackend", "command", "keep_length", "previous_id",
           "xadd", "xadd_head"]
