"""TLS policy (issue 6, item 4): safe by default, bad certificates never get through.

* A client verifies the certificate and the host name by default: the
  context built for ``ssl_options=None`` or a dict (without ``cert_reqs``)
  has ``CERT_REQUIRED`` and ``check_hostname``; with ``None`` the system
  trust store is used, so a private CA's certificate is refused.
* Expired, not-yet-valid, wrong-host and untrusted certificates (trustme)
  are refused — with the library's dict context and with a user's
  ``SSLContext`` — with :class:`ssl.SSLCertVerificationError` (and its
  OpenSSL verify code) in ``error``; the connect callback never runs, and
  the application data written before the handshake never reaches the
  server. The same client accepts a valid certificate (the control).
* TLS 1.2 is the minimum: every context built here has
  ``minimum_version >= TLSv1_2``; a server limited to TLS 1.1 is refused by
  the library's default clients (while a client that opts into TLS 1.1
  reaches it: the control, where this OpenSSL still speaks TLS 1.1), and a
  TLS 1.1-only client is refused by a TCPServer built from a dict.
* A server whose dict asks for client certificates refuses a client without one.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from _load_helpers import suite_pollers
from _stream_helpers import TLSFiles, Waiter, tls_fixture  # noqa: F401  (fixture)

from iostream import IOLoop, IOStream, SSLIOStream, TCPServer
from iostream.stream import make_ssl_context

#: TLS policy does not depend on the poller: the best one of this run.
POLLER = suite_pollers()[0]

# OpenSSL verify codes (X509_V_ERR_*), as ssl.SSLCertVerificationError.verify_code.
CERT_NOT_YET_VALID = 9
CERT_HAS_EXPIRED = 10
UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
HOSTNAME_MISMATCH = 62
IP_ADDRESS_MISMATCH = 64


@pytest.fixture
def loop() -> Any:
    """An IOLoop on the best poller, closed with its fds at the end."""
    io_loop = IOLoop(POLLER)
    yield io_loop
    io_loop.close(all_fds=True)


@dataclass
class Attempt:
    """What happened when a client tried to talk to a TLS server."""

    connected: bool = False
    client_error: BaseException | None = None
    reply: bytes | None = None
    server_received: list[bytes] = field(default_factory=list)
    server_errors: list[BaseException | None] = field(default_factory=list)


def attempt(
    io_loop: IOLoop,
    server_options: ssl.SSLContext | dict[str, Any],
    client_options: ssl.SSLContext | dict[str, Any] | None,
    server_hostname: str | None = "localhost",
) -> Attempt:
    """Connect an SSLIOStream client to a TCPServer; send a line; wait for the end.

    The client writes its line at once, before the handshake: it must reach
    the server only if the handshake succeeds.
    """
    result = Attempt()
    server_closed = Waiter(io_loop)

    def handle(stream: IOStream, address: Any) -> None:
        def on_line(line: bytes) -> None:
            result.server_received.append(line)
            stream.write(b"reply: " + line)

        def on_close() -> None:
            result.server_errors.append(stream.error)
            server_closed.done()

        stream.set_close_callback(on_close)
        stream.read_until(b"\n", on_line)

    server = TCPServer(handle, io_loop=io_loop, ssl_options=server_options)
    port = server.listen(0)
    client = SSLIOStream(socket.socket(), ssl_options=client_options, io_loop=io_loop)
    finished = Waiter(io_loop)

    def on_connect() -> None:
        result.connected = True

    def on_reply(data: bytes) -> None:
        result.reply = data
        client.close()

    client.set_close_callback(lambda: finished.done())
    client.connect(("127.0.0.1", port), on_connect, server_hostname=server_hostname)
    client.write(b"secret\n")
    client.read_until(b"\n", on_reply)
    finished.wait()
    result.client_error = client.error
    server_closed.wait()
    server.stop()
    return result


def assert_refused(result: Attempt, verify_code: int | None = None) -> None:
    """The handshake failed on the client; nothing leaked through."""
    assert not result.connected, "the connect callback ran"
    assert result.reply is None
    assert result.server_received == [], "application data crossed a failed handshake"
    assert isinstance(result.client_error, ssl.SSLError), result.client_error
    if verify_code is not None:
        assert isinstance(result.client_error, ssl.SSLCertVerificationError)
        assert result.client_error.verify_code == verify_code, result.client_error
    # The server's stream closed with an error too (the client's alert).
    assert len(result.server_errors) == 1
    assert isinstance(result.server_errors[0], (ssl.SSLError, ConnectionError)), result


def assert_worked(result: Attempt) -> None:
    """The control: handshake, connect callback, one exchange, clean closes."""
    assert result.connected
    assert result.client_error is None
    assert result.server_received == [b"secret\n"]
    assert result.reply == b"reply: secret\n"


# ---------------------------------------------------------------- defaults


@pytest.mark.parametrize(
    "options", [None, {}, {"ciphers": "ECDHE+AESGCM"}], ids=["None", "empty-dict", "dict"]
)
def test_client_contexts_verify_by_default(options: dict[str, Any] | None) -> None:
    ctx = make_ssl_context(options, server_side=False)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ctx.minimum_version != ssl.TLSVersion.MINIMUM_SUPPORTED


def test_client_dict_with_ca_keeps_verification(tls: TLSFiles) -> None:
    ctx = make_ssl_context({"ca_certs": tls.ca_path}, server_side=False)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_only_explicit_cert_none_turns_verification_off(tls: TLSFiles) -> None:
    ctx = make_ssl_context({"cert_reqs": ssl.CERT_NONE}, server_side=False)
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_server_dict_context_minimum_tls12(tls: TLSFiles) -> None:
    ctx = make_ssl_context({"certfile": tls.cert_path, "keyfile": tls.key_path}, True)
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_default_client_refuses_a_private_ca(loop: IOLoop, tls: TLSFiles) -> None:
    """ssl_options=None: the system trust store; trustme's CA is not in it."""
    result = attempt(loop, tls.server_context(), None)
    assert_refused(result, UNABLE_TO_GET_ISSUER_CERT_LOCALLY)


