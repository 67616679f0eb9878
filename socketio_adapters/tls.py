"""TLS client contexts from the file options a URL names, with clear errors."""

from __future__ import annotations

import ssl

from .errors import ConfigurationError

__all__ = ["client_context"]


def client_context(where: str, cafile: str | None = None, certfile: str | None = None,
                   keyfile: str | None = None) -> ssl.SSLContext:
    """A client context that verifies the server (against ``cafile``, else the
    system's CA store), with a client certificate when ``certfile`` is given."""
    if keyfile and not certfile:
        raise ConfigurationError(f"{where}: a client key needs its certificate too")
    try:
        context = ssl.create_default_context(cafile=cafile)
        if certfile:
            context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"{where}: bad TLS files: {exc}") from None
    return context
