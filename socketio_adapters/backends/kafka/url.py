"""The Kafka connection string: bootstrap servers and SASL credentials."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ...errors import ConfigurationError
from ...hosts import HostPort, parse_hosts
from ...options import redact

__all__ = ["DEFAULT_PORT", "Credentials", "parse_bootstrap", "parse_servers"]

DEFAULT_PORT = 9092


@dataclass(frozen=True)
class Credentials:
    """SASL credentials from the URL (percent-decoded)."""

    username: str
    password: str


def parse_servers(url: str) -> tuple[list[HostPort], Credentials | None]:
    """The bootstrap servers and the SASL credentials of a ``kafka://`` URL."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed kafka URL: {exc}") from None
    if parts.scheme.lower() != "kafka":
        raise ConfigurationError(f"not a kafka:// URL: {redact(url)!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigurationError(
            "a kafka URL is kafka://host[:port][,host2[:port2]...]; the topic is the "
            f"'channel' option, not a path (got {redact(url)!r})")
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    credentials = None
    if at:
        user, colon, password = userinfo.partition(":")
        if not user or not colon:
            raise ConfigurationError("kafka URL credentials must be user:password@")
        credentials = Credentials(unquote(user), unquote(password))
    return parse_hosts(hostlist, DEFAULT_PORT, url), credentials


def parse_bootstrap(url: str) -> tuple[list[str], Credentials | None]:
    """``host:port`` strings (IPv6 hosts in brackets) and the SASL credentials of a
    ``kafka://`` URL."""
    hosts, credentials = parse_servers(url)
    return [host.netloc for host in hosts], credentials
