"""Kafka backend: one topic that every node reads in full, through aiokafka. The
design is in docs/backends/kafka.md.

Features
    All nodes share one topic, named after ``channel``, created when missing. Every
    node reads every partition by manual assignment (no consumer group), from the end
    of the log when it starts. A node's records carry its uid as key; records for
    every node, and a node's records to itself, go to the topic's first partition
    (one order for all nodes, whatever ``partitions`` is), and a payload for one other
    node goes to one of the other partitions, chosen by its uid, with a ``to`` header
    that the others drop unread (``capabilities.direct`` is false). Payloads over
    ``max_message_size`` go in chunks. Every ``health_interval`` the listener checks
    the broker and its topics over a connection of its own, and subscribes again
    when they changed. Durable log (connection state recovery): the topic
    ``log_topic`` with one partition, one record per entry, offsets
    ``"<partition offset>-<timestamp ms>.0"``; sessions are kept in the log.

What it cannot: per-room subscriptions (``subscriptions=rooms``)
    A Kafka consumer reads whole partitions; a node would have to read a topic per
    room (topics are heavy: metadata, files, a creation round trip per room, and no
    order across topics) or read everything and filter, which is what it does
    already. ``capabilities.routes_rooms`` is false and ``subscriptions=rooms``
    raises ConfigurationError when the manager is built.

Connection string
    ``kafka://[user:password@]host[:port][,host2[:port2]...]`` (bootstrap servers,
    port 9092 by default, IPv6 hosts in brackets; credentials percent-encoded, for
    SASL).

Options
    ``channel`` and ``connect_timeout`` (see the base backend); ``partitions``,
    ``replication_factor`` (when the topic is created), ``linger_ms``,
    ``max_message_size``, ``health_interval``, ``request_timeout_ms``,
    ``fetch_max_wait_ms``, ``client_id``, ``security_protocol``, ``sasl_mechanism``,
    ``tls_ca_file``, ``tls_cert_file``, ``tls_key_file`` (:mod:`socketio_adapters.tls`;
    aiokafka's ``ssl_cafile``, ``ssl_certfile``, ``ssl_keyfile`` are aliases),
    ``log_topic`` (default: the channel followed by ``.log``).
"""

from .core import TARGET_HEADER, KafkaBackend, in_time_order, partition_for, target_of
from .topics import TopicChanged
from .url import DEFAULT_PORT, Credentials, parse_bootstrap, parse_servers

__all__ = ["DEFAULT_PORT", "TARGET_HEADER", "Credentials", "KafkaBackend", "TopicChanged",
           "in_time_order", "parse_bootstrap", "parse_servers", "partition_for", "target_of"]
