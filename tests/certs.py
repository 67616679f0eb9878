"""Throwaway certificates for the TLS tests, made with the ``openssl`` command line
(Debian's ``openssl`` package; scripts/test.sh installs it if missing).

:func:`make_authority` makes a CA; :meth:`Authority.issue` a certificate it signs,
for a server (SAN ``127.0.0.1`` and ``localhost``) or a client. Keys are ECDSA P-256,
unencrypted, in PEM (PKCS#8), valid for two days.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Authority", "Issued", "make_authority", "openssl_available"]

_DAYS = "2"
_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_SERVER_EXTENSIONS = ("subjectAltName = IP:127.0.0.1, DNS:localhost\n"
                      "basicConstraints = critical, CA:FALSE\n"
                      "keyUsage = critical, digitalSignature, keyEncipherment\n"
                      "extendedKeyUsage = serverAuth\n")
_CLIENT_EXTENSIONS = ("basicConstraints = critical, CA:FALSE\n"
                      "keyUsage = critical, digitalSignature, keyEncipherment\n"
                      "extendedKeyUsage = clientAuth\n")


def openssl_available() -> bool:
    return shutil.which("openssl") is not None


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=30, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: "
                           f"{result.stderr.decode(errors='replace')[-500:]}")


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    """A certificate authority: ``cert`` is the CA file clients trust."""

    directory: Path
    name: str
    cert: Path
    key: Path

    def issue(self, name: str, server: bool = True) -> Issued:
        """A certificate signed by this CA: for a server (``127.0.0.1``,
        ``localhost``) or, with ``server=False``, for a client whose CN is ``name``."""
        base = self.directory / f"{self.name}-{name}"
        issued = Issued(base.with_suffix(".pem"), base.with_suffix(".key"))
        csr, extensions = base.with_suffix(".csr"), base.with_suffix(".ext")
        extensions.write_text(_SERVER_EXTENSIONS if server else _CLIENT_EXTENSIONS)
        _openssl("req", *_KEY, "-keyout", str(issued.key), "-out", str(csr),
                 "-subj", f"/CN={'localhost' if server else name}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey",
                 str(self.key), "-CAcreateserial", "-out", str(issued.cert), "-days", _DAYS,
                 "-extfile", str(extensions))
        return issued


def make_authority(directory: Path, name: str = "ca") -> Authority:
    """A self-signed CA in ``directory`` (files ``{name}.pem`` and ``{name}.key``)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", *_KEY, "-keyout", str(key), "-out", str(cert), "-days", _DAYS,
             "-subj", f"/CN=socketio-adapters test {name}",
             "-addext", "basicConstraints = critical, CA:TRUE",
             "-addext", "keyUsage = critical, keyCertSign, cRLSign")
    return Authority(directory, name, cert, key)
