"""Fixtures and helpers for the stream suites (IOStream, SSLIOStream, TCPServer, interop).

What is here:

* :class:`TLSFiles` and the session fixture ``tls``: a trustme CA, a
  server certificate for ``localhost``/``127.0.0.1``/``::1``, one for
  ``localhost`` only, a second (untrusted) CA, the PEM files of each, and
  ready-made server/client :class:`ssl.SSLContext` objects.
* :class:`StreamKit` and the fixture ``streams``: makes connected stream
  pairs (plain and TLS), streams with a raw peer socket, listeners; closes
  everything it made when the test ends.
* Loop helpers on top of ``tests/support.py``: :func:`spin` (run a few loop
  iterations), :func:`settle` (run the loop for a short while, for negative
  assertions only), :func:`accept_on_loop`, :func:`closed_port`,
  :func:`frame_depth`, :func:`iostream_errors` (log records with a given
  exception on the ``iostream`` logger).

Test modules import the fixtures by their function names
(``from _stream_helpers import streams_fixture, tls_fixture``); pytest finds
them under their fixture names ``streams`` and ``tls``.

Every wait is bounded: :class:`support.Waiter` fails the test on its deadline.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import support
import trustme
from support import LoopTimeout, loopback_pair

from iostream import IOLoop, IOStream, SSLIOStream

T = TypeVar("T")


class Waiter(support.Waiter):
    """:class:`support.Waiter` that is not fooled by another waiter's ``stop()``.

    ``support.Waiter.wait`` returns as soon as the loop stops, whoever stopped
    it; a test that awaits two events with two waiters would then go on
    before its own event. This one re-enters the loop until its own count is
    reached, within the same overall deadline.
    """

    def wait(self, timeout: float = support.DEFAULT_TIMEOUT) -> Any:
        """Run the loop until done (return the last value) or fail after *timeout*."""
        deadline = time.monotonic() + timeout
        while self.calls < self.expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LoopTimeout(
                    f"timed out after {timeout}s: {self.calls} of {self.expected} events"
                )
            super().wait(remaining)
        return self.values[-1] if self.values else None


#: Deadline, seconds, for a single blocking socket call made by a test (a raw
#: peer socket's recv/accept). Generous; a passing test never waits this long.
SOCKET_TIMEOUT = 10.0


def has_ipv6() -> bool:
    """True if a socket can be bound to ``::1`` here."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


KiB = 1024
MiB = 1024 * 1024


def collect_close(stream: IOStream, waiter: support.Waiter | None = None) -> list[Any]:
    """Set a close callback that records "close" (and signals *waiter*)."""
    events: list[Any] = []

    def on_close() -> None:
        events.append("close")
        if waiter is not None:
            waiter.done("close")

    stream.set_close_callback(on_close)
    return events


