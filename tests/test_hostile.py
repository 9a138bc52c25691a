"""Hostile peers (issue 6, item 3): nothing a peer does hangs, leaks or blows up the loop.

The peer is a raw socket driven by the same loop (:class:`RawPeer`); the
library is the server (a :class:`~iostream.TCPServer`) and, where it
applies, the client. The peers:

* never sends the delimiter — ``read_until(max_bytes=N)`` closes with
  :class:`UnsatisfiableReadError`; without ``max_bytes``, the read buffer
  closes the stream with :class:`StreamBufferFullError` at
  ``max_buffer_size``, and is never seen above it (the buffer records its
  peak);
* floods without reading (our side writes, the peer never reads) — with
  ``max_write_buffer_size`` the write raises :class:`StreamBufferFullError`,
  the stream stays open and goes on working once the peer reads; without
  it, the write buffer (so memory) grows by exactly what the application
  queued and no more, and the application's own deadline closes it;
* resets mid-write (SO_LINGER 0, close: RST) — the writer closes with
  ConnectionResetError or BrokenPipeError in ``error``, its close callback
  runs once and its write callback never;
* half-closes (``shutdown(SHUT_WR)``) — pending data goes to the reads it
  satisfies, then the stream closes on EOF, ``error`` None (docs/guarantees.md,
  "IOStream", "End of stream" and "Closing");
* sends garbage to a TLS port / answers a TLS client with garbage — the
  SSLIOStream closes with :class:`ssl.SSLError` in ``error``; the connect
  callback never runs;
* connects and says nothing — the application's idle timeout
  (``io_loop.call_later`` + ``stream.close(TimeoutError(...))``) closes it;
  meanwhile it costs one fd on our side and no CPU (the loop sleeps).

In every case a well-behaved client of the same loop (and, on the server
side, the same server) runs at the same time and must complete, every byte
checked; the close callback runs exactly once; and the loop's handler table
ends where it started.
"""

from __future__ import annotations

import gc
import logging
import os
import resource
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _load_helpers import LINGER_ZERO, RawPeer, fd_count, rss_bytes
from _stream_helpers import (  # noqa: F401  (fixtures)
    TLSFiles,
    Waiter,
    accept_on_loop,
    settle,
    tls_fixture,
)

from iostream import (
    IOLoop,
    IOStream,
    SSLIOStream,
    StreamBufferFullError,
    StreamClosedError,
    TCPServer,
    UnsatisfiableReadError,
)
from iostream._buffer import ReadBuffer

ROLES = ["server", "client"]


class RecordingReadBuffer(ReadBuffer):
    """A stream read buffer that remembers the most bytes it ever held."""

    __slots__ = ("peak",)

    def __init__(self) -> None:
        super().__init__()
        self.peak = 0

    def append(self, chunk: bytes | memoryview) -> None:
        """Append, and record the new size if it is the largest yet."""
        super().append(chunk)
        if self.size > self.peak:
            self.peak = self.size


# ---------------------------------------------------------------- the arena


def line_echo(stream: IOStream) -> None:
    """The well-behaved protocol: echo each line (64 KiB at most)."""

    def on_line(line: bytes) -> None:
        stream.write(line)
        stream.read_until(b"\n", on_line, max_bytes=65536)

    stream.read_until(b"\n", on_line, max_bytes=65536)


class Subject:
    """The stream under attack (ours), and what happened to it."""

    def __init__(self, io_loop: IOLoop) -> None:
        self.io_loop = io_loop
        self.stream: IOStream | None = None
        self.close_calls = 0
        self.events: list[str] = []
        self.closed = Waiter(io_loop)
        self.ready = Waiter(io_loop)

    def adopt(self, stream: IOStream) -> None:
        """Take *stream* as the subject: count its close callbacks."""
        self.stream = stream
        stream.set_close_callback(self._on_close)
        self.ready.done()

    def _on_close(self) -> None:
        self.close_calls += 1
        self.events.append("close")
        self.closed.done()

    @property
    def error(self) -> BaseException | None:
        """The subject's ``error``."""
        assert self.stream is not None
        return self.stream.error


