"""Issue 9, stream side: the edges real servers meet, on every poller.

* Back-pressure, not disconnection (item 1): a slow consumer is never
  disconnected; exactly ``max_buffer_size`` is not an overflow; read-ahead
  is bounded (no pending read and no close callback: no ``recv`` at all).
  Includes ports of Tornado's ``test_small_reads_from_large_buffer`` and
  ``test_small_read_untils_from_large_buffer``.
* A stream made on an accepted socket whose peer already reset (item 3).
* Streaming callbacks get every byte, also what was buffered (item 6).
* An empty write while connecting waits for the connection (item 7).
* ``close()`` never raises, the close callback runs once (item 8).
* A pre-wrapped ``ssl.SSLSocket``; dict ``ssl_options`` with ``ssl_version``
  (item 9).
* Logging as Tornado logs (item 11).
* ``TCP_NODELAY`` on by default, ``nodelay=False`` keeps Nagle (item 12).
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import struct
import sys
from typing import Any

import pytest
from _stream_helpers import (  # noqa: F401  (fixtures)
    SOCKET_TIMEOUT,
    KiB,
    StreamKit,
    TLSFiles,
    Waiter,
    accept_on_loop,
    closed_port,
    collect_close,
    settle,
    spin,
    streams_fixture,
    tls_fixture,
)
from support import loopback_pair

from iostream import IOLoop, IOStream, SSLIOStream, StreamBufferFullError, StreamClosedError
from iostream.stream import check_stream_options, make_ssl_context

_POSIX = sys.platform != "win32"


class CountingSocket(socket.socket):
    """A socket that counts its ``recv_into`` calls (and can be told to fail)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock.family, sock.type, sock.proto, fileno=sock.detach())
        self.recvs = 0
        self.recv_error: OSError | None = None
        self.send_error: OSError | None = None

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self.recvs += 1
        if self.recv_error is not None:
            raise self.recv_error
        return super().recv_into(buffer, nbytes, flags)

    def send(self, data: Any, flags: int = 0) -> int:
        if self.send_error is not None:
            raise self.send_error
        return super().send(data, flags)


def counting_pair(
    streams: StreamKit, **kwargs: Any
) -> tuple[IOStream, CountingSocket, socket.socket]:
    """An IOStream on a CountingSocket, the socket, and the raw (blocking) peer."""
    a, b = loopback_pair()
    counted = CountingSocket(a)
    streams.track(counted)
    streams.track(b)
    b.setblocking(True)
    b.settimeout(SOCKET_TIMEOUT)
    return streams.stream(counted, **kwargs), counted, b


