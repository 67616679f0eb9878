"""The ``connection_state_recovery`` settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError

__all__ = ["RecoveryOptions", "RecoverySetting"]


@dataclass(frozen=True)
class RecoveryOptions:
    """``connection_state_recovery`` settings (socket.io's names, in seconds).

    :param max_disconnection_duration: how long a lost session can be restored.
    :param skip_middlewares: restore without calling the connect handler again
        (python-socketio's connect handler plays the part of socket.io's
        middlewares); with ``False`` it runs for a restored socket too, may refuse it,
        and can tell it apart with ``AsyncServer.recovered(sid)``.
    :param max_log_length: entries the durable log keeps at most; a client further
        behind gets a fresh session.
    :param max_log_age: seconds an entry stays in the log; a client whose last event
        is older gets a fresh session (default: an hour, at least twice the window).
    :param log_cache_bytes: bytes of the log records a node read last that it keeps
        in memory (at most half of ``max_log_length`` entries, for at most half of
        ``max_log_age``), so that a restore whose missed events are all there reads
        them from memory instead of the broker; ``0`` turns it off.
    """

    max_disconnection_duration: float = 120.0
    skip_middlewares: bool = True
    max_log_length: int = 10_000
    max_log_age: float | None = None
    log_cache_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        if not self.max_disconnection_duration > 0:
            raise ConfigurationError("max_disconnection_duration must be > 0 seconds")
        if self.max_log_length < 1:
            raise ConfigurationError("max_log_length must be at least 1")
        if self.max_log_age is not None and not self.max_log_age > 0:
            raise ConfigurationError("max_log_age must be > 0 seconds")
        if self.log_cache_bytes < 0:
            raise ConfigurationError("log_cache_bytes must be >= 0")

    @property
    def log_age(self) -> float:
        if self.max_log_age is not None:
            return self.max_log_age
        return max(3600.0, 2 * self.max_disconnection_duration)

    @classmethod
    def coerce(cls, value: RecoveryOptions | Mapping[str, Any] | bool | None
               ) -> RecoveryOptions | None:
        """Accept an instance, a dict of socket.io-style options, ``True`` (the
        defaults) or ``None``/``False`` (off). Node's camelCase keys work too."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ConfigurationError(
                f"connection_state_recovery must be a dict or True, not {value!r}")
        known = {"max_disconnection_duration", "skip_middlewares", "max_log_length",
                 "max_log_age", "log_cache_bytes"}
        camel = {"maxDisconnectionDuration": "max_disconnection_duration",
                 "skipMiddlewares": "skip_middlewares"}
        options: dict[str, Any] = {}
        for key, item in value.items():
            name = camel.get(key, key)
            if name not in known:
                raise ConfigurationError(
                    f"unknown connection_state_recovery option {key!r}; known: "
                    + ", ".join(sorted(known)))
            options[name] = item
        if "maxDisconnectionDuration" in value:  # socket.io counts milliseconds
            options["max_disconnection_duration"] = value["maxDisconnectionDuration"] / 1000
        return cls(**options)


RecoverySetting = RecoveryOptions | Mapping[str, Any] | bool | None
"""What ``connection_state_recovery`` accepts (see :meth:`RecoveryOptions.coerce`)."""
