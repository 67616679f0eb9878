"""Every error the library raises, in one place, so callers can catch them by class."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class AdapterError(Exception):
    """Base class of every error raised by socketio-adapters."""


class ConfigurationError(AdapterError, ValueError):
    """A bad URL, an unknown scheme, or a bad option value."""


class MissingDependency(AdapterError, ImportError):
    """The client library of a backend is not installed; the message names the extra."""


class MalformedMessage(AdapterError):
    """Bytes from the broker that are not a well-formed cluster message."""


class PayloadTooLarge(AdapterError, ValueError):
    """A message is larger than the backend can carry."""


class NotStarted(AdapterError, RuntimeError):
    """A cluster operation was called on a manager that has not been started."""


class ClusterTimeout(AdapterError, TimeoutError):
    """A cluster request timed out; ``partial`` holds what the nodes that answered
    sent before the deadline, ``silent`` the uids of the nodes that did not answer in
    full (unreachable, partitioned from the broker, or too slow)."""

    def __init__(self, message: str, partial: list[Any],
                 silent: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.partial = partial
        self.silent = list(silent)


class EmitFailed(AdapterError, ConnectionError):
    """An emitter's messages did not reach the broker: it refused them, or they were
    dropped from the buffer while it was unreachable."""


class OutboxFull(EmitFailed):
    """An emit found the outbox over its bounds (``max_buffer`` messages or
    ``max_buffer_bytes`` bytes waiting for the broker) for longer than
    ``buffer_timeout``: it was not queued. The broker is unreachable, or slower than
    the emitters."""


class EmitTimeout(EmitFailed, TimeoutError):
    """An emitter waited longer than its ``timeout`` for the broker to take its
    messages; they stay queued and are sent if the broker returns before ``close()``."""
