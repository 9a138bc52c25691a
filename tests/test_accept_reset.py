"""TCPServer edges at accept time (issue 9, items 3 and 10), on every poller.

* Accepted then reset: a client connects and resets (SO_LINGER 0) while the
  server's loop is not running, so the server accepts a connection whose
  peer is already gone. A plain server's ``handle_stream`` gets a stream
  that closes promptly (close callback, ``error`` set, fd released); a TLS
  server closes the connection without an ERROR traceback from
  ``wrap_socket``. Nothing is logged above DEBUG in either case.
* ``stop()`` from inside ``handle_stream`` with more connections queued logs
  nothing (no ``accept()`` on the closed socket, no EBADF).
* ``accept()`` failing with EMFILE, ENFILE, ENOBUFS or ENOMEM pauses
  accepting instead of spinning (counted on a listening-socket stand-in
  whose ``accept`` raises the errno: a spin would call it thousands of times
  in the window); an error about the one connection (ECONNABORTED, EPROTO)
  skips it at once; any other error pauses too, logged once as an ERROR.

Ordering trick: the listen queue is FIFO, so once a healthy client queued
*after* the reset one has been handed to ``handle_stream``, the server has
dealt with the reset one.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from _load_helpers import fd_count
from _stream_helpers import (  # noqa: F401  (fixtures)
    SOCKET_TIMEOUT,
    StreamKit,
    TLSFiles,
    Waiter,
    settle,
    streams_fixture,
    tls_fixture,
)
from support import LoopTimeout

from iostream import IOLoop, IOStream, SSLIOStream, TCPServer, netutil

_LINUX = sys.platform.startswith("linux")

#: Seconds a reset connection's stream has to close: "promptly".
PROMPTLY = 5.0


def reset_connection(port: int) -> None:
    """Connect to *port* and reset the connection at once (RST, not FIN)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(SOCKET_TIMEOUT)
    # The kernel completes the handshake while nobody accepts: the
    # connection waits in the listen queue, then the RST kills it there.
    sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def loud_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Every record above DEBUG, on any logger."""
    return [r for r in caplog.records if r.levelno > logging.DEBUG]


class Recorder:
    """handle_stream that records each stream, its close callback and its error."""

    def __init__(self, io_loop: IOLoop, streams: StreamKit) -> None:
        self.io_loop = io_loop
        self.streams = streams
        self.handled: list[tuple[IOStream, Any]] = []
        self.closed: dict[int, BaseException | None] = {}
        self.close_calls: dict[int, int] = {}
        self.arrived = Waiter(io_loop)
        self.closed_waiter = Waiter(io_loop)

    def __call__(self, stream: IOStream, address: Any) -> None:
        self.streams.track(stream)
        self.handled.append((stream, address))
        key = id(stream)
        self.close_calls[key] = 0

        def on_close() -> None:
            self.close_calls[key] += 1
            self.closed[key] = stream.error
            self.closed_waiter.done(stream)

        stream.set_close_callback(on_close)
        self.arrived.done(stream)


@pytest.fixture
def loud(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog capturing everything from DEBUG up."""
    caplog.set_level(logging.DEBUG)
    yield caplog


def _healthy_client(streams: StreamKit, port: int) -> socket.socket:
    client = streams.track(socket.socket())
    client.settimeout(SOCKET_TIMEOUT)
    client.connect(("127.0.0.1", port))
    return client


# ---------------------------------------------------------------- accepted then reset


