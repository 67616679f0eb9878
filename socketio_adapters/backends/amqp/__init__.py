"""AMQP 0-9-1 backend (RabbitMQ) through aio-pika.

Features
    Broadcasts go to a fanout exchange, ``{channel}``; payloads for one node go to a
    direct exchange, ``{channel}#nodes``, with the node's uid as routing key. Each node
    consumes from its own exclusive, auto-delete queue, bound to both, declared anew
    on every connection (a broker restart included). Publishing has its own
    connection; a batch is written without waiting per message and followed by one
    round trip (or publisher confirms), so ``publish`` returns once the broker has
    routed it all. Connection state recovery: the durable log is a stream queue,
    ``{channel}#log`` (one stream message per record, consecutive entries packed; an
    offset is ``"{stream offset + 1}.{index}"``), and each saved session is a queue,
    ``{channel}#session#{pid}``, holding one message that expires with it. The design
    in full: ``docs/backends/amqp.md``.

Connection string
    ``amqp://[user[:password]@]host[:port][/vhost]`` or ``amqps://...`` (TLS). The
    default vhost is ``/`` (an empty path, or ``%2F``).

Per-room subscriptions (``subscriptions=rooms``)
    A room's broadcast goes to the direct exchange with routing key ``r.<key>``; a
    node binds its queue to the keys of its rooms (a join returns on bind-ok) and
    binds every key on its new queue after a reconnect. Broadcasts to everyone still
    go through the fanout exchange.

Options
    ``channel`` and ``connect_timeout`` (see the base backend; the channel must not
    start with ``amq.``, which RabbitMQ reserves); ``prefetch`` (default ``1000``)
    unacknowledged deliveries per node; ``confirm`` (default ``false``) publisher
    confirms; ``heartbeat`` (default ``20`` seconds, ``0`` disables it), which also
    bounds how long the broker keeps the queue of a node whose host vanished without
    closing its socket; ``log_max_bytes`` (default 1 GiB) size cap of the log stream,
    for recovery; ``name`` (the connection name RabbitMQ shows, passed to aiormq);
    and for ``amqps``, ``tls_ca_file``, ``tls_cert_file``, ``tls_key_file``
    (:mod:`socketio_adapters.tls`; aiormq's ``cafile``, ``certfile``, ``keyfile`` are
    aliases), ``capath`` and ``no_verify_ssl``, from which the backend builds the
    ``SSLContext`` it gives aio-pika.
"""

from .connection import ConnectionLost, PublishRefused
from .core import AmqpBackend, WireMessage
from .log import record_key, stream_arguments
from .naming import MAX_MESSAGE_SIZE, AmqpNames

__all__ = ["MAX_MESSAGE_SIZE", "AmqpBackend", "AmqpNames", "ConnectionLost",
           "PublishRefused", "WireMessage", "record_key", "stream_arguments"]