# ---------------------------------------------------------------- bad certificates


@pytest.fixture(scope="module")
def bad_certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A CA (and its PEM), and one leaf certificate per way of being wrong."""
    base: Path = tmp_path_factory.mktemp("badcerts")
    ca = trustme.CA()
    stranger = trustme.CA()
    now = datetime.datetime.now(datetime.timezone.utc)
    certs = {
        "valid": ca.issue_cert("localhost"),
        "expired": ca.issue_cert(
            "localhost",
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        ),
        "not-yet-valid": ca.issue_cert(
            "localhost",
            not_before=now + datetime.timedelta(days=1),
            not_after=now + datetime.timedelta(days=30),
        ),
        "wrong-host": ca.issue_cert("www.example.org"),
        "untrusted": stranger.issue_cert("localhost"),
    }
    ca_path = base / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return {"ca": ca, "ca_path": str(ca_path), "certs": certs}


def _server_ctx(cert: trustme.LeafCert) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    return ctx


def _client_options(kind: str, bad_certs: dict[str, Any]) -> ssl.SSLContext | dict[str, Any]:
    if kind == "dict":
        return {"ca_certs": bad_certs["ca_path"]}
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bad_certs["ca"].configure_trust(ctx)
    return ctx


CLIENT_KINDS = ["dict", "context"]


@pytest.mark.parametrize("client_kind", CLIENT_KINDS)
def test_valid_certificate_is_accepted(
    loop: IOLoop, bad_certs: dict[str, Any], client_kind: str
) -> None:
    """The control for the refusals below: same CA, same client, a good cert."""
    result = attempt(
        loop,
        _server_ctx(bad_certs["certs"]["valid"]),
        _client_options(client_kind, bad_certs),
    )
    assert_worked(result)


@pytest.mark.parametrize("client_kind", CLIENT_KINDS)
@pytest.mark.parametrize(
    ("cert", "code"),
    [
        ("expired", CERT_HAS_EXPIRED),
        ("not-yet-valid", CERT_NOT_YET_VALID),
        ("wrong-host", HOSTNAME_MISMATCH),
        ("untrusted", UNABLE_TO_GET_ISSUER_CERT_LOCALLY),
    ],
)
def test_bad_certificate_is_refused(
    loop: IOLoop, bad_certs: dict[str, Any], client_kind: str, cert: str, code: int
) -> None:
    result = attempt(
        loop,
        _server_ctx(bad_certs["certs"][cert]),
        _client_options(client_kind, bad_certs),
    )
    assert_refused(result, code)


def test_host_name_defaults_to_the_address_host(loop: IOLoop, bad_certs: dict[str, Any]) -> None:
    """No server_hostname: the address's host (127.0.0.1) is checked, and a
    certificate for "localhost" only does not match it."""
    result = attempt(
        loop,
        _server_ctx(bad_certs["certs"]["valid"]),
        {"ca_certs": bad_certs["ca_path"]},
        server_hostname=None,
    )
    assert_refused(result, IP_ADDRESS_MISMATCH)


# ---------------------------------------------------------------- TLS 1.2 minimum


def _tls11_context(server: bool) -> ssl.SSLContext:
    """A context that speaks TLS 1.0-1.1 only (needs OpenSSL security level 0)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        try:
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        except (ValueError, ssl.SSLError) as exc:
            pytest.skip(f"this OpenSSL cannot build a TLS 1.1 context: {exc}")
    return ctx


