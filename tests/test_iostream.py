"""IOStream against its contract (docs/guarantees.md, "IOStream"), on every poller (the
``io_loop`` fixture).

Covers connect (success, refused, reads and writes issued while connecting),
read_until / read_bytes / read_until_close (streaming, delimiters split
across chunks, buffered data after close), close semantics, the three size
limits, write callbacks and bytes-like objects, big transfers, long chains
of reads without stack growth, exceptions in user callbacks, the
``write_chunk_size`` cap, a select-refused fd, InterruptedError retries,
linear cost and argument validation.
"""

from __future__ import annotations

import array
import hashlib
import logging
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from _stream_helpers import (  # noqa: F401  (fixtures)
    KiB,
    MiB,
    StreamKit,
    Waiter,
    accept_on_loop,
    closed_port,
    collect_close,
    frame_depth,
    free_high_fd,
    has_ipv6,
    iostream_errors,
    recv_exactly,
    settle,
    spin,
    streams_fixture,
    tls_fixture,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import loopback_pair

import iostream
from iostream import (
    IOLoop,
    IOStream,
    StreamBufferFullError,
    StreamClosedError,
    UnsatisfiableReadError,
)

# ---------------------------------------------------------------- API surface


def test_exception_classes() -> None:
    assert issubclass(StreamClosedError, OSError)
    assert issubclass(StreamBufferFullError, Exception)
    assert issubclass(UnsatisfiableReadError, Exception)
    for name in ("StreamClosedError", "StreamBufferFullError", "UnsatisfiableReadError"):
        assert getattr(iostream, name) is not None


def test_new_stream_state(io_loop: IOLoop, streams: StreamKit) -> None:
    a, _ = streams.pair()
    assert not a.closed()
    assert not a.reading()
    assert not a.writing()
    assert a.error is None


def test_stream_makes_its_socket_non_blocking(io_loop: IOLoop, streams: StreamKit) -> None:
    """A blocking socket would freeze the loop on recv: the stream must switch it."""
    sock = streams.track(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    assert sock.getblocking()
    streams.stream(sock)
    assert not sock.getblocking()


# ---------------------------------------------------------------- connect


def _connect_and_echo(
    io_loop: IOLoop, streams: StreamKit, family: int, host: str
) -> tuple[list[str], bytes]:
    listener = streams.listener(family)
    port = listener.getsockname()[1]
    client = streams.stream(streams.track(socket.socket(family, socket.SOCK_STREAM)))
    events: list[str] = []
    connected = Waiter(io_loop)

    def on_connect(*args: Any) -> None:
        events.append("connect" if args == () else f"connect{args!r}")
        connected.done()

    client.connect((host, port), on_connect)
    conn = streams.track(accept_on_loop(io_loop, listener))
    connected.wait()
    server = streams.stream(conn)
    got = Waiter(io_loop)
    server.read_bytes(5, lambda data: server.write(data[::-1]))
    client.write(b"hello")
    client.read_bytes(5, got.callback)
    return events, got.wait()


def test_connect_runs_callback_once(io_loop: IOLoop, streams: StreamKit) -> None:
    events, echoed = _connect_and_echo(io_loop, streams, socket.AF_INET, "127.0.0.1")
    settle(io_loop)
    assert events == ["connect"]
    assert echoed == b"olleh"


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback here")
def test_connect_ipv6(io_loop: IOLoop, streams: StreamKit) -> None:
    events, echoed = _connect_and_echo(io_loop, streams, socket.AF_INET6, "::1")
    assert events == ["connect"]
    assert echoed == b"olleh"


def test_reads_and_writes_issued_while_connecting(io_loop: IOLoop, streams: StreamKit) -> None:
    listener = streams.listener()
    port = listener.getsockname()[1]
    client = streams.stream(streams.track(socket.socket()))
    events: list[Any] = []
    done = Waiter(io_loop, 2)
    client.connect(("127.0.0.1", port), lambda: events.append("connect"))
    # Both issued before the connect has completed.
    client.write(b"request-1;", lambda: events.append("write-1"))
    client.write(b"request-2;")

    def on_reply(data: bytes) -> None:
        events.append(data)
        done.done()

    client.read_bytes(6, on_reply)
    assert client.reading()
    server = streams.stream(streams.track(accept_on_loop(io_loop, listener)))

    def on_request(data: bytes) -> None:
        events.append(("server got", data))
        server.write(b"reply!")
        done.done()

    server.read_bytes(len(b"request-1;request-2;"), on_request)
    done.wait()
    settle(io_loop)
    assert ("server got", b"request-1;request-2;") in events
    assert b"reply!" in events
    assert events.index("connect") < events.index(b"reply!")
    assert events.index("connect") < events.index("write-1")
    assert not client.closed()
    assert client.error is None


def test_refused_connect(io_loop: IOLoop, streams: StreamKit) -> None:
    port = closed_port()
    client = streams.stream(streams.track(socket.socket()))
    connect_calls: list[int] = []
    closed = Waiter(io_loop)
    close_events = collect_close(client, closed)
    client.connect(("127.0.0.1", port), lambda: connect_calls.append(1))
    closed.wait()
    settle(io_loop)
    assert close_events == ["close"], "close callback must run exactly once"
    assert connect_calls == [], "connect callback must not run on a failed connect"
    assert client.closed()
    assert isinstance(client.error, ConnectionRefusedError)
    assert isinstance(client.error, OSError)
    with pytest.raises(StreamClosedError):
        client.write(b"x")


def test_refused_connect_with_pending_read_and_write(io_loop: IOLoop, streams: StreamKit) -> None:
    client = streams.stream(streams.track(socket.socket()))
    calls: list[str] = []
    closed = Waiter(io_loop)
    collect_close(client, closed)
    client.connect(("127.0.0.1", closed_port()), lambda: calls.append("connect"))
    client.write(b"data", lambda: calls.append("write"))
    client.read_bytes(4, lambda d: calls.append("read"))
    closed.wait()
    settle(io_loop)
    assert calls == []
    assert isinstance(client.error, ConnectionRefusedError)


# ---------------------------------------------------------------- read_until


def test_read_until_includes_delimiter(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()
    w = Waiter(io_loop, 2)

    def first(data: bytes) -> None:
        w.done(data)
        a.read_until(b"\r\n", w.done)

    a.read_until(b"\r\n", first)
    b.write(b"hello\r\nworld\r\nrest")
    w.wait()
    assert w.values == [b"hello\r\n", b"world\r\n"]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_read_until_delimiter_split_by_small_read_chunks(
    io_loop: IOLoop, streams: StreamKit, chunk: int
) -> None:
    a, b = streams.pair(client_kwargs={"read_chunk_size": chunk})
    w = Waiter(io_loop, 3)
    msgs = [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n\r\n", b"a\r\n\rb\r\n\r\n"]

    def next_read(data: bytes | None = None) -> None:
        if data is not None:
            w.done(data)
        if w.calls < 3:
            a.read_until(b"\r\n\r\n", next_read)

    next_read()
    b.write(b"".join(msgs))
    w.wait()
    assert w.values == msgs


def test_read_until_delimiter_split_across_sends(io_loop: IOLoop, streams: StreamKit) -> None:
    a, peer = streams.stream_and_peer()
    got = Waiter(io_loop)
    a.read_until(b"<END>", got.callback)
    peer.sendall(b"abc<E")
    spin(io_loop)
    assert got.calls == 0
    peer.sendall(b"N")
    spin(io_loop)
    assert got.calls == 0
    peer.sendall(b"D>tail")
    assert got.wait() == b"abc<END>"
    w2 = Waiter(io_loop)
    a.read_bytes(4, w2.callback)
    assert w2.wait() == b"tail"


@pytest.mark.parametrize(
    ("delimiter", "data", "expected"),
    [
        (b"aab", b"aaab", b"aaab"),  # overlap: a naive resume skips the match
        (b"abab", b"abaabab", b"abaabab"),
        (b"\r\n\r\n", b"x\r\n\r\r\n\r\n", b"x\r\n\r\r\n\r\n"),
        (b"\n", b"\n", b"\n"),
    ],
)
def test_read_until_overlapping_partial_matches(
    io_loop: IOLoop, streams: StreamKit, delimiter: bytes, data: bytes, expected: bytes
) -> None:
    a, peer = streams.stream_and_peer(read_chunk_size=1)
    got = Waiter(io_loop)
    a.read_until(delimiter, got.callback)
    for i in range(len(data)):  # one byte per loop wake-up: one search per byte
        peer.sendall(data[i : i + 1])
        spin(io_loop, 2)
    assert got.wait() == expected


def test_read_until_many_messages_in_one_chunk(io_loop: IOLoop, streams: StreamKit) -> None:
    a, peer = streams.stream_and_peer()
    lines = [b"line %d\n" % i for i in range(2000)]
    peer.sendall(b"".join(lines))
    got: list[bytes] = []
    w = Waiter(io_loop)

    def on_line(data: bytes) -> None:
        got.append(data)
        if len(got) == len(lines):
            w.done()
        else:
            a.read_until(b"\n", on_line)

    a.read_until(b"\n", on_line)
    w.wait()
    assert got == lines


def test_read_until_data_already_buffered(io_loop: IOLoop, streams: StreamKit) -> None:
    a, peer = streams.stream_and_peer()
    first = Waiter(io_loop)
    a.read_bytes(2, first.callback)
    peer.sendall(b"xxmsg1;msg2;")
    assert first.wait() == b"xx"
    spin(io_loop)  # the rest is in the stream's buffer now
    w = Waiter(io_loop)
    a.read_until(b";", w.callback)
    assert w.wait() == b"msg1;"


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    delimiter=st.sampled_from([b"\n", b"\r\n", b"\r\n\r\n", b"aab", b"xyzzy"]),
    pieces=st.lists(
        st.sampled_from([b"a", b"b", b"\r", b"\n", b"x", b"yzz", b"aa", b"zzy"]), max_size=60
    ),
    chunk=st.integers(min_value=1, max_value=9),
)
def test_read_until_property(
    io_loop: IOLoop, delimiter: bytes, pieces: list[bytes], chunk: int
) -> None:
    """Any data, any arrival pattern: read_until splits exactly like bytes.find does.

    Each piece is sent on its own and the loop runs between sends, so the
    stream searches once per piece: a delimiter straddling two pieces must be
    found (the search resumes before the end of what was already scanned).
    """
    data = b"".join(pieces)
    expected: list[bytes] = []
    pos = 0
    while True:
        loc = data.find(delimiter, pos)
        if loc < 0:
            break
        expected.append(data[pos : loc + len(delimiter)])
        pos = loc + len(delimiter)
    rest = data[pos:]
    c, s = loopback_pair()
    a = IOStream(c, io_loop=io_loop, read_chunk_size=chunk)
    try:
        s.setblocking(True)
        got: list[bytes] = []
        done = Waiter(io_loop)

        def next_read() -> None:
            if len(got) < len(expected):
                a.read_until(delimiter, on_msg)
            else:
                a.read_until_close(done.callback)

        def on_msg(msg: bytes) -> None:
            got.append(msg)
            next_read()

        next_read()
        for piece in pieces:
            s.sendall(piece)
            spin(io_loop, 2)
        s.close()
        tail = done.wait()
        assert got == expected
        assert tail == rest
    finally:
        a.close()
        s.close()


# ---------------------------------------------------------------- read_bytes


def test_read_bytes_exact_sizes(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()
    w = Waiter(io_loop, 3)

    def second(data: bytes) -> None:
        w.done(data)
        a.read_bytes(6, w.done)

    def first(data: bytes) -> None:
        w.done(data)
        a.read_bytes(1, second)

    a.read_bytes(3, first)
    b.write(b"abcdefghijKLM")
    w.wait()
    assert w.values == [b"abc", b"d", b"efghij"]


def test_read_bytes_zero(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()
    w = Waiter(io_loop)
    a.read_bytes(0, w.callback)
    assert w.wait() == b""
    assert not a.closed()
    assert not a.reading()
    w2 = Waiter(io_loop)
    a.read_bytes(3, w2.callback)
    b.write(b"xyz")
    assert w2.wait() == b"xyz"


def test_read_bytes_streaming_callback(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()
    data = random.Random(7).randbytes(3 * MiB + 17)
    streamed: list[bytes] = []
    final = Waiter(io_loop)
    a.read_bytes(len(data), final.callback, streaming_callback=streamed.append)
    b.write(data + b"NEXT")
    last = final.wait()
    assert len(streamed) >= 1
    assert b"".join(streamed) + last == data
    nxt = Waiter(io_loop)
    a.read_bytes(4, nxt.callback)
    assert nxt.wait() == b"NEXT", "read_bytes with streaming must not consume past num_bytes"


# ---------------------------------------------------------------- read_until_close


def test_read_until_close(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()
    data = random.Random(1).randbytes(MiB + 3)
    w = Waiter(io_loop)
    a.read_until_close(w.callback)
    b.write(data, b.close)
    assert w.wait() == data
    assert a.closed()
    assert a.error is None


def test_read_until_close_streaming(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()
    data = random.Random(2).randbytes(2 * MiB + 5)
    streamed: list[bytes] = []
    w = Waiter(io_loop)
    a.read_until_close(w.callback, streaming_callback=streamed.append)
    b.write(data, b.close)
    final = w.wait()
    assert b"".join(streamed) + final == data
    assert final == b"", "everything was streamed, the final callback gets b''"


def test_read_until_close_streaming_with_data_buffered_first(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    a, peer = streams.stream_and_peer()
    first = Waiter(io_loop)
    a.read_bytes(1, first.callback)
    peer.sendall(b"0123456789")
    assert first.wait() == b"0"
    spin(io_loop)
    streamed: list[bytes] = []
    w = Waiter(io_loop)
    a.read_until_close(w.callback, streaming_callback=streamed.append)
    peer.sendall(b"abc")
    peer.close()
    final = w.wait()
    assert b"".join(streamed) + final == b"123456789abc"


def test_read_until_close_on_locally_closed_stream_delivers_buffer(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    a, peer = streams.stream_and_peer()
    first = Waiter(io_loop)
    a.read_bytes(2, first.callback)
    peer.sendall(b"dataXYZ")
    assert first.wait() == b"da"
    spin(io_loop)
    a.close()
    assert a.closed()
    w = Waiter(io_loop)
    a.read_until_close(w.callback)
    assert w.wait() == b"taXYZ"


def test_read_until_close_after_error_close_delivers_buffer(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    a, peer = streams.stream_and_peer()
    closed = Waiter(io_loop)
    collect_close(a, closed)
    a.read_until(b"\n", lambda d: None, max_bytes=10)
    peer.sendall(b"x" * 20)
    closed.wait()
    assert isinstance(a.error, UnsatisfiableReadError)
    w = Waiter(io_loop)
    a.read_until_close(w.callback)
    rest = w.wait()
    assert len(rest) > 10 and rest == b"x" * len(rest)


# ---------------------------------------------------------------- close semantics


@pytest.mark.parametrize("kind", ["read_until", "read_bytes", "read_until_close", "chained"])
def test_close_after_buffered_data(io_loop: IOLoop, streams: StreamKit, kind: str) -> None:
    """Data sent before the peer closed reaches the reads before the close callback."""
    a, peer = streams.stream_and_peer()
    events: list[Any] = []
    closed = Waiter(io_loop)

    def on_close() -> None:
        events.append("close")
        closed.done()

    a.set_close_callback(on_close)
    if kind == "read_until":
        a.read_until(b"\r\n", events.append)
        expected: list[Any] = [b"abc\r\n", "close"]
    elif kind == "read_bytes":
        a.read_bytes(8, events.append)
        expected = [b"abc\r\ndef", "close"]
    elif kind == "read_until_close":
        a.read_until_close(events.append)
        expected = [b"abc\r\ndef", "close"]
    else:

        def first(data: bytes) -> None:
            events.append(data)
            a.read_bytes(3, events.append)

        a.read_until(b"\r\n", first)
        expected = [b"abc\r\n", b"def", "close"]
    peer.sendall(b"abc\r\ndef")
    peer.close()
    closed.wait()
    settle(io_loop)
    assert events == expected
    assert a.closed()
    assert a.error is None


def test_peer_eof_closes_stream_cleanly(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()
    closed = Waiter(io_loop)
    events = collect_close(a, closed)
    a.read_bytes(100, lambda d: events.append("read"))
    b.close()
    closed.wait()
    settle(io_loop)
    assert events == ["close"], "an unsatisfied read does not run; close runs once"
    assert a.closed()
    assert a.error is None
    with pytest.raises(StreamClosedError):
        a.write(b"after eof")


def test_idle_stream_notices_peer_close_and_keeps_data(io_loop: IOLoop, streams: StreamKit) -> None:
    a, peer = streams.stream_and_peer()
    closed = Waiter(io_loop)
    events = collect_close(a, closed)
    peer.sendall(b"late data")
    peer.close()
    closed.wait()
    assert events == ["close"]
    assert a.closed()
    assert a.error is None
    # A read that the buffered data satisfies still succeeds after the close.
    w = Waiter(io_loop)
    a.read_bytes(4, w.callback)
    assert w.wait() == b"late"
    w2 = Waiter(io_loop)
    a.read_until(b"a", w2.callback)
    assert w2.wait() == b" da"
    # One that it cannot satisfy raises.
    with pytest.raises(StreamClosedError):
        a.read_bytes(10, lambda d: None)
    with pytest.raises(StreamClosedError):
        a.read_until(b"\n", lambda d: None)
    w3 = Waiter(io_loop)
    a.read_until_close(w3.callback)
    assert w3.wait() == b"ta"


def test_read_until_close_after_an_unsatisfied_read_was_pending(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    """The read pending at close can never be satisfied; the buffer is still readable."""
    a, peer = streams.stream_and_peer()
    closed = Waiter(io_loop)
    events = collect_close(a, closed)
    a.read_bytes(100, lambda d: events.append("read"))
    peer.sendall(b"ten bytes!")
    peer.close()
    closed.wait()
    assert events == ["close"]
    w = Waiter(io_loop)
    a.read_until_close(w.callback)
    assert w.wait() == b"ten bytes!"


def test_read_and_write_on_closed_stream_raise(io_loop: IOLoop, streams: StreamKit) -> None:
    a, _ = streams.pair()
    a.close()
    calls: list[Callable[[], object]] = [
        lambda: a.read_bytes(1, lambda d: None),
        lambda: a.read_until(b"\n", lambda d: None),
        lambda: a.write(b"x"),
    ]
    for call in calls:
        with pytest.raises(StreamClosedError) as info:
            call()
        assert isinstance(info.value, OSError)


def test_close_is_idempotent_and_close_callback_runs_once(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    a, _ = streams.pair()
    closed = Waiter(io_loop)
    events = collect_close(a, closed)
    a.close()
    a.close()
    closed.wait()
    a.close()
    settle(io_loop)
    assert events == ["close"]
    assert a.closed()
    assert a.error is None


def test_close_callback_once_when_peer_closes_and_then_local_close(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    a, b = streams.pair()
    closed = Waiter(io_loop)
    events = collect_close(a, closed)
    b.close()
    closed.wait()
    a.close()
    settle(io_loop)
    assert events == ["close"]


def test_close_from_read_callback(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()
    closed = Waiter(io_loop)
    events = collect_close(a, closed)

    def on_data(data: bytes) -> None:
        events.append(data)
        a.close()

    a.read_bytes(3, on_data)
    b.write(b"abcdef")
    closed.wait()
    settle(io_loop)
    assert events == [b"abc", "close"]
    assert a.error is None


def test_peer_reset_closes_with_connection_error(
    io_loop: IOLoop, streams: StreamKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="iostream")
    a, peer = streams.stream_and_peer()
    closed = Waiter(io_loop)
    collect_close(a, closed)
    a.read_bytes(10, lambda d: None)
    # SO_LINGER 0: close() sends RST instead of FIN.
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    closed.wait()
    assert a.closed()
    assert isinstance(a.error, ConnectionResetError)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], "a reset by the peer is not a bug: nothing logged at ERROR"


@pytest.mark.parametrize("first", ["read_until", "read_bytes", "read_until_close"])
@pytest.mark.parametrize("second", ["read_until", "read_bytes", "read_until_close"])
def test_second_read_while_pending_raises(
    io_loop: IOLoop, streams: StreamKit, first: str, second: str
) -> None:
    a, b = streams.pair()
    calls: dict[str, Callable[[Callable[[bytes], None]], None]] = {
        "read_until": lambda cb: a.read_until(b"\n", cb),
        "read_bytes": lambda cb: a.read_bytes(5, cb),
        "read_until_close": lambda cb: a.read_until_close(cb),
    }
    w = Waiter(io_loop)
    calls[first](w.callback)
    with pytest.raises(RuntimeError):
        calls[second](lambda d: None)
    assert not a.closed()
    assert a.reading()
    # The first read still completes normally.
    b.write(b"12345\n", b.close)
    assert w.wait() in (b"12345\n", b"12345")


@pytest.mark.parametrize("first", ["read_until", "read_bytes", "read_until_max_bytes"])
def test_second_read_while_first_is_satisfied_from_buffer_raises(
    io_loop: IOLoop, streams: StreamKit, first: str
) -> None:
    """A read satisfied by buffered data is pending until its callback has run."""
    a, peer = streams.stream_and_peer()
    primer = Waiter(io_loop)
    a.read_bytes(1, primer.callback)
    peer.sendall(b"-one\ntwo\n")
    primer.wait()
    spin(io_loop)  # "one\ntwo\n" is buffered now
    w = Waiter(io_loop)
    if first == "read_until":
        a.read_until(b"\n", w.callback)
    elif first == "read_bytes":
        a.read_bytes(4, w.callback)
    else:
        a.read_until(b"\n", w.callback, max_bytes=100)
    problems: list[str] = []
    if w.calls == 0:
        # Its callback has not run yet: the read is still pending.
        if not a.reading():
            problems.append("reading() is False while the read's callback is due")
        try:
            a.read_until(b"\n", lambda d: None)
        except RuntimeError:
            pass
        else:
            problems.append("a second read was accepted while the first was pending")
    assert problems == []
    assert w.wait() == b"one\n"
    w2 = Waiter(io_loop)
    a.read_until(b"\n", w2.callback)
    assert w2.wait() == b"two\n", "the refused read must not have consumed anything"


def test_peer_half_close_is_eof(io_loop: IOLoop, streams: StreamKit) -> None:
    """shutdown(SHUT_WR) by the peer is an EOF: the stream delivers, then closes."""
    a, peer = streams.stream_and_peer()
    closed = Waiter(io_loop)
    events = collect_close(a, closed)
    a.read_until_close(events.append)
    peer.sendall(b"last words")
    peer.shutdown(socket.SHUT_WR)
    closed.wait()
    assert events == [b"last words", "close"]
    assert a.error is None
    with pytest.raises(StreamClosedError):
        a.write(b"x")


def test_read_from_close_callback_gets_buffered_data(io_loop: IOLoop, streams: StreamKit) -> None:
    a, peer = streams.stream_and_peer()
    got = Waiter(io_loop)

    def on_close() -> None:
        a.read_bytes(5, got.callback)

    a.set_close_callback(on_close)
    peer.sendall(b"bytes")
    peer.close()
    assert got.wait() == b"bytes"


def test_write_callback_not_run_when_peer_goes_away(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()
    calls: list[str] = []
    closed = Waiter(io_loop)
    collect_close(a, closed)
    a.read_until_close(lambda d: None)
    a.write(b"w" * (32 * MiB), lambda: calls.append("write"))
    spin(io_loop)
    b.close()
    closed.wait()
    settle(io_loop)
    assert calls == [], "32 MiB could not all be sent: its callback must not run"
    assert a.closed()
    with pytest.raises(StreamClosedError):
        a.write(b"more")


# ---------------------------------------------------------------- limits


def test_max_bytes_without_delimiter_closes(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()
    closed = Waiter(io_loop)
    events = collect_close(a, closed)
    a.read_until(b"\r\n", lambda d: events.append("read"), max_bytes=10)
    b.write(b"x" * 20)
    closed.wait()
    assert events == ["close"]
    assert isinstance(a.error, UnsatisfiableReadError)


def test_max_bytes_on_already_buffered_data(io_loop: IOLoop, streams: StreamKit) -> None:
    a, peer = streams.stream_and_peer()
    first = Waiter(io_loop)
    a.read_bytes(1, first.callback)
    peer.sendall(b"-" + b"y" * 100)
    first.wait()
    spin(io_loop)
    closed = Waiter(io_loop)
    collect_close(a, closed)
    a.read_until(b"\n", lambda d: None, max_bytes=50)
    closed.wait()
    assert isinstance(a.error, UnsatisfiableReadError)


def test_max_bytes_delimiter_ending_exactly_at_limit(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()
    w = Waiter(io_loop)
    a.read_until(b"\r\n", w.callback, max_bytes=6)
    b.write(b"abcd\r\nmore data without the delimiter")
    assert w.wait() == b"abcd\r\n"
    assert not a.closed()


def test_max_bytes_delimiter_past_limit(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()
    closed = Waiter(io_loop)
    events = collect_close(a, closed)
    a.read_until(b"\r\n", lambda d: events.append("read"), max_bytes=6)
    b.write(b"abcdefgh\r\n")
    closed.wait()
    assert events == ["close"]
    assert isinstance(a.error, UnsatisfiableReadError)


def test_max_buffer_size_overflow_closes(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair(client_kwargs={"max_buffer_size": 64 * KiB})
    closed = Waiter(io_loop)
    events = collect_close(a, closed)
    a.read_until(b"\n", lambda d: events.append("read"))
    b.write(b"z" * MiB)
    closed.wait()
    assert events == ["close"]
    assert isinstance(a.error, StreamBufferFullError)


def test_max_buffer_size_never_exceeded(io_loop: IOLoop, streams: StreamKit) -> None:
    """docs/guarantees.md ("IOStream", "Back-pressure, not disconnection"): the
    read buffer never exceeds max_buffer_size. An idle stream with a close
    callback buffers up to it, then stops receiving (back-pressure, issue 9): it
    is not disconnected, and nothing is lost."""
    a, b = streams.pair(client_kwargs={"max_buffer_size": 1000})
    closes = collect_close(a)  # idle, with a close callback: it buffers what arrives
    b.write(b"q" * 5000)
    settle(io_loop)
    assert a._read_buffer.size <= 1000
    assert not a.closed() and closes == []
    got = bytearray()
    done = Waiter(io_loop)

    def on_data(data: bytes) -> None:
        got.extend(data)
        if len(got) == 5000:
            done.done()
        else:
            assert a._read_buffer.size <= 1000
            a.read_bytes(500, on_data)

    a.read_bytes(500, on_data)
    done.wait()
    assert bytes(got) == b"q" * 5000
    assert a.error is None


def test_idle_stream_pushes_back_at_max_buffer_size(io_loop: IOLoop, streams: StreamKit) -> None:
    """Formerly: an idle stream closed at max_buffer_size. Now it stops
    receiving there and the peer's writes back up in the kernel."""
    a, b = streams.pair(client_kwargs={"max_buffer_size": 4096})
    closes = collect_close(a)
    b.write(b"q" * 100_000)
    settle(io_loop)
    assert not a.closed() and closes == []
    assert a.error is None
    assert a._read_buffer.size == 4096


def test_read_bytes_of_exactly_max_buffer_size(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair(client_kwargs={"max_buffer_size": 1000})
    w = Waiter(io_loop)
    a.read_bytes(1000, w.callback)
    b.write(b"k" * 1000)
    assert w.wait() == b"k" * 1000
    assert not a.closed()


def test_max_write_buffer_size(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair(client_kwargs={"max_write_buffer_size": MiB})
    chunk = 64 * KiB
    accepted: list[bytes] = []
    rejected: StreamBufferFullError | None = None
    for i in range(10_000):  # bounded: the kernel buffers are far smaller
        piece = bytes([i % 250]) * chunk
        try:
            a.write(piece)
        except StreamBufferFullError as exc:
            rejected = exc
            break
        accepted.append(piece)
    assert rejected is not None, "writes past max_write_buffer_size must raise"
    assert not a.closed(), "a refused write leaves the stream open"
    assert a.error is None
    total = sum(map(len, accepted))
    w = Waiter(io_loop)
    b.read_bytes(total, w.callback)
    got = w.wait()
    assert got == b"".join(accepted), "nothing of the refused write was sent"
    # After draining, the stream still works.
    w2 = Waiter(io_loop)
    b.read_bytes(5, w2.callback)
    a.write(b"later")
    assert w2.wait() == b"later"
    assert not a.closed()


def test_single_write_larger_than_max_write_buffer_size(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    """Reaching the limit with one oversize write: refused, nothing buffered."""
    a, b = streams.pair(client_kwargs={"max_write_buffer_size": 64 * KiB})
    # Fill the kernel buffers first so that nothing more can go straight out.
    accepted = 0
    for _ in range(10_000):
        try:
            a.write(b"f" * (16 * KiB))
        except StreamBufferFullError:
            break
        accepted += 16 * KiB
    else:
        raise AssertionError("never reached max_write_buffer_size")
    with pytest.raises(StreamBufferFullError):
        a.write(b"G" * MiB)
    assert not a.closed()
    w = Waiter(io_loop)
    b.read_bytes(accepted, w.callback)
    assert w.wait() == b"f" * accepted
    w2 = Waiter(io_loop)
    b.read_bytes(2, w2.callback)
    a.write(b"ok")
    assert w2.wait() == b"ok", "nothing of the refused write may follow"


# ---------------------------------------------------------------- writes


def test_write_callbacks_run_once_in_order_after_their_data(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    a, peer = streams.stream_and_peer()
    rng = random.Random(99)
    sizes = [rng.randint(1, 300 * KiB) for _ in range(20)] + [1, 2, 3]
    payloads = [rng.randbytes(n) for n in sizes]
    order: list[int] = []
    received = bytearray()
    w = Waiter(io_loop)

    def make_cb(i: int) -> Callable[[], None]:
        def cb() -> None:
            order.append(i)
            # Everything up to and including write i has been handed to the
            # kernel, so the peer can read it all without the loop's help.
            need = sum(sizes[: i + 1]) - len(received)
            if need > 0:
                received.extend(recv_exactly(peer, need))
            if i == len(payloads) - 1:
                w.done()

        return cb

    for i, p in enumerate(payloads):
        a.write(p, make_cb(i))
    w.wait()
    settle(io_loop)
    assert order == list(range(len(payloads)))
    assert bytes(received) == b"".join(payloads)
    assert not a.writing()


def test_write_empty_runs_callback(io_loop: IOLoop, streams: StreamKit) -> None:
    a, _ = streams.pair()
    w = Waiter(io_loop, 2)
    a.write(b"abc", lambda: w.done("first"))
    a.write(b"", lambda: w.done("empty"))
    w.wait()
    assert w.values == ["first", "empty"]


def _bytes_like_cases() -> list[tuple[str, Callable[[], Any]]]:
    big = random.Random(5).randbytes(MiB + 11)
    return [
        ("bytes", lambda: b"plain bytes"),
        ("bytearray", lambda: bytearray(b"a bytearray")),
        ("memoryview", lambda: memoryview(b"a memoryview")),
        ("memoryview-slice", lambda: memoryview(b"0123456789abcdef")[3:11]),
        ("array-i", lambda: array.array("i", range(1000))),
        ("memoryview-of-array", lambda: memoryview(array.array("d", [1.5, 2.5, 3.5]))),
        ("big-bytes", lambda: big),
        ("big-memoryview-slice", lambda: memoryview(big)[7 : 7 + 700 * KiB]),
        ("big-bytearray", lambda: bytearray(big)),
    ]


@pytest.mark.parametrize(
    ("name", "make"), _bytes_like_cases(), ids=[c[0] for c in _bytes_like_cases()]
)
def test_write_accepts_bytes_like(
    io_loop: IOLoop, streams: StreamKit, name: str, make: Callable[[], Any]
) -> None:
    a, b = streams.pair()
    obj = make()
    expected = memoryview(obj).tobytes()
    w = Waiter(io_loop)
    b.read_bytes(len(expected) + 4, w.callback)
    a.write(obj)
    a.write(b"_end")
    assert w.wait() == expected + b"_end"


def test_write_many_small_bytes_in_order(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()
    parts = [b"%06d," % i for i in range(20_000)]
    for p in parts:
        a.write(p)
    w = Waiter(io_loop)
    b.read_bytes(sum(map(len, parts)), w.callback)
    assert w.wait() == b"".join(parts)


def test_32mib_each_way_random_write_sizes(io_loop: IOLoop, streams: StreamKit) -> None:
    size = 32 * MiB
    a, b = streams.pair()
    rng = random.Random(20240601)
    data = {"ab": rng.randbytes(size), "ba": rng.randbytes(size)}
    digests: dict[str, bytes] = {}
    w = Waiter(io_loop, 2)

    def send(stream: IOStream, payload: bytes, seed: int) -> None:
        r = random.Random(seed)
        view = memoryview(payload)
        off = 0
        while off < size:
            n = min(
                r.choice([1, 7, 100, 1500, 4096, 65536, 200_000, r.randint(1, 512 * KiB)]),
                size - off,
            )
            stream.write(view[off : off + n])
            off += n

    def receive(stream: IOStream, key: str, seed: int) -> None:
        r = random.Random(seed)
        h = hashlib.sha256()
        got = [0]

        def on_data(chunk: bytes) -> None:
            h.update(chunk)
            got[0] += len(chunk)
            if got[0] >= size:
                digests[key] = h.digest()
                w.done()
            else:
                n = min(r.randint(1, 400 * KiB), size - got[0])
                stream.read_bytes(n, on_data)

        stream.read_bytes(r.randint(1, 400 * KiB), on_data)

    receive(b, "ab", 1)
    receive(a, "ba", 2)
    send(a, data["ab"], 3)
    send(b, data["ba"], 4)
    w.wait(timeout=60)
    assert digests["ab"] == hashlib.sha256(data["ab"]).digest()
    assert digests["ba"] == hashlib.sha256(data["ba"]).digest()
    assert not a.closed() and not b.closed()


# ---------------------------------------------------------------- long chains


def test_100k_writes_chained_from_write_callbacks(io_loop: IOLoop, streams: StreamKit) -> None:
    n = 100_000
    a, b = streams.pair()
    count = [0]
    depths: dict[int, int] = {}
    done = Waiter(io_loop)

    def on_written() -> None:
        count[0] += 1
        if count[0] in (10, n // 2, n):
            depths[count[0]] = frame_depth()
        if count[0] == n:
            done.done("writes")
        else:
            a.write(b"%07d" % count[0], on_written)

    received = Waiter(io_loop)
    b.read_bytes(7 * n, received.callback)
    a.write(b"%07d" % 0, on_written)
    done.wait(timeout=60)
    assert count[0] == n
    assert received.wait() == b"".join(b"%07d" % i for i in range(n))
    assert max(depths.values()) - min(depths.values()) < 30, depths


@pytest.mark.parametrize("method", ["read_until", "read_bytes"])
def test_200k_reads_chained_on_buffered_data_do_not_grow_the_stack(
    io_loop: IOLoop, streams: StreamKit, method: str
) -> None:
    n = 200_000
    a, peer = streams.stream_and_peer()
    closed = Waiter(io_loop)
    collect_close(a, closed)
    peer.sendall(b"x\n" * n)
    peer.close()
    closed.wait()  # everything is buffered now; every read below is satisfied from it
    assert a.error is None
    depths: dict[int, int] = {}
    count = [0]
    done = Waiter(io_loop)

    def read_next() -> None:
        if method == "read_until":
            a.read_until(b"\n", on_read)
        else:
            a.read_bytes(2, on_read)

    def on_read(data: bytes) -> None:
        if data != b"x\n":
            done.done(("bad data", count[0], data))
            return
        count[0] += 1
        if count[0] in (10, 1000, 100_000, n):
            depths[count[0]] = frame_depth()
        if count[0] == n:
            done.done("ok")
        else:
            read_next()

    io_loop.add_callback(read_next)
    assert done.wait(timeout=60) == "ok"
    assert count[0] == n
    assert depths[10] == depths[1000] == depths[100_000] == depths[n], depths


@pytest.mark.slow
def test_a_million_reads_chained_on_buffered_data(io_loop: IOLoop, streams: StreamKit) -> None:
    """The contract's own number (docs/guarantees.md, "IOStream", "Cost"): a million
    reads chained from callbacks on buffered data."""
    n = 1_000_000
    a, peer = streams.stream_and_peer()
    closed = Waiter(io_loop)
    collect_close(a, closed)
    blob = b"z\n" * n

    def send_all() -> None:
        peer.sendall(blob)
        peer.close()

    sender = threading.Thread(target=send_all)
    sender.start()
    closed.wait(timeout=60)
    sender.join(timeout=60)
    assert a.error is None
    count = [0]
    depths: list[int] = []
    done = Waiter(io_loop)

    def on_read(data: bytes) -> None:
        count[0] += 1
        if count[0] in (10, n // 2, n):
            depths.append(frame_depth())
        if count[0] == n:
            done.done("ok")
        elif data == b"z\n":
            a.read_until(b"\n", on_read)
        else:
            done.done(("bad data", data))

    io_loop.add_callback(lambda: a.read_until(b"\n", on_read))
    assert done.wait(timeout=120) == "ok"
    assert len(set(depths)) == 1, depths


def test_200k_reads_chained_while_data_arrives(io_loop: IOLoop, streams: StreamKit) -> None:
    n = 200_000
    a, b = streams.pair()
    count = [0]
    depth_min = [10**9]
    depth_max = [0]
    done = Waiter(io_loop)
    a.set_close_callback(lambda: done.done("closed"))

    def on_line(data: bytes) -> None:
        count[0] += 1
        d = frame_depth()
        depth_min[0] = min(depth_min[0], d)
        depth_max[0] = max(depth_max[0], d)
        if count[0] == n:
            done.done("ok")
        else:
            a.read_until(b"\n", on_line)

    a.read_until(b"\n", on_line)
    b.write(b"y\n" * n)
    assert done.wait(timeout=60) == "ok", a.error
    assert count[0] == n
    assert depth_max[0] - depth_min[0] < 30, (depth_min[0], depth_max[0])


# ---------------------------------------------------------------- callback exceptions


class Boom(Exception):
    """The exception user callbacks raise in these tests."""


@pytest.mark.parametrize(
    "where", ["read_until", "read_bytes", "streaming", "read_until_close", "write", "connect"]
)
def test_exception_in_callback_closes_only_that_stream(
    io_loop: IOLoop, streams: StreamKit, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    caplog.set_level(logging.ERROR, logger="iostream")
    exc = Boom(where)

    def boom(*args: Any) -> None:
        raise exc

    closed = Waiter(io_loop)
    if where == "connect":
        listener = streams.listener()
        a = streams.stream(streams.track(socket.socket()))
        collect_close(a, closed)
        a.connect(listener.getsockname(), boom)
        streams.track(accept_on_loop(io_loop, listener))
    else:
        a, b = streams.pair()
        collect_close(a, closed)
        if where == "read_until":
            a.read_until(b"\n", boom)
        elif where == "read_bytes":
            a.read_bytes(3, boom)
        elif where == "streaming":
            a.read_bytes(100, lambda d: None, streaming_callback=boom)
        elif where == "read_until_close":
            a.read_until_close(boom)
        elif where == "write":
            a.write(b"data", boom)
        if where == "read_until_close":
            b.write(b"abc\n", b.close)
        else:
            b.write(b"abc\n")
    # Another stream on the same loop, busy meanwhile.
    c, d = streams.pair()
    echo = Waiter(io_loop)
    d.read_bytes(4, lambda data: d.write(data))
    c.write(b"ping")
    c.read_bytes(4, echo.callback)
    closed.wait()
    assert a.closed()
    if where == "read_until_close":
        # Its callback runs as the peer's EOF closes the stream: the close is
        # already a clean one, so error may stay None.
        assert a.error is exc or a.error is None
    else:
        assert a.error is exc
    assert iostream_errors(caplog, exc), "the exception must be logged on the iostream logger"
    assert echo.wait() == b"ping"
    assert not c.closed() and not d.closed()
    w = Waiter(io_loop)
    c.read_bytes(4, w.callback)
    d.write(b"more")
    assert w.wait() == b"more"


def test_exception_in_close_callback_is_logged(
    io_loop: IOLoop, streams: StreamKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="iostream")
    exc = Boom("close")
    a, _ = streams.pair()
    ran: list[int] = []

    def on_close() -> None:
        ran.append(1)
        raise exc

    a.set_close_callback(on_close)
    a.close()
    spin(io_loop)
    settle(io_loop)
    assert ran == [1]
    assert iostream_errors(caplog, exc)
    assert a.closed()


# ---------------------------------------------------------------- state queries


def test_reading_writing_closed(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()
    assert not a.reading() and not a.writing() and not a.closed()
    w = Waiter(io_loop)
    a.read_bytes(3, w.callback)
    assert a.reading()
    b.write(b"abc")
    w.wait()
    assert not a.reading()
    big = b"w" * (32 * MiB)  # far more than loopback kernel buffers hold
    a.write(big)
    spin(io_loop)
    assert a.writing(), "32 MiB to a peer that does not read: data must be pending"
    drained = Waiter(io_loop)
    b.read_bytes(len(big), drained.callback)
    assert len(drained.wait()) == len(big)
    spin(io_loop)
    assert not a.writing()
    assert not a.closed()
    a.close()
    assert a.closed()
    assert not a.reading() and not a.writing()


# ---------------------------------------------------------------- write_chunk_size


class RecordingSocket(socket.socket):
    """A socket that records how many bytes each ``send`` call was handed."""

    sizes: list[int]

    def send(self, data: Any, flags: int = 0) -> int:
        if not hasattr(self, "sizes"):
            self.sizes = []
        self.sizes.append(memoryview(data).nbytes)
        return super().send(data, flags)


def recording_pair(streams: StreamKit) -> tuple[RecordingSocket, socket.socket]:
    a, b = loopback_pair()
    rec = RecordingSocket(fileno=a.detach())
    rec.setblocking(False)
    rec.sizes = []
    streams.track(rec)
    streams.track(b)
    return rec, b


def test_write_chunk_size_caps_each_send(io_loop: IOLoop, streams: StreamKit) -> None:
    rec, b = recording_pair(streams)
    a = streams.stream(rec, write_chunk_size=1000)
    peer = streams.stream(b)
    data = random.Random(3).randbytes(300 * KiB + 5)
    w = Waiter(io_loop)
    peer.read_bytes(len(data), w.callback)
    a.write(data[:100])
    a.write(memoryview(data)[100:])
    assert w.wait() == data
    assert rec.sizes, "the stream must send through socket.send"
    assert max(rec.sizes) <= 1000, max(rec.sizes)


def test_default_write_chunk_size_on_windows_is_128k(
    io_loop: IOLoop, streams: StreamKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    import iostream.stream

    monkeypatch.setattr(iostream.stream, "_WINDOWS", True)
    rec, b = recording_pair(streams)
    a = streams.stream(rec)
    monkeypatch.undo()
    peer = streams.stream(b)
    data = random.Random(4).randbytes(2 * MiB)
    w = Waiter(io_loop)
    peer.read_bytes(len(data), w.callback)
    a.write(data)
    assert w.wait() == data
    assert rec.sizes
    assert max(rec.sizes) <= 128 * KiB, max(rec.sizes)


def test_default_write_chunk_size_elsewhere_is_uncapped(
    io_loop: IOLoop, streams: StreamKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    import iostream.stream

    monkeypatch.setattr(iostream.stream, "_WINDOWS", False)
    rec, b = recording_pair(streams)
    a = streams.stream(rec)
    monkeypatch.undo()
    peer = streams.stream(b)
    data = random.Random(4).randbytes(MiB)
    w = Waiter(io_loop)
    peer.read_bytes(len(data), w.callback)
    a.write(data)
    assert w.wait() == data
    assert rec.sizes
    assert rec.sizes[0] == len(data), f"no cap: the first send gets it all, got {rec.sizes[:5]}"


# ---------------------------------------------------------------- poller refusal


def test_fd_refused_by_the_loop_closes_with_value_error(
    io_loop: IOLoop, streams: StreamKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/guarantees.md ("IOStream", "Refused fds"): a stream whose fd the loop
    refuses closes with that ValueError.

    (select above FD_SETSIZE used to be the way to get a refusal; the IOLoop
    now watches such fds through its per-fd fallback, so the refusal is
    made here: add_handler raises for this one stream.)
    """
    c, d = streams.pair()  # a working stream: it must keep working after the refusal
    a, _ = streams.pair()
    real_add_handler = io_loop.add_handler
    refusal = ValueError("fd refused by this poller")

    def refusing_add_handler(fd: Any, handler: Any, events: int) -> None:
        if fd is a:
            raise refusal
        real_add_handler(fd, handler, events)

    monkeypatch.setattr(io_loop, "add_handler", refusing_add_handler)
    closed = Waiter(io_loop)
    events = collect_close(a, closed)  # the close callback makes it want READ: refused
    closed.wait()
    settle(io_loop)
    assert a.closed()
    assert a.error is refusal
    assert events == ["close"]
    w = Waiter(io_loop)
    c.read_bytes(2, w.callback)
    d.write(b"ok")
    assert w.wait() == b"ok"


# ---------------------------------------------------------------- InterruptedError


class InterruptingSocket(socket.socket):
    """A socket whose first send and first recv/recv_into raise InterruptedError."""

    interrupted: set[str]

    def _maybe_interrupt(self, kind: str) -> None:
        if kind not in self.interrupted:
            self.interrupted.add(kind)
            raise InterruptedError(4, "Interrupted system call")

    def send(self, data: Any, flags: int = 0) -> int:
        self._maybe_interrupt("send")
        return super().send(data, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._maybe_interrupt("recv")
        return super().recv(bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self._maybe_interrupt("recv")
        return super().recv_into(buffer, nbytes, flags)


def test_interrupted_error_is_retried(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = loopback_pair()
    sock = InterruptingSocket(fileno=a.detach())
    sock.setblocking(False)
    sock.interrupted = set()
    streams.track(sock)
    streams.track(b)
    stream = streams.stream(sock)
    peer = streams.stream(b)
    closed_events = collect_close(stream)
    got = Waiter(io_loop)
    stream.read_bytes(5, got.callback)
    peer.write(b"hello")
    assert got.wait() == b"hello"
    echoed = Waiter(io_loop)
    peer.read_bytes(5, echoed.callback)
    stream.write(b"world")
    assert echoed.wait() == b"world"
    assert sock.interrupted == {"send", "recv"}, "the test must actually interrupt both"
    spin(io_loop)
    assert not stream.closed()
    assert stream.error is None
    assert closed_events == []


# ---------------------------------------------------------------- cost


def test_read_until_16mib_in_64k_chunks(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair(client_kwargs={"read_chunk_size": 64 * KiB})
    body = b"." * (16 * MiB)
    w = Waiter(io_loop)
    a.read_until(b"\r\n\r\n", w.callback)
    b.write(body)
    b.write(b"\r\n\r\nafter")
    got = w.wait(timeout=30)
    assert len(got) == len(body) + 4 and got.endswith(b"..\r\n\r\n")


def test_read_until_cost_is_linear(io_loop: IOLoop, streams: StreamKit) -> None:
    """16 MiB in 4 KiB chunks: a rescan or rejoin per chunk is ~30 GB of work.

    Compared with read_bytes over the same data and chunking, so that a slow
    machine slows both.
    """
    size = 16 * MiB
    body = b"-" * size

    def timed(reader: Callable[[IOStream, Callable[[bytes], None]], None]) -> tuple[float, int]:
        a, b = streams.pair(client_kwargs={"read_chunk_size": 4 * KiB})
        w = Waiter(io_loop)
        start = time.perf_counter()
        reader(a, w.callback)
        b.write(body)
        b.write(b"|END")
        n = len(w.wait(timeout=60))
        return time.perf_counter() - start, n

    t_bytes, n1 = timed(lambda s, cb: s.read_bytes(size + 4, cb))
    t_until, n2 = timed(lambda s, cb: s.read_until(b"|END", cb))
    assert n1 == n2 == size + 4
    assert t_until < 10 * t_bytes + 3.0, (t_until, t_bytes)


# ---------------------------------------------------------------- argument validation


def _bad_calls(a: IOStream) -> list[tuple[str, type[Exception], str, Callable[[], Any]]]:
    def cb(d: bytes) -> None:
        return None

    return [
        ("str-delimiter", TypeError, "delimiter", lambda: a.read_until("\n", cb)),  # type: ignore[call-overload]
        ("empty-delimiter", ValueError, "delimiter", lambda: a.read_until(b"", cb)),
        ("int-delimiter", TypeError, "delimiter", lambda: a.read_until(10, cb)),  # type: ignore[call-overload]
        ("read_until-callback", TypeError, "callback", lambda: a.read_until(b"\n", 42)),  # type: ignore[call-overload]
        ("negative-num_bytes", ValueError, "num_bytes", lambda: a.read_bytes(-1, cb)),
        ("str-num_bytes", TypeError, "num_bytes", lambda: a.read_bytes("5", cb)),  # type: ignore[call-overload]
        ("read_bytes-callback", TypeError, "callback", lambda: a.read_bytes(5, "cb")),  # type: ignore[call-overload]
        (
            "streaming_callback",
            TypeError,
            "streaming_callback",
            lambda: a.read_bytes(5, cb, streaming_callback=3),  # type: ignore[call-overload]
        ),
        ("read_until_close-callback", TypeError, "callback", lambda: a.read_until_close(5)),  # type: ignore[call-overload]
        ("str-data", TypeError, "data", lambda: a.write("text")),  # type: ignore[call-overload]
        ("int-data", TypeError, "data", lambda: a.write(5)),  # type: ignore[call-overload]
        ("write-callback", TypeError, "callback", lambda: a.write(b"x", 3)),  # type: ignore[call-overload]
        ("close-callback", TypeError, "callback", lambda: a.set_close_callback(7)),  # type: ignore[arg-type]
    ]


_BAD_IDS = [c[0] for c in _bad_calls(None)]  # type: ignore[arg-type]


@pytest.mark.parametrize("case", _BAD_IDS)
def test_argument_validation(io_loop: IOLoop, streams: StreamKit, case: str) -> None:
    a, b = streams.pair()
    _, exc_type, argname, call = {c[0]: c for c in _bad_calls(a)}[case]
    with pytest.raises(exc_type) as info:
        call()
    assert argname in str(info.value), f"message should name {argname!r}: {info.value}"
    # A refused call changes nothing: the stream is open and idle.
    assert not a.closed()
    assert not a.reading()
    w = Waiter(io_loop)
    a.read_bytes(2, w.callback)
    b.write(b"ok")
    assert w.wait() == b"ok"