def loud(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[logging.LogRecord]:
    """Records at *level* or above on the iostream logger."""
    return [
        r
        for r in caplog.records
        if r.levelno >= level and (r.name == "iostream" or r.name.startswith("iostream."))
    ]


# ---------------------------------------------------------------- item 1: back-pressure


@pytest.mark.parametrize("close_callback", [False, True])
def test_slow_consumer_gets_everything(
    io_loop: IOLoop, streams: StreamKit, close_callback: bool
) -> None:
    """The contract's example (docs/guarantees.md, "IOStream", "Back-pressure, not
    disconnection"): max_buffer_size 10 KiB, 100 KiB sent, 1 KiB reads with a
    loop-timer delay between them: all 100 reads succeed, the stream stays open."""
    a, peer = streams.stream_and_peer(max_buffer_size=10 * KiB)
    closes = collect_close(a) if close_callback else []
    payload = bytes(range(256)) * 400  # 100 KiB
    peer.sendall(payload)  # the kernel buffers hold it: the stream must push back
    got: list[bytes] = []
    finished = Waiter(io_loop)

    def on_data(data: bytes) -> None:
        got.append(data)
        if len(got) == 100:
            finished.done()
        else:
            # A slow consumer: the next read comes later than this callback.
            io_loop.call_later(0.002, lambda: a.read_bytes(KiB, on_data))

    a.read_bytes(KiB, on_data)
    finished.wait()
    assert b"".join(got) == payload
    assert all(len(d) == KiB for d in got)
    assert not a.closed(), a.error
    assert a.error is None
    assert closes == []


def test_tornado_small_reads_from_large_buffer(io_loop: IOLoop, streams: StreamKit) -> None:
    """Port of Tornado's test_small_reads_from_large_buffer: 10 KiB buffer,
    100 KiB available, read 1 KiB at a time; the buffer is not eagerly filled."""
    rs, ws = streams.pair(client_kwargs={"max_buffer_size": 10 * KiB})
    ws.write(b"a" * KiB * 100)
    done = Waiter(io_loop)
    count = [0]

    def on_data(data: bytes) -> None:
        assert data == b"a" * KiB
        count[0] += 1
        if count[0] == 100:
            done.done()
        else:
            rs.read_bytes(KiB, on_data)

    rs.read_bytes(KiB, on_data)
    done.wait()
    assert not rs.closed(), rs.error


def test_tornado_small_read_untils_from_large_buffer(io_loop: IOLoop, streams: StreamKit) -> None:
    """Port of Tornado's test_small_read_untils_from_large_buffer."""
    rs, ws = streams.pair(client_kwargs={"max_buffer_size": 10 * KiB})
    ws.write((b"a" * 1023 + b"\n") * 100)
    done = Waiter(io_loop)
    count = [0]

    def on_data(data: bytes) -> None:
        assert data == b"a" * 1023 + b"\n"
        count[0] += 1
        if count[0] == 100:
            done.done()
        else:
            rs.read_until(b"\n", on_data, max_bytes=4096)

    rs.read_until(b"\n", on_data, max_bytes=4096)
    done.wait()
    assert not rs.closed(), rs.error


def test_read_until_delimiter_at_exactly_max_buffer_size(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    a, peer = streams.stream_and_peer(max_buffer_size=1000)
    peer.sendall(b"x" * 999 + b"\n" + b"more")
    w = Waiter(io_loop)
    a.read_until(b"\n", w.callback)
    assert w.wait() == b"x" * 999 + b"\n"
    w2 = Waiter(io_loop)
    a.read_bytes(4, w2.callback)
    assert w2.wait() == b"more"
    assert not a.closed(), a.error


def test_read_until_close_of_exactly_max_buffer_size(io_loop: IOLoop, streams: StreamKit) -> None:
    """Exactly max_buffer_size bytes then EOF is not an overflow."""
    a, peer = streams.stream_and_peer(max_buffer_size=1000)
    peer.sendall(b"y" * 1000)
    peer.shutdown(socket.SHUT_WR)
    w = Waiter(io_loop)
    a.read_until_close(w.callback)
    assert w.wait() == b"y" * 1000
    assert a.error is None


def test_read_until_close_past_max_buffer_size_overflows(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    a, peer = streams.stream_and_peer(max_buffer_size=1000)
    closed = Waiter(io_loop)
    collect_close(a, closed)
    peer.sendall(b"y" * 1001)
    peer.shutdown(socket.SHUT_WR)
    a.read_until_close(lambda d: None)
    closed.wait()
    assert isinstance(a.error, StreamBufferFullError)


def test_no_pending_read_no_close_callback_receives_nothing(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    a, counted, peer = counting_pair(streams)
    peer.sendall(b"z" * 100 * KiB)
    a.write(b"ping")  # registers the stream with the loop (WRITE, then nothing)
    settle(io_loop)
    assert counted.recvs == 0
    # The data is still there for the read that comes later.
    w = Waiter(io_loop)
    a.read_bytes(100 * KiB, w.callback)
    assert w.wait() == b"z" * 100 * KiB


def test_read_ahead_after_a_read_is_bounded(io_loop: IOLoop, streams: StreamKit) -> None:
    """One small read takes one bounded recv, not a burst of them."""
    a, counted, peer = counting_pair(streams, read_chunk_size=4 * KiB)
    peer.sendall(b"q" * 512 * KiB)
    w = Waiter(io_loop)
    a.read_bytes(10, w.callback)
    assert w.wait() == b"q" * 10
    settle(io_loop)
    assert counted.recvs == 1, counted.recvs
    assert a._read_buffer.size <= 4 * KiB


def test_idle_stream_with_close_callback_pushes_back(io_loop: IOLoop, streams: StreamKit) -> None:
    """An idle stream with a close callback buffers a bounded read-ahead,
    then stops receiving: it is not disconnected."""
    a, peer = streams.stream_and_peer(max_buffer_size=4096)
    closes = collect_close(a)
    payload = os.urandom(100_000)
    peer.sendall(payload)
    settle(io_loop)
    assert not a.closed(), a.error
    assert a._read_buffer.size <= 4096
    got = bytearray()
    done = Waiter(io_loop)

    def on_data(data: bytes) -> None:
        got.extend(data)
        if len(got) == len(payload):
            done.done()
        else:
            a.read_bytes(min(KiB, len(payload) - len(got)), on_data)

    a.read_bytes(KiB, on_data)
    done.wait()
    assert bytes(got) == payload
    assert closes == [] and a.error is None


def test_idle_stream_with_close_callback_notices_eof(io_loop: IOLoop, streams: StreamKit) -> None:
    a, peer = streams.stream_and_peer(max_buffer_size=4096)
    closed = Waiter(io_loop)
    collect_close(a, closed)
    peer.sendall(b"tail")
    peer.close()
    closed.wait()
    w = Waiter(io_loop)
    a.read_until_close(w.callback)
    assert w.wait() == b"tail"
    assert a.error is None


# ---------------------------------------------------------------- item 3: accepted, then reset


def _reset_then_accept(streams: StreamKit) -> socket.socket:
    listener = streams.listener()
    client = socket.socket()
    client.settimeout(SOCKET_TIMEOUT)
    client.connect(listener.getsockname())
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # RST while the connection waits in the listen queue
    listener.settimeout(SOCKET_TIMEOUT)
    try:
        conn, _ = listener.accept()
    except ConnectionAbortedError:
        pytest.skip("this OS refuses to accept a connection reset in the queue")
    return streams.track(conn)


def test_stream_on_accepted_reset_socket_closes_promptly(
    io_loop: IOLoop, streams: StreamKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    conn = _reset_then_accept(streams)
    stream = streams.stream(conn)
    assert not stream.closed()
    closed = Waiter(io_loop)
    events = collect_close(stream, closed)
    closed.wait(timeout=5)
    settle(io_loop)
    assert events == ["close"]
    assert isinstance(stream.error, OSError), stream.error
    assert conn.fileno() == -1
    assert loud(caplog, logging.INFO) == [], [r.getMessage() for r in loud(caplog)]


def test_stream_on_accepted_reset_socket_without_callbacks_releases_fd(
    io_loop: IOLoop, streams: StreamKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    conn = _reset_then_accept(streams)
    stream = streams.stream(conn)
    spin(io_loop, 5)
    assert stream.closed()
    assert conn.fileno() == -1
    assert loud(caplog, logging.INFO) == []


def test_stream_on_fresh_socket_is_still_unconnected(io_loop: IOLoop, streams: StreamKit) -> None:
    """The reset check does not mistake a fresh socket (bound or not) for a dead one."""
    for bind in (False, True):
        sock = streams.track(socket.socket())
        if bind:
            sock.bind(("127.0.0.1", 0))
        stream = streams.stream(sock)
        spin(io_loop, 3)
        assert not stream.closed()
        listener = streams.listener()
        w = Waiter(io_loop)
        stream.connect(listener.getsockname(), w.done)
        w.wait()
        assert not stream.closed()


# ---------------------------------------------------------------- item 6: streaming callbacks


def test_read_until_close_streaming_on_closed_stream(io_loop: IOLoop, streams: StreamKit) -> None:
    a, peer = streams.stream_and_peer()
    closed = Waiter(io_loop)
    collect_close(a, closed)
    peer.sendall(b"buffered body")
    peer.close()
    closed.wait()
    chunks: list[bytes] = []
    final = Waiter(io_loop)
    a.read_until_close(final.callback, streaming_callback=chunks.append)
    assert final.wait() == b""
    assert b"".join(chunks) == b"buffered body"


def test_read_bytes_streaming_on_closed_stream(io_loop: IOLoop, streams: StreamKit) -> None:
    a, peer = streams.stream_and_peer()
    closed = Waiter(io_loop)
    collect_close(a, closed)
    peer.sendall(b"0123456789")
    peer.close()
    closed.wait()
    chunks: list[bytes] = []
    final = Waiter(io_loop)
    a.read_bytes(6, final.callback, streaming_callback=chunks.append)
    assert final.wait() == b""
    assert b"".join(chunks) == b"012345"
    # More than is buffered cannot be satisfied: nothing is taken.
    with pytest.raises(StreamClosedError):
        a.read_bytes(5, lambda d: None, streaming_callback=chunks.append)
    rest = Waiter(io_loop)
    a.read_until_close(rest.callback)
    assert rest.wait() == b"6789"


def test_streaming_gets_bytes_buffered_before_the_call(io_loop: IOLoop, streams: StreamKit) -> None:
    a, peer = streams.stream_and_peer()
    first = Waiter(io_loop)
    peer.sendall(b"head\nbody-bytes")
    a.read_until(b"\n", first.callback)
    assert first.wait() == b"head\n"
    chunks: list[bytes] = []
    final = Waiter(io_loop)
    a.read_bytes(10, final.callback, streaming_callback=chunks.append)
    assert final.wait() == b""
    assert b"".join(chunks) == b"body-bytes"


def test_streaming_read_until_close_gets_bytes_at_close(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    a, peer = streams.stream_and_peer()
    chunks: list[bytes] = []
    final = Waiter(io_loop)
    a.read_until_close(final.callback, streaming_callback=chunks.append)
    peer.sendall(b"abc")
    peer.sendall(b"def")
    peer.close()
    assert final.wait() == b""
    assert b"".join(chunks) == b"abcdef"


# ---------------------------------------------------------------- item 7: empty write


def test_empty_write_while_connecting_waits(io_loop: IOLoop, streams: StreamKit) -> None:
    listener = streams.listener()
    stream = streams.stream(socket.socket())
    order: list[str] = []
    w = Waiter(io_loop, expected=2)

    def record(what: str) -> None:
        order.append(what)
        w.done()

    stream.connect(listener.getsockname(), lambda: record("connect"))
    stream.write(b"", lambda: record("write"))
    w.wait()
    assert order == ["connect", "write"]


def test_empty_write_never_runs_after_failed_connect(io_loop: IOLoop, streams: StreamKit) -> None:
    stream = streams.stream(socket.socket())
    order: list[str] = []
    closed = Waiter(io_loop)
    collect_close(stream, closed)
    stream.connect(("127.0.0.1", closed_port()), lambda: order.append("connect"))
    stream.write(b"", lambda: order.append("write"))
    closed.wait()
    settle(io_loop)
    assert order == []  # neither the connect nor the empty write's callback
    assert isinstance(stream.error, ConnectionRefusedError)


# ---------------------------------------------------------------- item 8: close never raises


@pytest.mark.skipif(not _POSIX, reason="closes a raw fd behind the socket's back")
@pytest.mark.parametrize("watched", [False, True])
def test_close_when_socket_close_fails(io_loop: IOLoop, streams: StreamKit, watched: bool) -> None:
    """socket.close() raising (EBADF: its fd was closed behind the stream's
    back) neither escapes close() nor stops the close callback (exactly once)."""
    a, _peer = streams.stream_and_peer()
    calls: list[str] = []
    if watched:
        a.set_close_callback(lambda: calls.append("close"))
        a.read_bytes(1, lambda d: calls.append("read"))
        spin(io_loop, 2)
    fd = a.fileno()
    os.close(fd)  # behind the stream's back
    with pytest.raises(OSError):
        socket.socket(fileno=os.dup(fd)).close()  # the fd really is gone
    a.close()  # must not raise
    a.close()
    if not watched:
        a.set_close_callback(lambda: calls.append("close"))
    spin(io_loop, 3)
    assert calls == ["close"]
    assert a.closed()


# ---------------------------------------------------------------- item 9: pre-wrapped TLS


def test_prewrapped_server_socket_handshakes(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles
) -> None:
    listener = streams.listener()
    client = streams.track(
        SSLIOStream(socket.socket(), ssl_options=tls.client_context(), io_loop=io_loop)
    )
    connected = Waiter(io_loop)
    client.connect(listener.getsockname(), connected.done, server_hostname="localhost")
    conn = accept_on_loop(io_loop, listener)
    wrapped = tls.server_context().wrap_socket(
        conn, server_side=True, do_handshake_on_connect=False
    )
    server = streams.track(SSLIOStream(wrapped, io_loop=io_loop))
    assert server.socket is wrapped
    assert server.server_side, "a pre-wrapped socket's side comes from the socket"
    got = Waiter(io_loop)
    server.read_until(b"\n", got.callback)
    connected.wait()
    client.write(b"hello\n")
    assert got.wait() == b"hello\n"
    echoed = Waiter(io_loop)
    client.read_bytes(3, echoed.callback)
    server.write(b"bye")
    assert echoed.wait() == b"bye"


def test_ssl_options_dict_accepts_ssl_version(tls: TLSFiles) -> None:
    server = make_ssl_context(
        {
            "certfile": tls.cert_path,
            "keyfile": tls.key_path,
            "ssl_version": ssl.PROTOCOL_TLS_SERVER,
        },
        server_side=True,
    )
    assert server.protocol == ssl.PROTOCOL_TLS_SERVER
    client = make_ssl_context({"ssl_version": ssl.PROTOCOL_TLS_CLIENT}, server_side=False)
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    pinned = make_ssl_context({"ssl_version": ssl.PROTOCOL_TLSv1_2}, server_side=False)
    assert pinned.maximum_version == ssl.TLSVersion.TLSv1_2
    assert pinned.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ValueError, match="ssl_version"):
        make_ssl_context({"ssl_version": "TLSv1.2"}, server_side=False)


def test_ssl_version_key_works_end_to_end(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles
) -> None:
    client, server = streams.ssl_pair(
        tls,
        server_options={
            "certfile": tls.cert_path,
            "keyfile": tls.key_path,
            "ssl_version": ssl.PROTOCOL_TLS,
        },
    )
    got = Waiter(io_loop)
    server.read_bytes(2, got.callback)
    client.write(b"ok")
    assert got.wait() == b"ok"


# ---------------------------------------------------------------- item 11: logging


def test_connect_error_logged_once_at_warning(
    io_loop: IOLoop, streams: StreamKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stream = streams.stream(socket.socket())
    fd = stream.fileno()
    closed = Waiter(io_loop)
    collect_close(stream, closed)
    port = closed_port()
    stream.connect(("127.0.0.1", port), lambda: None)
    closed.wait()
    settle(io_loop)
    records = loud(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert message.startswith(f"Connect error on fd {fd}"), message
    assert str(port) in message


def test_unsatisfiable_read_logged_once_at_info(
    io_loop: IOLoop, streams: StreamKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    a, peer = streams.stream_and_peer()
    closed = Waiter(io_loop)
    collect_close(a, closed)
    a.read_until(b"\n", lambda d: None, max_bytes=4)
    peer.sendall(b"too long\n")
    closed.wait()
    settle(io_loop)
    records = loud(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.INFO
    assert records[0].getMessage().startswith("Unsatisfiable read, closing connection: ")
    assert str(a.fileno()) in records[0].getMessage()


@pytest.mark.parametrize("side", ["read", "write"])
def test_io_error_logged_once_at_warning(
    io_loop: IOLoop, streams: StreamKit, caplog: pytest.LogCaptureFixture, side: str
) -> None:
    import errno

    caplog.set_level(logging.DEBUG)
    a, counted, peer = counting_pair(streams)
    peer_name = peer.getsockname()
    closed = Waiter(io_loop)
    collect_close(a, closed)
    failure = OSError(errno.EIO, "Input/output error")
    if side == "read":
        counted.recv_error = failure
        a.read_bytes(1, lambda d: None)
        peer.sendall(b"x")
    else:
        counted.send_error = failure
        a.write(b"data")
    closed.wait()
    settle(io_loop)
    assert a.error is failure
    records = loud(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    # Tornado's wording, so that log filters written for Tornado match.
    expected = {"read": "error on read from fd", "write": "Write error on fd"}[side]
    assert message.startswith(f"{expected} {a.fileno()}"), message
    assert str(peer_name[1]) in message


def test_peer_reset_logs_nothing_above_debug(
    io_loop: IOLoop, streams: StreamKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    a, peer = streams.stream_and_peer()
    closed = Waiter(io_loop)
    collect_close(a, closed)
    a.read_bytes(1, lambda d: None)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    closed.wait()
    settle(io_loop)
    assert isinstance(a.error, ConnectionResetError)
    assert loud(caplog) == [], [r.getMessage() for r in loud(caplog)]


def test_clean_close_logs_nothing(
    io_loop: IOLoop, streams: StreamKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    a, peer = streams.stream_and_peer()
    closed = Waiter(io_loop)
    collect_close(a, closed)
    a.read_until_close(lambda d: None)
    peer.sendall(b"bye")
    peer.close()
    closed.wait()
    b, _ = streams.pair()
    b.close()
    settle(io_loop)
    assert a.error is None
    assert [r for r in caplog.records if r.name.startswith("iostream")] == []


# ---------------------------------------------------------------- item 12: TCP_NODELAY


def _nodelay(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_tcp_nodelay_on_by_default(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()
    assert _nodelay(a.socket) and _nodelay(b.socket)
    a.set_nodelay(False)
    assert not _nodelay(a.socket)
    a.set_nodelay(True)
    assert _nodelay(a.socket)


def test_nodelay_false_keeps_nagle(io_loop: IOLoop, streams: StreamKit) -> None:
    a, _ = streams.pair(client_kwargs={"nodelay": False})
    assert not _nodelay(a.socket)


def test_nodelay_on_a_connected_later_stream(io_loop: IOLoop, streams: StreamKit) -> None:
    listener = streams.listener()
    stream = streams.stream(socket.socket())
    w = Waiter(io_loop)
    stream.connect(listener.getsockname(), w.done)
    w.wait()
    assert _nodelay(stream.socket)


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no AF_UNIX")
def test_nodelay_ignored_for_unix_sockets(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = socket.socketpair()
    streams.track(a)
    streams.track(b)
    stream = streams.stream(a)
    stream.set_nodelay(True)  # no error: Nagle is a TCP thing
    assert not stream.closed()


def test_nodelay_option_is_validated() -> None:
    check_stream_options(nodelay=False)
    with pytest.raises(TypeError, match="nodelay"):
        check_stream_options(nodelay="yes")
