"""The TLS options every broker backend takes, their aliases, and how a failed
certificate verification is told from other errors (no broker needed)."""

from __future__ import annotations

import ssl

import pytest

from socketio_adapters import ConfigurationError, create_backend
from socketio_adapters.backends.postgres import PostgresBackend
from socketio_adapters.tls import tls_files, verification_failure

MISSING = "/nonexistent/ca.pem"


@pytest.mark.parametrize("url", [
    "rediss://127.0.0.1:1/0", "amqps://127.0.0.1:1/", "tls://127.0.0.1:1",
    "kafka://127.0.0.1:1?security_protocol=SSL", "postgresql://127.0.0.1:1/db",
])
def test_every_broker_backend_takes_the_same_ca_option(url: str) -> None:
    joiner = "&" if "?" in url else "?"
    with pytest.raises(ConfigurationError, match="bad TLS files"):
        create_backend(f"{url}{joiner}tls_ca_file={MISSING}")


@pytest.mark.parametrize(("url", "alias"), [
    ("rediss://127.0.0.1:1/0", "ssl_ca_certs"), ("amqps://127.0.0.1:1/", "cafile"),
    ("kafka://127.0.0.1:1?security_protocol=SSL", "ssl_cafile"),
    ("postgresql://127.0.0.1:1/db", "sslrootcert"),
])
def test_the_client_library_names_are_aliases(url: str, alias: str) -> None:
    joiner = "&" if "?" in url else "?"
    with pytest.raises(ConfigurationError, match="bad TLS files"):
        create_backend(f"{url}{joiner}{alias}={MISSING}")
    with pytest.raises(ConfigurationError, match=f"'tls_ca_file' and '{alias}'"):
        create_backend(f"{url}{joiner}{alias}=/a.pem&tls_ca_file=/b.pem")


def test_postgres_passes_the_files_to_asyncpg_by_their_libpq_names() -> None:
    backend = PostgresBackend("postgresql://u:pw@127.0.0.1:1/db?sslmode=verify-full",
                              tls_cert_file="/c.pem", tls_key_file="/k.pem",
                              sslpassword="x")
    dsn = backend.dsn
    assert "sslcert=%2Fc.pem" in dsn and "sslkey=%2Fk.pem" in dsn
    assert "tls_" not in dsn


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0?tls_ca_file=/a.pem",
                                 "amqp://127.0.0.1:1/?tls_ca_file=/a.pem"])
def test_tls_files_need_a_tls_scheme(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"need an? (rediss|amqps)://"):
        create_backend(url)


def test_a_key_needs_its_certificate() -> None:
    with pytest.raises(ConfigurationError, match="needs its certificate"):
        tls_files({"tls_key_file": "/k.pem"}, "x backend")


def test_a_verification_failure_is_found_where_libraries_put_it() -> None:
    cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] no")
    cause.verify_message = "unable to get local issuer certificate"
    wrapped = ConnectionError("could not connect")
    wrapped.__cause__ = cause
    assert verification_failure(wrapped) == "unable to get local issuer certificate"
    assert verification_failure(OSError(1, "x", cause)) is not None  # in its args
    # redis-py and aiormq keep only the text
    assert verification_failure(ConnectionError(
        "Error 1 connecting. [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"))
    assert verification_failure(ssl.SSLError("WRONG_VERSION_NUMBER")) is None
    assert verification_failure(ConnectionRefusedError(111, "refused")) is None
