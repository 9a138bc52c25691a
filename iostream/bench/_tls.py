"""A certificate for the tls-bulk workload, made at run time, and the contexts that use it.

The standard library cannot make a certificate, so the harness uses
``trustme`` when it is importable (it is in the ``test`` extra), else the
``openssl`` command when it is on ``PATH``, else it skips tls-bulk and says
why. Every peer gets the same server context; the sender trusts the CA and
checks the host name ``localhost``.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: The name the certificate is issued for and the sender checks.
HOSTNAME = "localhost"


@dataclass(frozen=True)
class CertFiles:
    """PEM files: the server's chain and key, and the CA the client trusts."""

    cert: str
    key: str
    ca: str


def make_cert(directory: Path) -> CertFiles | str:
    """Write a certificate for ``localhost`` under *directory*; return it, or why not."""
    try:
        return _with_trustme(directory)
    except ImportError:
        pass
    if shutil.which("openssl"):
        return _with_openssl(directory)
    return "no certificate: neither trustme nor the openssl command is available"


def _with_trustme(directory: Path) -> CertFiles:
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert(HOSTNAME, "127.0.0.1")
    files = CertFiles(
        str(directory / "cert.pem"), str(directory / "key.pem"), str(directory / "ca.pem")
    )
    server.private_key_pem.write_to_path(files.key)
    with open(files.cert, "wb") as out:
        for blob in server.cert_chain_pems:
            out.write(blob.bytes())
    ca.cert_pem.write_to_path(files.ca)
    return files


def _with_openssl(directory: Path) -> CertFiles | str:
    cert, key = directory / "cert.pem", directory / "key.pem"
    command = [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-subj",
        f"/CN={HOSTNAME}",
        "-addext",
        f"subjectAltName=DNS:{HOSTNAME},IP:127.0.0.1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode:
        return f"no certificate: openssl req failed: {done.stderr.strip()[:200]}"
    return CertFiles(str(cert), str(key), str(cert))


def server_context(files: CertFiles) -> ssl.SSLContext:
    """Return the server-side context every peer uses."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    return context


def client_context(files: CertFiles) -> ssl.SSLContext:
    """Return the sender's context: verifies the CA and the host name."""
    return ssl.create_default_context(cafile=files.ca)
