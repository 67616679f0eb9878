"""Every error the library raises, in one place, so callers can catch them by class."""

from __future__ import annotations

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
    """A cluster request timed out; ``partial`` holds what arrived before the deadline."""

    def __init__(self, message: str, partial: list[Any]) -> None:
        super().__init__(message)
        self.partial = partial


class EmitFailed(AdapterError, ConnectionError):
    """An emitter's messages did not reach the broker: it refused them, or they were
    dropped from the buffer while it was unreachable."""


class EmitTimeout(EmitFailed, TimeoutError):
    """An emitter waited longer than its ``timeout`` for the broker to take its
    messages; they stay queued and are sent if the broker returns before ``close()``."""