def closed_port(family: int = socket.AF_INET) -> int:
    """A loopback port that nothing listens on (bound once, then released)."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
    return port


def spin(io_loop: IOLoop, iterations: int = 10) -> None:
    """Run *io_loop* for *iterations* iterations (each one polls with no wait).

    Callbacks added while callbacks run go to the next iteration
    (docs/guarantees.md, "IOLoop"), so a chain of ``add_callback`` is a count of
    iterations.
    """
    waiter = Waiter(io_loop)
    left = [iterations]

    def step() -> None:
        left[0] -= 1
        if left[0] <= 0:
            waiter.done()
        else:
            io_loop.add_callback(step)

    io_loop.add_callback(step)
    waiter.wait()


def settle(io_loop: IOLoop, seconds: float = 0.05) -> None:
    """Run the loop a little, so that a wrong extra event would show.

    Only for negative assertions ("the connect callback did not run", "the
    close callback ran only once"): the positive events are awaited with a
    :class:`Waiter` first.
    """
    spin(io_loop, 5)
    waiter = Waiter(io_loop)
    io_loop.call_later(seconds, waiter.done)
    waiter.wait()
    spin(io_loop, 5)


def accept_on_loop(io_loop: IOLoop, listener: socket.socket) -> socket.socket:
    """Accept one connection on non-blocking *listener*, running the loop meanwhile."""
    listener.setblocking(False)
    result: list[socket.socket] = []
    waiter = Waiter(io_loop)

    def on_read(fd: Any, events: int) -> None:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        result.append(conn)
        io_loop.remove_handler(listener)
        waiter.done()

    io_loop.add_handler(listener, on_read, IOLoop.READ)
    try:
        waiter.wait()
    finally:
        io_loop.remove_handler(listener)
    return result[0]


def frame_depth() -> int:
    """The number of Python frames on the current stack."""
    frame = sys._getframe()
    depth = 0
    while frame is not None:
        depth += 1
        frame = frame.f_back  # type: ignore[assignment]
    return depth


def recv_exactly(sock: socket.socket, n: int, timeout: float = SOCKET_TIMEOUT) -> bytes:
    """Read exactly *n* bytes from blocking-with-timeout *sock* (a raw peer)."""
    sock.settimeout(timeout)
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(min(n - len(chunks), 1 << 20))
        if not chunk:
            raise AssertionError(f"peer closed after {len(chunks)} of {n} bytes")
        chunks += chunk
    return bytes(chunks)


def iostream_errors(
    caplog: pytest.LogCaptureFixture, exc: BaseException
) -> list[logging.LogRecord]:
    """Log records on the ``iostream`` logger (or a child) that carry *exc*."""
    found = []
    for record in caplog.records:
        if record.name != "iostream" and not record.name.startswith("iostream."):
            continue
        if record.exc_info and record.exc_info[1] is exc:
            found.append(record)
    return found


# ---------------------------------------------------------------- TLS material


@dataclass
class TLSFiles:
    """A trustme CA and certificates, their PEM files, and context factories."""

    ca: trustme.CA
    other_ca: trustme.CA
    cert: trustme.LeafCert
    localhost_only: trustme.LeafCert
    client_cert: trustme.LeafCert
    ca_path: str
    other_ca_path: str
    cert_path: str
    key_path: str
    combined_path: str
    localhost_only_path: str

    def server_context(self, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
        """A server-side context presenting *cert* (default: ``self.cert``)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        (cert or self.cert).configure_cert(ctx)
        return ctx

    def client_context(self, trust: trustme.CA | None = None) -> ssl.SSLContext:
        """A verifying client context trusting *trust* (default: ``self.ca``) only."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        (trust or self.ca).configure_trust(ctx)
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
        return ctx


@pytest.fixture(scope="session", name="tls")
def tls_fixture(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """TLS material shared by the whole session (one CA per xdist worker)."""
    base: Path = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    other_ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", "::1")
    localhost_only = ca.issue_cert("localhost")
    client_cert = ca.issue_cert("client.example")
    paths = {
        "ca": base / "ca.pem",
        "other_ca": base / "other_ca.pem",
        "cert": base / "cert.pem",
        "key": base / "key.pem",
        "combined": base / "combined.pem",
        "localhost_only": base / "localhost_only.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    other_ca.cert_pem.write_to_path(str(paths["other_ca"]))
    # The leaf first, then the chain, in certfile; the key on its own.
    with open(paths["cert"], "wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    cert.private_key_pem.write_to_path(str(paths["key"]))
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths["combined"]))
    localhost_only.private_key_and_cert_chain_pem.write_to_path(str(paths["localhost_only"]))
    return TLSFiles(
        ca=ca,
        other_ca=other_ca,
        cert=cert,
        localhost_only=localhost_only,
        client_cert=client_cert,
        ca_path=str(paths["ca"]),
        other_ca_path=str(paths["other_ca"]),
        cert_path=str(paths["cert"]),
        key_path=str(paths["key"]),
        combined_path=str(paths["combined"]),
        localhost_only_path=str(paths["localhost_only"]),
    )


# ---------------------------------------------------------------- streams


class StreamKit:
    """Makes streams and sockets on one loop; closes them all at the end."""

    def __init__(self, io_loop: IOLoop) -> None:
        self.io_loop = io_loop
        self._owned: list[Any] = []

    def track(self, obj: T) -> T:
        """Close *obj* (a stream, socket or server with close()/stop()) at teardown."""
        self._owned.append(obj)
        return obj

    def stream(self, sock: socket.socket, **kwargs: Any) -> IOStream:
        """An IOStream on *sock* and this loop."""
        return self.track(IOStream(sock, io_loop=self.io_loop, **kwargs))

    def pair(
        self,
        client_kwargs: dict[str, Any] | None = None,
        server_kwargs: dict[str, Any] | None = None,
        family: int = socket.AF_INET,
    ) -> tuple[IOStream, IOStream]:
        """Two connected IOStreams on loopback."""
        a, b = loopback_pair(family)
        self.track(a)
        self.track(b)
        return self.stream(a, **(client_kwargs or {})), self.stream(b, **(server_kwargs or {}))

    def stream_and_peer(self, **kwargs: Any) -> tuple[IOStream, socket.socket]:
        """An IOStream and the raw peer socket (blocking, with a timeout)."""
        a, b = loopback_pair()
        self.track(a)
        self.track(b)
        b.setblocking(True)
        b.settimeout(SOCKET_TIMEOUT)
        return self.stream(a, **kwargs), b

    def listener(self, family: int = socket.AF_INET, backlog: int = 128) -> socket.socket:
        """A listening socket on loopback, port 0."""
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        sock = self.track(socket.socket(family, socket.SOCK_STREAM))
        sock.bind((host, 0))
        sock.listen(backlog)
        return sock

    def ssl_pair(
        self,
        tls: TLSFiles,
        *,
        client_options: ssl.SSLContext | dict[str, Any] | None = None,
        server_options: ssl.SSLContext | dict[str, Any] | None = None,
        server_hostname: str | None = "localhost",
        connect_callback: Callable[[], None] | None = None,
        client_kwargs: dict[str, Any] | None = None,
        server_kwargs: dict[str, Any] | None = None,
    ) -> tuple[SSLIOStream, SSLIOStream]:
        """A client SSLIOStream connecting to a server-side SSLIOStream.

        Returns as soon as the TCP connection is accepted: the handshake is
        still in progress (the caller awaits the connect callback or the data).
        """
        listener = self.listener()
        port = listener.getsockname()[1]
        client = self.track(
            SSLIOStream(
                socket.socket(socket.AF_INET, socket.SOCK_STREAM),
                ssl_options=client_options if client_options is not None else tls.client_context(),
                io_loop=self.io_loop,
                **(client_kwargs or {}),
            )
        )
        client.connect(("127.0.0.1", port), connect_callback, server_hostname=server_hostname)
        conn = self.track(accept_on_loop(self.io_loop, listener))
        server = self.track(
            SSLIOStream(
                conn,
                ssl_options=server_options if server_options is not None else tls.server_context(),
                server_side=True,
                io_loop=self.io_loop,
                **(server_kwargs or {}),
            )
        )
        return client, server

    def close_all(self) -> None:
        """Close everything made here, newest first; never raises."""
        for obj in reversed(self._owned):
            try:
                if hasattr(obj, "stop") and not hasattr(obj, "fileno"):
                    obj.stop()
                obj.close()
            except Exception:
                pass
        self._owned.clear()


@pytest.fixture(name="streams")
def streams_fixture(io_loop: IOLoop) -> Iterator[StreamKit]:
    """A :class:`StreamKit` on this test's loop."""
    kit = StreamKit(io_loop)
    try:
        yield kit
    finally:
        kit.close_all()


def free_high_fd(start: int = 1100, stop: int = 1400) -> int:
    """An unused file descriptor number >= *start* (for the select fd limit)."""
    for fd in range(start, stop):
        try:
            os.fstat(fd)
        except OSError:
            return fd
    raise AssertionError(f"no free fd in [{start}, {stop})")