def test_plain_server_stream_of_a_reset_connection_closes(
    io_loop: IOLoop, streams: StreamKit, loud: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(io_loop, streams)
    server = streams.track(TCPServer(recorder, io_loop=io_loop))
    handlers_before = io_loop.handler_count()
    port = server.listen(0)
    reset_connection(port)
    healthy = _healthy_client(streams, port)
    healthy_address = healthy.getsockname()
    while not any(tuple(a[:2]) == tuple(healthy_address[:2]) for _, a in recorder.handled):
        recorder.arrived.expected = recorder.arrived.calls + 1
        recorder.arrived.wait()
    reset_ones = [s for s, a in recorder.handled if tuple(a[:2]) != tuple(healthy_address[:2])]
    if _LINUX:
        # Linux hands the dead connection out (BSDs fail accept with
        # ECONNABORTED, which the server skips): the case under test.
        assert len(reset_ones) == 1
    for stream in reset_ones:
        try:
            recorder.closed_waiter.wait(timeout=PROMPTLY)
        except LoopTimeout:
            pytest.fail(
                "the stream of a connection reset before accept never closed "
                f"(state {stream!r}; close callback calls: {recorder.close_calls[id(stream)]})"
            )
        assert stream.closed()
        assert recorder.close_calls[id(stream)] == 1
        assert isinstance(recorder.closed[id(stream)], OSError), recorder.closed
        assert stream.socket.fileno() == -1, "the fd must be released, not left to the GC"
    healthy_stream = next(s for s, a in recorder.handled if s not in reset_ones)
    healthy_stream.close()
    healthy.close()
    settle(io_loop)
    assert io_loop.handler_count() == handlers_before + 1  # the listener only
    assert loud_records(loud) == [], [r.getMessage() for r in loud_records(loud)]


def test_tls_server_closes_a_reset_connection_quietly(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles, loud: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(io_loop, streams)
    server = streams.track(TCPServer(recorder, io_loop=io_loop, ssl_options=tls.server_context()))
    handlers_before = io_loop.handler_count()
    port = server.listen(0)
    fds_before = fd_count()
    reset_connection(port)
    healthy = _healthy_client(streams, port)
    healthy_address = healthy.getsockname()
    while not any(tuple(a[:2]) == tuple(healthy_address[:2]) for _, a in recorder.handled):
        recorder.arrived.expected = recorder.arrived.calls + 1
        recorder.arrived.wait()
    reset_ones = [s for s, a in recorder.handled if tuple(a[:2]) != tuple(healthy_address[:2])]
    # Either the connection never reaches handle_stream (the ssl module
    # cannot wrap it: Tornado's behaviour) or its stream closes promptly.
    for stream in reset_ones:
        assert isinstance(stream, SSLIOStream)
        recorder.closed_waiter.wait(timeout=PROMPTLY)
        assert recorder.close_calls[id(stream)] == 1
        assert stream.socket.fileno() == -1
    healthy_stream = next(s for s, a in recorder.handled if s not in reset_ones)
    healthy_stream.close()
    healthy.close()
    settle(io_loop)
    assert io_loop.handler_count() == handlers_before + 1  # the listener only
    if fds_before is not None:
        assert fd_count() == fds_before, "the reset connection's fd must be closed"
    assert loud_records(loud) == [], [
        (r.levelname, r.getMessage(), r.exc_info) for r in loud_records(loud)
    ]


# ---------------------------------------------------------------- stop() in handle_stream


def test_stop_inside_handle_stream_logs_nothing(
    io_loop: IOLoop, streams: StreamKit, loud: pytest.LogCaptureFixture
) -> None:
    handled: list[IOStream] = []
    arrived = Waiter(io_loop)
    server: TCPServer

    def handle(stream: IOStream, address: Any) -> None:
        streams.track(stream)
        handled.append(stream)
        server.stop()
        arrived.done()

    server = streams.track(TCPServer(handle, io_loop=io_loop))
    port = server.listen(0)
    # Three connections queued before the loop runs: one readiness event
    # sees all of them, and the first handle_stream stops the server.
    clients = [_healthy_client(streams, port) for _ in range(3)]
    arrived.wait()
    settle(io_loop)
    assert len(handled) == 1
    assert loud_records(loud) == [], [
        (r.levelname, r.getMessage(), r.exc_info) for r in loud_records(loud)
    ]
    # The queued clients lost their connection with the listening socket.
    for client in clients[1:]:
        try:
            data = client.recv(1)
        except ConnectionResetError:
            data = b""
        assert data == b""
    # The accepted one still works.
    handled[0].write(b"still here")
    assert clients[0].recv(64) == b"still here"


# ---------------------------------------------------------------- accept() failing


class FailingListener(socket.socket):
    """A listening socket whose ``accept`` fails with ``fail_errno`` while it is set.

    A real connection waits in its queue, so the fd stays readable (every
    poller is level-triggered here): a server that does not pause calls
    ``accept`` again at once, for ever.
    """

    fail_errno: int | None = None
    accept_calls = 0

    def accept(self) -> tuple[socket.socket, Any]:
        self.accept_calls += 1
        if self.fail_errno is not None:
            raise OSError(self.fail_errno, os.strerror(self.fail_errno))
        return super().accept()


def failing_listener(streams: StreamKit, fail_errno: int | None) -> tuple[FailingListener, int]:
    """A FailingListener on loopback, and its port."""
    listener = FailingListener(socket.AF_INET, socket.SOCK_STREAM)
    streams.track(listener)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.fail_errno = fail_errno
    port: int = listener.getsockname()[1]
    return listener, port


#: Seconds to count accept() calls for.
WINDOW = 0.5


@pytest.mark.parametrize("name", ["EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"])
def test_accept_out_of_resources_pauses_instead_of_spinning(
    io_loop: IOLoop, streams: StreamKit, loud: pytest.LogCaptureFixture, name: str
) -> None:
    code = getattr(errno, name)
    arrived = Waiter(io_loop)
    server = streams.track(TCPServer(lambda s, a: arrived.done(streams.track(s)), io_loop=io_loop))
    listener, port = failing_listener(streams, code)
    server.add_socket(listener)
    client = _healthy_client(streams, port)
    window = Waiter(io_loop)
    io_loop.call_later(WINDOW, window.done)
    window.wait()
    calls = listener.accept_calls
    # One call per pause (ACCEPT_PAUSE apart) plus slack for a slow machine;
    # a busy loop makes thousands.
    assert 1 <= calls <= WINDOW / netutil.ACCEPT_PAUSE + 3, calls
    warnings = [r for r in loud.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # one per episode
    assert os.strerror(code) in warnings[0].getMessage()
    assert [r for r in loud.records if r.levelno > logging.WARNING] == []
    # Resources are back: the waiting connection is accepted after the pause.
    listener.fail_errno = None
    arrived.wait(timeout=5.0)
    stream: IOStream = arrived.values[0]
    stream.write(b"ok")
    assert client.recv(2) == b"ok"


@pytest.mark.parametrize("name", ["ECONNABORTED", "EPROTO"])
def test_accept_error_of_one_connection_is_skipped_at_once(
    io_loop: IOLoop,
    streams: StreamKit,
    loud: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    code = getattr(errno, name)
    arrived = Waiter(io_loop)
    server = streams.track(TCPServer(lambda s, a: arrived.done(streams.track(s)), io_loop=io_loop))

    class OnceFailing(FailingListener):
        def accept(self) -> tuple[socket.socket, Any]:
            if self.accept_calls == 0:
                self.accept_calls += 1
                raise OSError(code, os.strerror(code))
            self.accept_calls += 1
            return socket.socket.accept(self)

    listener = OnceFailing(socket.AF_INET, socket.SOCK_STREAM)
    streams.track(listener)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    server.add_socket(listener)
    _healthy_client(streams, listener.getsockname()[1])
    # No pause: the next accept follows at once. (A pause would now last a
    # minute, far past the wait's deadline.)
    monkeypatch.setattr(netutil, "ACCEPT_PAUSE", 60.0)
    arrived.wait()
    assert listener.accept_calls >= 2
    assert loud_records(loud) == []


def test_accept_unexpected_error_is_logged_once_and_pauses(
    io_loop: IOLoop, streams: StreamKit, loud: pytest.LogCaptureFixture
) -> None:
    server = streams.track(TCPServer(lambda s, a: streams.track(s), io_loop=io_loop))
    listener, port = failing_listener(streams, errno.EINVAL)
    server.add_socket(listener)
    _healthy_client(streams, port)
    window = Waiter(io_loop)
    io_loop.call_later(WINDOW, window.done)
    window.wait()
    assert 1 <= listener.accept_calls <= WINDOW / netutil.ACCEPT_PAUSE + 3, listener.accept_calls
    errors = [r for r in loud.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is not None
