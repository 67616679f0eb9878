"""The Postgres connection string: the URL asyncpg connects with, and the libpq
parameters it accepts in its query, parsed by a table (a bad value names the
option; an unknown one is refused, since asyncpg would send it to the server as a
setting)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ...errors import ConfigurationError
from ...hosts import parse_port
from ...options import Option, choice, non_empty_str, text

__all__ = ["LIBPQ_OPTIONS", "libpq_dsn", "ports", "split_url"]

_TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")


def ports(value: Any) -> str:
    """A port number, or several, comma-separated (one per host)."""
    given = str(value)
    try:
        for part in given.split(","):
            parse_port(part, given)
    except ConfigurationError:
        raise ValueError("expected a port number (or several, comma-separated)") from None
    return given


LIBPQ_OPTIONS: tuple[Option, ...] = (
    Option("host", non_empty_str, None, "host(s) or Unix socket directory"),
    Option("port", ports, None, "port(s)"),
    Option("user", non_empty_str, None, "user name"),
    Option("password", text, None, "password"),
    Option("dbname", non_empty_str, None, "database name"),
    Option("database", non_empty_str, None, "database name"),
    Option("passfile", non_empty_str, None, "password file"),
    Option("service", non_empty_str, None, "service name in pg_service.conf"),
    Option("sslmode", choice("disable", "allow", "prefer", "require", "verify-ca",
                             "verify-full"), None, "TLS mode"),
    Option("sslcert", non_empty_str, None, "client certificate file"),
    Option("sslkey", non_empty_str, None, "client key file"),
    Option("sslrootcert", non_empty_str, None, "CA certificate file"),
    Option("sslcrl", non_empty_str, None, "certificate revocation list file"),
    Option("sslpassword", text, None, "password of the client key"),
    Option("sslnegotiation", choice("postgres", "direct"), None, "TLS negotiation"),
    Option("ssl_min_protocol_version", choice(*_TLS_VERSIONS), None, "oldest TLS version"),
    Option("ssl_max_protocol_version", choice(*_TLS_VERSIONS), None, "newest TLS version"),
    Option("target_session_attrs", choice("any", "primary", "standby", "prefer-standby",
                                          "read-write", "read-only"),
           None, "which of several hosts to use"),
    Option("krbsrvname", non_empty_str, None, "Kerberos service name"),
    Option("gsslib", choice("gssapi", "sspi"), None, "GSS library"),
    Option("application_name", text, "socketio-adapters", "shown in pg_stat_activity"),
)
"""The libpq parameters passed on to asyncpg (in the URL's query)."""


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its query, and the query as options."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"malformed postgres URL: {exc}") from None
    if parts.scheme.lower() not in ("postgres", "postgresql"):
        raise ConfigurationError(
            f"not a postgres URL: scheme {parts.scheme!r} (expected postgres:// or "
            "postgresql://)")
    hosts = parts.netloc.rpartition("@")[2]
    for host in hosts.split(","):
        port = host.rpartition("]")[2].partition(":")[2] if host.startswith("[") \
            else host.partition(":")[2]
        if port:
            parse_port(port, url)
    return urlunsplit(parts._replace(query="")), dict(parse_qsl(parts.query))


def libpq_dsn(base: str, settings: Mapping[str, Any]) -> str:
    """The URL asyncpg connects with: ``base`` (without a query) and the libpq
    parameters that are set in ``settings``, as its query."""
    query = {opt.name: str(settings[opt.name]) for opt in LIBPQ_OPTIONS
             if settings.get(opt.name) is not None}
    return urlunsplit(urlsplit(base)._replace(query=urlencode(query))) if query else base