def test_client_refuses_a_tls11_server(loop: IOLoop, tls: TLSFiles) -> None:
    server_ctx = _tls11_context(server=True)
    tls.cert.configure_cert(server_ctx)
    # The control: a client that opts into TLS 1.1 does reach this server.
    permissive = _tls11_context(server=False)
    tls.ca.configure_trust(permissive)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        control = attempt(loop, server_ctx, permissive)
    if control.client_error is not None:
        pytest.skip(f"this OpenSSL no longer speaks TLS 1.1: {control.client_error}")
    assert_worked(control)
    # The library's own client contexts refuse it.
    for options in ({"ca_certs": tls.ca_path}, None):
        result = attempt(loop, server_ctx, options)
        assert_refused(result)
        assert not isinstance(result.client_error, ssl.SSLCertVerificationError)


def test_tls12_only_server_works_with_default_client(loop: IOLoop, tls: TLSFiles) -> None:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    server_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    tls.cert.configure_cert(server_ctx)
    assert_worked(attempt(loop, server_ctx, {"ca_certs": tls.ca_path}))


def test_dict_server_refuses_a_tls11_client(loop: IOLoop, tls: TLSFiles) -> None:
    client_ctx = _tls11_context(server=False)
    tls.ca.configure_trust(client_ctx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        result = attempt(loop, {"certfile": tls.cert_path, "keyfile": tls.key_path}, client_ctx)
    assert_refused(result)
    # The control: the same server with a TLS 1.2+ client.
    assert_worked(
        attempt(loop, {"certfile": tls.cert_path, "keyfile": tls.key_path}, tls.client_context())
    )


# ---------------------------------------------------------------- client certificates


def test_server_requiring_client_certs_refuses_anonymous_client(
    loop: IOLoop, tls: TLSFiles
) -> None:
    server_options = {
        "certfile": tls.cert_path,
        "keyfile": tls.key_path,
        "cert_reqs": ssl.CERT_REQUIRED,
        "ca_certs": tls.ca_path,
    }
    result = attempt(loop, server_options, tls.client_context())
    # TLS 1.3: the client may finish its side of the handshake before the
    # server's refusal arrives (the connect callback may run), but no
    # application data is ever accepted by the server.
    assert result.server_received == []
    assert result.reply is None
    assert isinstance(result.server_errors[0], ssl.SSLError), result
    assert result.client_error is not None
    # The control: the same server with a client certificate.
    client_ctx = tls.client_context()
    tls.client_cert.configure_cert(client_ctx)
    assert_worked(attempt(loop, server_options, client_ctx))
