"""TLS for every backend: the options that name the files, the client context built
from them (with clear errors), and how a failed certificate verification is told
from other connection errors.

Every backend takes the same three options, ``tls_ca_file``, ``tls_cert_file`` and
``tls_key_file``; a backend also accepts its client library's own names for them
(``ssl_ca_certs`` for Redis, ``cafile`` for AMQP, ``ssl_cafile`` for Kafka,
``sslrootcert`` for Postgres, ...), as aliases.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError
from .options import Option, non_empty_str

__all__ = ["TLS_OPTIONS", "TlsFiles", "alias_options", "client_context", "tls_files",
           "verification_failure"]

TLS_OPTIONS: tuple[Option, ...] = (
    Option("tls_ca_file", non_empty_str, None,
           "CA certificates (PEM) that verify the broker (default: the system's)"),
    Option("tls_cert_file", non_empty_str, None, "client certificate (PEM)"),
    Option("tls_key_file", non_empty_str, None, "client certificate's key (PEM)"),
)
"""The TLS options every backend takes (see the module doc)."""
_COMMON = tuple(opt.name for opt in TLS_OPTIONS)


@dataclass(frozen=True)
class TlsFiles:
    """The files a URL names for TLS; all ``None`` when it names none."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def given(self) -> bool:
        return any((self.ca_file, self.cert_file, self.key_file))

    def context(self, where: str) -> ssl.SSLContext:
        return client_context(where, self.ca_file, self.cert_file, self.key_file)

    def named(self, names: tuple[str, str, str]) -> dict[str, str]:
        """The files that are set, under a client library's names for the CA, the
        certificate and the key."""
        files = (self.ca_file, self.cert_file, self.key_file)
        return {name: file for name, file in zip(names, files, strict=True)
                if file is not None}


def alias_options(aliases: tuple[str, str, str]) -> tuple[Option, ...]:
    """Options named as a client library names the three files, aliases of
    :data:`TLS_OPTIONS` (resolve them with :func:`tls_files`)."""
    return tuple(Option(alias, non_empty_str, None, f"alias of {common.name}")
                 for alias, common in zip(aliases, TLS_OPTIONS, strict=True))


def tls_files(settings: Mapping[str, Any], where: str,
              aliases: tuple[str, str, str] | None = None) -> TlsFiles:
    """The TLS files of ``settings`` (resolved against a table with
    :data:`TLS_OPTIONS`), where ``aliases`` are the client library's own names of the
    CA, certificate and key options; one file named twice, differently, is refused."""
    found: list[str | None] = []
    for index, name in enumerate(_COMMON):
        value = settings.get(name)
        alias = aliases[index] if aliases else None
        other = settings.get(alias) if alias else None
        if value is not None and other is not None and value != other:
            raise ConfigurationError(
                f"{where}: options {name!r} and {alias!r} name the same file "
                f"differently ({value!r}, {other!r}): give one")
        found.append(value if value is not None else other)
    files = TlsFiles(*found)
    if files.key_file and not files.cert_file:
        raise ConfigurationError(
            f"{where}: a client key (option {_COMMON[2]!r}) needs its certificate too "
            f"(option {_COMMON[1]!r})")
    return files


def client_context(where: str, cafile: str | None = None, certfile: str | None = None,
                   keyfile: str | None = None, capath: str | None = None,
                   verify: bool = True) -> ssl.SSLContext:
    """A client context that verifies the server (against ``cafile``/``capath``, else
    the system's CA store; not at all with ``verify=False``), with a client
    certificate when ``certfile`` is given."""
    if keyfile and not certfile:
        raise ConfigurationError(f"{where}: a client key needs its certificate too")
    try:
        context = ssl.create_default_context(cafile=cafile, capath=capath)
        if certfile:
            context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"{where}: bad TLS files: {exc}") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


_VERIFY_FAILED = "CERTIFICATE_VERIFY_FAILED"
"""OpenSSL's reason, in the text of a verification failure a library re-raised as
its own error without the original."""


def verification_failure(exc: BaseException) -> str | None:
    """Why the broker's certificate failed verification, when ``exc`` (or an error
    it was raised from, or carries) says so; ``None`` for any other error."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        error = pending.pop()
        if id(error) in seen or len(seen) > 20:
            continue
        seen.add(id(error))
        if isinstance(error, ssl.SSLCertVerificationError):
            return error.verify_message or str(error)
        if _VERIFY_FAILED in str(error):
            return str(error)
        pending.extend(e for e in (error.__cause__, error.__context__) if e is not None)
        pending.extend(a for a in error.args if isinstance(a, BaseException))
    return None
