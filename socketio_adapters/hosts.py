"""Host lists in broker URLs: ``host[:port][,host[:port]...]``, IPv6 in brackets.

One parser for every backend whose URL may name several servers (NATS, Kafka,
Postgres), so that they accept and refuse the same things with the same errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigurationError
from .options import redact

__all__ = ["HostPort", "parse_hosts", "parse_port"]


@dataclass(frozen=True)
class HostPort:
    host: str
    """The host name or address (an IPv6 address without its brackets)."""
    port: int

    @property
    def netloc(self) -> str:
        """``host:port``, an IPv6 address in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_port(text: str, url: str) -> int:
    """A port number 1-65535 written in ASCII digits."""
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise ConfigurationError(f"bad port {text!r} in {redact(url)}")
    return int(text)


def _one(item: str, default_port: int | None, url: str) -> tuple[str, int | None]:
    port_text: str | None = None
    if item.startswith("["):
        end = item.find("]")
        host, rest = item[1:end], item[end + 1:]
        if end < 2 or (rest and not rest.startswith(":")):
            raise ConfigurationError(f"bad IPv6 address {item!r} in {redact(url)}")
        if rest:
            port_text = rest[1:]
    else:
        host, sep, after = item.partition(":")
        if ":" in after:
            raise ConfigurationError(
                f"bad host {item!r} in {redact(url)}: write IPv6 addresses in brackets")
        if sep:
            port_text = after
    if not host:
        raise ConfigurationError(f"empty host in {redact(url)}")
    return host, default_port if port_text is None else parse_port(port_text, url)


def parse_hosts(hosts: str, default_port: int, url: str) -> list[HostPort]:
    """The servers of a comma-separated host list (the netloc after any
    credentials); ``url`` is only named, redacted, in errors."""
    out = []
    for item in hosts.split(","):
        host, port = _one(item.strip(), default_port, url)
        out.append(HostPort(host, port if port is not None else default_port))
    return out
