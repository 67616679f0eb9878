"""What the AMQP backend names on the broker: its exchanges, queues and stream, the
headers of its log messages, and the URL aiormq connects to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from yarl import URL

from ...errors import ConfigurationError

__all__ = ["MARKER_HEADER", "MAX_MESSAGE_SIZE", "OFFSET_HEADER", "PASS_THROUGH",
           "QUEUE_NAME_LIMIT", "TIME_HEADER", "TLS_ALIASES", "AmqpNames", "connect_url"]

MAX_MESSAGE_SIZE = 128 * 1024 * 1024
"""RabbitMQ's default ``max_message_size`` (134217728 bytes since 3.8)."""
QUEUE_NAME_LIMIT = 255
"""Longest queue name (in UTF-8 bytes) RabbitMQ takes."""

OFFSET_HEADER = "x-stream-offset"
"""Where RabbitMQ puts a stream delivery's offset (0, 1, 2, ... with no gaps), and
the consume argument that says where to start."""
TIME_HEADER = "sio-time"
"""When a log record was appended, in milliseconds since the epoch (for ``retention``)."""
MARKER_HEADER = "sio-marker"
"""Set on the marker a listener appends to find the end of the log: a marker takes a
stream offset but is no record of the log."""

PASS_THROUGH = ("name",)
"""Options passed to aiormq in the URL's query."""
TLS_ALIASES = ("cafile", "certfile", "keyfile")
"""aiormq's names of the TLS files (see :mod:`socketio_adapters.tls`)."""


@dataclass(frozen=True)
class AmqpNames:
    """The names of one channel's exchanges, queues and log stream."""

    channel: str

    def __post_init__(self) -> None:
        if self.channel.startswith("amq."):
            raise ConfigurationError(
                f"bad value {self.channel!r} for option 'channel' of amqp backend: "
                "names starting with 'amq.' are reserved by the broker")

    @property
    def broadcast_exchange(self) -> str:
        """The fanout exchange of broadcasts."""
        return self.channel

    @property
    def direct_exchange(self) -> str:
        """The direct exchange of payloads for one node (routing key: its uid)."""
        return f"{self.channel}#nodes"

    @property
    def log_stream(self) -> str:
        """The stream queue of the durable log."""
        return f"{self.channel}#log"

    def node_queue(self, uid: str, attempt: int) -> str:
        """A fresh name per connection: the queue of a connection the broker has not
        yet seen die (a half-open socket) cannot lock the new one out."""
        return f"{self.channel}#{uid}.{attempt}"

    def session_queue(self, pid: str) -> str:
        """The queue that holds the session record of ``pid``."""
        return f"{self.channel}#session#{pid}"


def room_routing_key(key: str) -> str:
    """The routing key, on the direct exchange, of one room's broadcasts (``r.`` and
    the room key: never a node uid, which is hex alone)."""
    return f"r.{key}"


def connect_url(url: str, heartbeat: int, passed: Mapping[str, Any]) -> URL:
    """The URL aiormq connects to: ``url`` with the heartbeat and the options passed
    through (those that are set) in its query, and none of this backend's own."""
    query = {"heartbeat": str(heartbeat)}
    query.update({name: str(value) for name, value in passed.items()
                  if value is not None})
    return URL(url).update_query(query)