class Arena:
    """A TCPServer on the test's loop: line echo for everyone, except the
    connections from a hostile peer's port, which get *policy*."""

    def __init__(
        self,
        io_loop: IOLoop,
        ssl_options: ssl.SSLContext | None = None,
        **stream_kwargs: Any,
    ) -> None:
        self.io_loop = io_loop
        self.server = TCPServer(
            self._handle, io_loop=io_loop, ssl_options=ssl_options, **stream_kwargs
        )
        self.port = self.server.listen(0)
        self.policies: dict[int, Callable[[IOStream], None]] = {}
        self.accepted = 0

    def _handle(self, stream: IOStream, address: Any) -> None:
        self.accepted += 1
        policy = self.policies.pop(address[1], line_echo)
        policy(stream)


class Healthy:
    """A well-behaved client: *rounds* line exchanges, each byte checked."""

    def __init__(
        self,
        io_loop: IOLoop,
        port: int,
        rounds: int = 20,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.rounds = rounds
        self.done = Waiter(io_loop)
        self.verified = 0
        self.mismatches: list[bytes] = []
        sock = socket.socket()
        if ssl_context is not None:
            self.stream: IOStream = SSLIOStream(sock, ssl_options=ssl_context, io_loop=io_loop)
        else:
            self.stream = IOStream(sock, io_loop=io_loop)
        self.stream.connect(("127.0.0.1", port), server_hostname="localhost")
        self.stream.set_close_callback(self._on_close)
        self._send(0)

    def _line(self, i: int) -> bytes:
        return b"ping %d %s\n" % (i, b"abcdefgh" * (i * 37 % 500))

    def _send(self, i: int) -> None:
        line = self._line(i)
        self.stream.write(line)
        self.stream.read_until(b"\n", lambda data: self._on_line(i, data), max_bytes=65536)

    def _on_line(self, i: int, data: bytes) -> None:
        if data == self._line(i):
            self.verified += 1
        else:
            self.mismatches.append(data)
        if i + 1 < self.rounds:
            self._send(i + 1)
        else:
            self.stream.close()

    def _on_close(self) -> None:
        self.done.done(self.stream.error)

    def check(self, timeout: float = 20.0) -> None:
        """Wait for the end; assert every round was echoed exactly, closed cleanly."""
        self.done.wait(timeout)
        assert self.mismatches == []
        assert self.verified == self.rounds, self.stream.error
        assert self.stream.error is None


@pytest.fixture
def handlers_at_start(io_loop: IOLoop) -> Iterator[int]:
    """The loop's handler count at the start; the test must end with the same."""
    before = io_loop.handler_count()
    yield before


def hostile_subject(
    io_loop: IOLoop,
    role: str,
    policy: Callable[[IOStream], None],
    stream_kwargs: dict[str, Any] | None = None,
    tls: TLSFiles | None = None,
    connect_callback: Callable[[], object] | None = None,
) -> tuple[Subject, RawPeer, Arena]:
    """Connect our stream (the *role* end) to a raw peer; apply *policy* to ours.

    role "server": the peer connects to an Arena (TCPServer) whose streams
    get *stream_kwargs*; role "client": our IOStream (SSLIOStream with *tls*)
    connects to the peer's listening socket, with *connect_callback*. Either way an Arena serves the
    well-behaved clients. Returns once our stream exists.
    """
    kwargs = stream_kwargs or {}
    subject = Subject(io_loop)
    server_context = tls.server_context() if tls is not None else None
    if role == "server":
        arena = Arena(io_loop, ssl_options=server_context, **kwargs)
        peer = RawPeer.connect(io_loop, arena.port)

        def adopt(stream: IOStream) -> None:
            subject.adopt(stream)
            policy(stream)

        arena.policies[peer.local_port()] = adopt
        subject.ready.wait()
        return subject, peer, arena
    arena = Arena(io_loop, ssl_options=server_context)
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        sock = socket.socket()
        stream: IOStream
        if tls is not None:
            stream = SSLIOStream(sock, ssl_options=tls.client_context(), io_loop=io_loop, **kwargs)
        else:
            stream = IOStream(sock, io_loop=io_loop, **kwargs)
        stream.connect(listener.getsockname(), connect_callback, server_hostname="localhost")
        subject.adopt(stream)
        policy(stream)
        conn = accept_on_loop(io_loop, listener)
    finally:
        listener.close()
    return subject, RawPeer(io_loop, conn), arena


def finish(
    io_loop: IOLoop, subject: Subject, peer: RawPeer, arena: Arena, handlers_before: int
) -> None:
    """Common end: the close callback ran exactly once; nothing is left registered."""
    subject.closed.wait()
    settle(io_loop)
    assert subject.close_calls == 1
    assert subject.stream is not None and subject.stream.closed()
    peer.close()
    arena.server.stop()
    assert io_loop.handler_count() == handlers_before


# ---------------------------------------------------------------- never the delimiter


@pytest.mark.parametrize("role", ROLES)
def test_no_delimiter_within_max_bytes(io_loop: IOLoop, role: str, handlers_at_start: int) -> None:
    got: list[bytes] = []

    def policy(stream: IOStream) -> None:
        stream.read_until(b"\n", got.append, max_bytes=4096)

    subject, peer, arena = hostile_subject(io_loop, role, policy)
    healthy = Healthy(io_loop, arena.port)
    peer.flood(1 << 20)
    healthy.check()
    subject.closed.wait()
    assert isinstance(subject.error, UnsatisfiableReadError), subject.error
    assert got == []
    finish(io_loop, subject, peer, arena, handlers_at_start)


@pytest.mark.parametrize("role", ROLES)
def test_no_delimiter_fills_max_buffer_size(
    io_loop: IOLoop, role: str, handlers_at_start: int
) -> None:
    limit = 256 * 1024
    buffers: list[RecordingReadBuffer] = []
    got: list[bytes] = []

    def policy(stream: IOStream) -> None:
        buffer = RecordingReadBuffer()
        stream._read_buffer = buffer
        buffers.append(buffer)
        stream.read_until(b"\n", got.append)

    subject, peer, arena = hostile_subject(
        io_loop, role, policy, stream_kwargs={"max_buffer_size": limit}
    )
    healthy = Healthy(io_loop, arena.port)
    offered = 64 << 20
    peer.flood(offered)
    healthy.check()
    subject.closed.wait()
    assert isinstance(subject.error, StreamBufferFullError), subject.error
    assert got == []
    # Memory is bounded: the buffer never held more than max_buffer_size...
    assert 0 < buffers[0].peak <= limit
    # ...and the stream stopped taking data: the peer could not push its
    # 64 MiB (only what fits in our buffer plus the kernel's socket buffers).
    assert peer.sent < offered // 2, peer.sent
    finish(io_loop, subject, peer, arena, handlers_at_start)


# ---------------------------------------------------------------- floods without reading


PATTERN = bytes(range(256)) * 256  # 64 KiB; position-dependent, so order shows


@pytest.mark.parametrize("role", ROLES)
def test_peer_never_reads_with_write_limit(
    io_loop: IOLoop, role: str, handlers_at_start: int
) -> None:
    limit = 1 << 20
    accepted: list[int] = []
    refused: list[BaseException] = []

    def policy(stream: IOStream) -> None:
        # The application writes 64 KiB chunks until the stream refuses one.
        for _ in range(10_000):
            try:
                stream.write(PATTERN)
            except StreamBufferFullError as exc:
                refused.append(exc)
                return
            accepted.append(len(PATTERN))

    subject, peer, arena = hostile_subject(
        io_loop, role, policy, stream_kwargs={"max_write_buffer_size": limit}
    )
    assert refused, "the write limit was never reached"
    assert subject.stream is not None
    stream = subject.stream
    # docs/guarantees.md ("IOStream", "Limits"): the write raised, buffered
    # nothing of it, and the stream stays open.
    assert not stream.closed() and stream.error is None
    assert stream._write_buffer.size <= limit
    healthy = Healthy(io_loop, arena.port)
    healthy.check()
    assert not stream.closed()
    # The peer finally reads: every accepted byte arrives, in order.
    total = sum(accepted)
    waiter = Waiter(io_loop)
    peer.on_received = lambda p: waiter.done() if len(p.received) >= total else None
    peer.read(total + 1)
    waiter.wait()
    assert len(peer.received) == total
    assert peer.received == PATTERN * (total // len(PATTERN))
    # Then it goes away without a word: the stream notices (RST) and closes.
    peer.reset()
    subject.closed.wait()
    assert isinstance(subject.error, (ConnectionResetError, BrokenPipeError)), subject.error
    finish(io_loop, subject, peer, arena, handlers_at_start)


def test_peer_never_reads_without_write_limit(io_loop: IOLoop, handlers_at_start: int) -> None:
    """Without max_write_buffer_size, memory grows by what the app queued, no more.

    The application is responsible for its own limit here: this one queues
    32 MiB in 4 KiB writes (small writes are copied into the write buffer),
    then gives the peer 0.2 s to read, and closes the stream with a
    TimeoutError when it does not. The write buffer is freed at close.
    """
    queued = 32 << 20
    chunk = PATTERN[:4096]

    def policy(stream: IOStream) -> None:
        pass

    subject, peer, arena = hostile_subject(io_loop, "server", policy)
    assert subject.stream is not None
    stream = subject.stream
    rss_before = rss_bytes()
    for _ in range(queued // len(chunk)):
        stream.write(chunk)
    buffered = stream._write_buffer.size
    # What the kernel took at once is gone from the buffer; the rest waits.
    assert queued - 16 * (1 << 20) <= buffered <= queued
    rss_after = rss_bytes()
    if rss_before is not None and rss_after is not None:
        # Grows by about what was queued — not by a multiple of it.
        assert rss_after - rss_before <= 2 * queued, (rss_before, rss_after)
    healthy = Healthy(io_loop, arena.port)
    deadline = io_loop.call_later(0.2, lambda: stream.close(TimeoutError("peer does not read")))
    healthy.check()
    subject.closed.wait()
    io_loop.remove_timeout(deadline)
    assert isinstance(subject.error, TimeoutError)
    assert stream._write_buffer.size == 0
    with pytest.raises(StreamClosedError):
        stream.write(b"more")
    finish(io_loop, subject, peer, arena, handlers_at_start)


# ---------------------------------------------------------------- reset mid-write


@pytest.mark.parametrize("role", ROLES)
def test_reset_mid_write(io_loop: IOLoop, role: str, handlers_at_start: int) -> None:
    written: list[bool] = []
    big = PATTERN * 256  # 16 MiB

    def policy(stream: IOStream) -> None:
        stream.write(big, lambda: written.append(True))

    subject, peer, arena = hostile_subject(io_loop, role, policy)
    healthy = Healthy(io_loop, arena.port)
    got_some = Waiter(io_loop)
    peer.on_received = lambda p: got_some.done() if len(p.received) >= 65536 else None
    peer.read(65536)
    got_some.wait()
    assert bytes(peer.received) == big[: len(peer.received)]
    peer.reset()
    subject.closed.wait()
    healthy.check()
    assert isinstance(subject.error, (ConnectionResetError, BrokenPipeError)), subject.error
    assert written == []
    finish(io_loop, subject, peer, arena, handlers_at_start)


# ---------------------------------------------------------------- half-close


@pytest.mark.parametrize("role", ROLES)
def test_half_close_delivers_then_closes_cleanly(
    io_loop: IOLoop, role: str, handlers_at_start: int
) -> None:
    lines: list[bytes] = []
    order: list[str] = []

    def policy(stream: IOStream) -> None:
        def on_line(line: bytes) -> None:
            lines.append(line)
            order.append("line")
            stream.read_until(b"\n", on_line)

        stream.read_until(b"\n", on_line)

    subject, peer, arena = hostile_subject(io_loop, role, policy)

    def on_close() -> None:
        order.append("close")
        subject._on_close()

    assert subject.stream is not None
    subject.stream.set_close_callback(on_close)
    healthy = Healthy(io_loop, arena.port)
    peer.send_now(b"one\ntwo\npartial")
    peer.sock.shutdown(socket.SHUT_WR)
    subject.closed.wait()
    healthy.check()
    assert lines == [b"one\n", b"two\n"]
    assert order == ["line", "line", "close"]
    assert subject.error is None
    stream = subject.stream
    assert stream is not None
    # What no read took is still there for read_until_close (docs/guarantees.md,
    # "IOStream", "Closing").
    rest = Waiter(io_loop)
    stream.read_until_close(rest.callback)
    assert rest.wait() == b"partial"
    with pytest.raises(StreamClosedError):
        stream.write(b"too late")
    finish(io_loop, subject, peer, arena, handlers_at_start)


# ---------------------------------------------------------------- garbage to TLS


GARBAGE = [
    pytest.param(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", id="http"),
    pytest.param(bytes(range(256)) * 8, id="binary"),
    # A TLS record header claiming a handshake, followed by nonsense.
    pytest.param(b"\x16\x03\x01\x00\x40" + b"\xff" * 64, id="bad-record"),
]


@pytest.mark.parametrize("garbage", GARBAGE)
@pytest.mark.parametrize("role", ROLES)
def test_garbage_on_tls(
    io_loop: IOLoop, role: str, garbage: bytes, tls: TLSFiles, handlers_at_start: int
) -> None:
    connected: list[bool] = []
    got: list[bytes] = []

    def policy(stream: IOStream) -> None:
        stream.read_until(b"\n", got.append)

    subject, peer, arena = hostile_subject(
        io_loop, role, policy, tls=tls, connect_callback=lambda: connected.append(True)
    )
    healthy = Healthy(io_loop, arena.port, ssl_context=tls.client_context())
    if role == "client":
        # The client's ClientHello arrives first; answer it with garbage.
        peer.read(1)
    try:
        peer.send_now(garbage)
    except OSError:
        pass  # our side may already have given up: that is fine too
    subject.closed.wait()
    healthy.check()
    assert isinstance(subject.error, ssl.SSLError), subject.error
    assert connected == [] and got == []
    finish(io_loop, subject, peer, arena, handlers_at_start)


# ---------------------------------------------------------------- silent peer


def _count_polls(io_loop: IOLoop) -> list[int]:
    """Wrap the loop's poller so that each poll() call is counted."""
    counter = [0]
    poll = io_loop.poller.poll

    def counting(timeout: float | None) -> list[tuple[int, int]]:
        counter[0] += 1
        return poll(timeout)

    setattr(io_loop.poller, "poll", counting)  # noqa: B010
    return counter


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "tls"])
def test_silent_peer_costs_one_fd_and_no_cpu(
    io_loop: IOLoop, secure: bool, tls: TLSFiles, handlers_at_start: int
) -> None:
    idle = 0.5
    timers: list[Any] = []

    def policy(stream: IOStream) -> None:
        # The server's idle timeout: close unless a line arrives in time.
        timers.append(io_loop.call_later(idle, lambda: stream.close(TimeoutError("idle client"))))
        stream.read_until(b"\n", lambda line: io_loop.remove_timeout(timers[0]))

    arena_tls = tls if secure else None
    fds_before = fd_count()
    subject, peer, arena = hostile_subject(io_loop, "server", policy, tls=arena_tls)
    # Our cost: the listening socket, the peer's own socket, and one fd for
    # the silent connection.
    fds_with_peer = fd_count()
    if fds_before is not None and fds_with_peer is not None:
        assert fds_with_peer == fds_before + 3
    # The loop keeps serving others meanwhile.
    t0 = time.monotonic()
    healthy = Healthy(io_loop, arena.port, ssl_context=tls.client_context() if secure else None)
    healthy.check()
    assert time.monotonic() - t0 < idle, "the healthy client was held up"
    # Now only the silent peer is left: the loop sleeps until the deadline.
    assert not subject.closed.calls
    polls = _count_polls(io_loop)
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    subject.closed.wait()
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - wall0
    assert isinstance(subject.error, TimeoutError)
    # A handful of wake-ups (timers), not a spin; CPU well under the wait.
    assert polls[0] <= 10, polls[0]
    assert cpu < 0.1 + 0.2 * wall, (cpu, wall)
    # The peer sees the close as an EOF.
    ended = Waiter(io_loop)
    peer.on_read_end = lambda p: ended.done()
    peer.read(1)
    ended.wait()
    assert peer.received == b""
    assert peer.eof or isinstance(peer.error, ConnectionResetError), peer.error
    finish(io_loop, subject, peer, arena, handlers_at_start)


def test_silent_tls_server_times_out_client(
    io_loop: IOLoop, tls: TLSFiles, handlers_at_start: int
) -> None:
    """A TLS server that accepts and never answers the ClientHello.

    The handshake never blocks the loop; the application's timeout closes
    the client; the connect callback never runs.
    """
    connected: list[bool] = []

    def policy(stream: IOStream) -> None:
        io_loop.call_later(0.3, lambda: stream.close(TimeoutError("handshake timed out")))

    subject, peer, arena = hostile_subject(
        io_loop, "client", policy, tls=tls, connect_callback=lambda: connected.append(True)
    )
    healthy = Healthy(io_loop, arena.port, ssl_context=tls.client_context())
    healthy.check()
    subject.closed.wait()
    assert isinstance(subject.error, TimeoutError)
    assert connected == []
    finish(io_loop, subject, peer, arena, handlers_at_start)


# ---------------------------------------------------------------- more hostile peers


@pytest.mark.parametrize("role", ROLES)
def test_delimiter_trickled_one_byte_at_a_time(
    io_loop: IOLoop, role: str, handlers_at_start: int
) -> None:
    """A peer that sends a request one byte per loop iteration (slowloris style).

    The 4-byte delimiter straddles every possible segment boundary; the read
    completes with exactly the request, and the rest stays for the next read.
    """
    request = b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n"
    got: list[bytes] = []

    def policy(stream: IOStream) -> None:
        stream.read_until(b"\r\n\r\n", got.append, max_bytes=1024)

    subject, peer, arena = hostile_subject(io_loop, role, policy)
    peer.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    healthy = Healthy(io_loop, arena.port)
    delivered = Waiter(io_loop)
    data = request + b"NEXT"

    def trickle(i: int) -> None:
        if i < len(data):
            peer.send_now(data[i : i + 1])
            io_loop.add_callback(trickle, i + 1)
        else:
            delivered.done()

    io_loop.add_callback(trickle, 0)
    delivered.wait()
    healthy.check()
    settle(io_loop)
    assert got == [request]
    stream = subject.stream
    assert stream is not None
    rest = Waiter(io_loop)
    stream.read_bytes(4, rest.callback)
    assert rest.wait() == b"NEXT"
    stream.close()
    finish(io_loop, subject, peer, arena, handlers_at_start)


def test_connect_and_reset_storm(io_loop: IOLoop, handlers_at_start: int) -> None:
    """200 peers connect and reset before the server gets to accept them.

    accept() may hand back connections that are already dead (or fail with
    ECONNABORTED): the server must neither stop accepting nor leak a stream.
    """
    closed: list[BaseException | None] = []

    def handle(stream: IOStream, address: Any) -> None:
        stream.set_close_callback(lambda: closed.append(stream.error))
        stream.read_until_close(lambda data: None)

    server = TCPServer(handle, io_loop=io_loop)
    port = server.listen(0)
    for _ in range(200):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10.0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        sock.close()
    arena = Arena(io_loop)
    healthy = Healthy(io_loop, arena.port)
    healthy.check()
    # Whatever accept() returned has closed (reset, or EOF), nothing is left.
    done = Waiter(io_loop)

    def check() -> None:
        if io_loop.handler_count() == handlers_at_start + 2:  # the two listeners
            done.done()
        else:
            io_loop.call_later(0.005, check)

    io_loop.add_callback(check)
    done.wait()
    assert len(closed) <= 200
    assert all(e is None or isinstance(e, ConnectionResetError) for e in closed), closed
    server.stop()
    arena.server.stop()
    assert io_loop.handler_count() == handlers_at_start


def _limit_leaving_free_fds(free: int) -> int:
    """An RLIMIT_NOFILE value under which exactly *free* more fds can be opened.

    New fds take the lowest free numbers and must be below the limit; fds
    already open above it stay valid.
    """
    try:
        used = {int(fd) for fd in os.listdir("/proc/self/fd")}
    except OSError:
        pytest.skip("needs /proc/self/fd to find the free fd numbers")
    left = free
    for number in range(1 << 20):
        if number not in used:
            left -= 1
            if left == 0:
                return number + 1
    raise AssertionError("no free fd numbers")


def test_fd_exhaustion_pauses_accept_and_recovers(
    io_loop: IOLoop, handlers_at_start: int, caplog: pytest.LogCaptureFixture
) -> None:
    """More connections than the process has fds for (EMFILE on accept).

    The server must not spin on its still-readable listening socket, must go
    on serving the connections it has, and must accept again once fds are
    free. (RLIMIT_NOFILE's soft limit is lowered for the test and restored.)
    """
    arena = Arena(io_loop)
    healthy = Healthy(io_loop, arena.port, rounds=200)
    # The healthy connection is accepted and talking before fds run out.
    ready = Waiter(io_loop)

    def wait_accepted() -> None:
        if arena.accepted >= 1 and healthy.verified >= 1:
            ready.done()
        else:
            io_loop.call_later(0.002, wait_accepted)

    io_loop.add_callback(wait_accepted)
    ready.wait()
    peers = [socket.create_connection(("127.0.0.1", arena.port), timeout=10.0) for _ in range(30)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Garbage from earlier tests in this process, collected during the
    # window, would free fds and let every connection in: collect it now.
    gc.collect()
    limit = _limit_leaving_free_fds(4)
    caplog.set_level(logging.WARNING, logger="iostream")
    polls = _count_polls(io_loop)
    try:
        # Room for 4 more fds: most of the 30 cannot be accepted.
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        window = Waiter(io_loop)
        io_loop.call_later(0.5, window.done)
        window.wait()
        paused_polls = polls[0]
        accepted_while_short = arena.accepted
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert any("accept() failed" in r.getMessage() for r in caplog.records), caplog.records
    assert accepted_while_short < 31
    # Not a busy loop: the server paused instead of failing accept() in a spin
    # (the healthy client's 200 rounds account for most of these polls).
    assert paused_polls < 2000, paused_polls
    healthy.check()
    # Fds are back: every waiting connection is accepted, and new ones too.
    for sock in peers:
        sock.close()
    recovered = Waiter(io_loop)

    def wait_all() -> None:
        if arena.accepted >= 31:
            recovered.done()
        else:
            io_loop.call_later(0.005, wait_all)

    io_loop.add_callback(wait_all)
    recovered.wait()
    Healthy(io_loop, arena.port).check()
    arena.server.stop()
    settle(io_loop)
    assert io_loop.handler_count() == handlers_at_start


def test_garbage_after_tls_handshake(
    io_loop: IOLoop, tls: TLSFiles, handlers_at_start: int
) -> None:
    """A TLS peer that finishes the handshake, then injects a forged record.

    The record (type application_data, right header, random body) cannot
    authenticate: the server's SSLIOStream closes with ssl.SSLError, and no
    forged byte reaches the application.
    """
    subject = Subject(io_loop)
    got: list[bytes] = []

    def policy(stream: IOStream) -> None:
        subject.adopt(stream)
        stream.read_until(b"\n", got.append)

    arena = Arena(io_loop, ssl_options=tls.server_context())
    # Bind the attacker's socket first: its port tells the arena which
    # connection gets the policy.
    attacker_sock = socket.socket()
    attacker_sock.bind(("127.0.0.1", 0))
    arena.policies[attacker_sock.getsockname()[1]] = policy
    attacker = SSLIOStream(attacker_sock, ssl_options=tls.client_context(), io_loop=io_loop)
    handshaken = Waiter(io_loop)
    attacker.connect(("127.0.0.1", arena.port), handshaken.done, server_hostname="localhost")
    handshaken.wait()
    subject.ready.wait()
    healthy = Healthy(io_loop, arena.port, ssl_context=tls.client_context())
    # Forge: write a bogus record straight to the socket, under OpenSSL.
    forged = b"\x17\x03\x03\x00\x40" + bytes(range(64))
    os.write(attacker.socket.fileno(), forged + b"\n")
    subject.closed.wait()
    healthy.check()
    assert isinstance(subject.error, ssl.SSLError), subject.error
    assert got == []
    attacker.close()
    settle(io_loop)
    assert subject.close_calls == 1
    arena.server.stop()
    assert io_loop.handler_count() == handlers_at_start
