"""The Windows send cap (docs/guarantees.md, "IOStream", "Sends": "`socket.send` is never
given more than `write_chunk_size` bytes: 128 KiB on Windows"), on every poller, on any OS.

The stand-in :class:`transport.WindowsSocket` does what Winsock does to a
non-blocking socket: a ``send`` of more than 128 KiB fails with WSAENOBUFS
(10055) instead of sending part, and would-block is ``BlockingIOError``
with WSAEWOULDBLOCK (10035), connect included. ``iostream.stream._WINDOWS``
is patched on while a stream is made, which is when the stream picks its
default ``write_chunk_size``. These tests also run on real Windows (where the
stand-in changes nothing but the size check); they are not skipped there.

Found here and fixed (see
:func:`test_wsaenobufs_on_an_oversized_send_is_not_fatal_and_the_stream_recovers`):
with ``write_chunk_size`` set above 128 KiB on Windows, every large send
failed with WSAENOBUFS, which the stream took as would-block and retried
with the same size for ever: no error, no progress, a busy loop.
"""

from __future__ import annotations

import hashlib
import random
import select
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from _stream_helpers import (  # noqa: F401  (fixtures)
    StreamKit,
    TLSFiles,
    Waiter,
    accept_on_loop,
    closed_port,
    settle,
    streams_fixture,
    tls_fixture,
)
from support import loopback_pair

import iostream.stream
from iostream import IOLoop, IOStream
from iostream._platform import is_would_block
from iostream.testing import (
    WINDOWS_SEND_LIMIT,
    WSAECONNREFUSED,
    WSAENOBUFS,
    WSAEWOULDBLOCK,
    ChaosSocket,
    ChaosSSLIOStream,
    WindowsSocket,
    wait_with_progress,
)

KiB = 1024
MiB = 1024 * KiB


@contextmanager
def platform_flag(windows: bool) -> Iterator[None]:
    """``iostream.stream._WINDOWS`` set to *windows* while streams are made."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(iostream.stream, "_WINDOWS", windows)
        yield


def payload(n: int, seed: int) -> bytes:
    """*n* pseudo-random bytes."""
    return random.Random(seed).randbytes(n)


def windows_pair(streams: StreamKit) -> tuple[WindowsSocket, WindowsSocket]:
    """Two connected loopback :class:`WindowsSocket` objects, closed at teardown."""
    a, b = loopback_pair()
    return streams.track(WindowsSocket.wrap(a)), streams.track(WindowsSocket.wrap(b))


class Receiver:
    """``read_bytes(n)`` on *stream*; :meth:`wait` returns the data's sha256.

    *progress* counts the bytes the reader's socket has received: a transfer
    that stops moving fails at once instead of at a distant deadline. With
    *sender* (the writer's :class:`WindowsSocket`), 1000 sends refused in a
    row end the wait too: a stream retrying an oversized send for ever.
    """

    def __init__(
        self,
        io_loop: IOLoop,
        stream: IOStream,
        n: int,
        progress: Callable[[], int],
        sender: WindowsSocket | None = None,
    ) -> None:
        self.waiter = Waiter(io_loop)
        self.progress = progress
        stream.read_bytes(n, lambda data: self.waiter.done(hashlib.sha256(data).hexdigest()))
        if sender is not None:
            sender.on_refusals(1000, lambda: self.waiter.done("LIVELOCK"))

    def wait(self) -> Any:
        """The sha256 of the data once it has all arrived ("LIVELOCK": never)."""
        return wait_with_progress(self.waiter, self.progress)


# ------------------------------------------------------------------ the stand-in itself


def test_stand_in_refuses_sends_over_128k_like_winsock() -> None:
    a, b = loopback_pair()
    with WindowsSocket.wrap(a) as ws, b:
        with pytest.raises(OSError) as info:
            ws.send(b"x" * (WINDOWS_SEND_LIMIT + 1))
        exc = info.value
        assert type(exc) is OSError, "WSAENOBUFS is a plain OSError, as on Windows"
        assert exc.errno == WSAENOBUFS
        assert getattr(exc, "winerror", None) == WSAENOBUFS
        assert ws.refused == 1
        # Nothing of the refused send went out; a send at the limit does.
        assert ws.send(b"y" * WINDOWS_SEND_LIMIT) > 0
        b.setblocking(True)
        b.settimeout(10)
        assert b.recv(1) == b"y"
        assert ws.send_sizes == [WINDOWS_SEND_LIMIT + 1, WINDOWS_SEND_LIMIT]
        # The library's classification: WSAENOBUFS means "not now".
        assert is_would_block(exc)


def _drain(sock: socket.socket, n: int, into: bytearray) -> None:
    """Receive until *n* bytes arrived (or the peer closed, or 20 s passed without data)."""
    sock.settimeout(20)
    while len(into) < n:
        data = sock.recv(1 << 20)
        if not data:
            return
        into += data


@pytest.mark.parametrize("timeout", [None, 20.0], ids=["blocking", "timeout"])
def test_stand_in_lets_a_blocking_socket_send_more_than_128k(timeout: float | None) -> None:
    """Microsoft's send(): "If no buffer space is available within the transport
    system to hold the data to be transmitted, send will block unless the socket
    has been placed in a nonblocking mode." The refusal is for non-blocking
    sockets only; a socket with a timeout is left alone too (the stand-in's
    choice, see WindowsSocket)."""
    big = WINDOWS_SEND_LIMIT + 64 * KiB
    data = payload(3 * big, 11)
    a, b = loopback_pair()
    got = bytearray()
    with WindowsSocket.wrap(a) as ws, b:
        ws.settimeout(timeout)
        reader = threading.Thread(target=_drain, args=(b, len(data), got), daemon=True)
        reader.start()
        view = memoryview(data)
        ws.sendall(view[:big])
        sent = ws.send(view[big : 2 * big])
        assert sent > 0
        ws.sendall(view[big + sent : 2 * big])
        sent = ws.sendmsg([view[2 * big : 2 * big + 10], view[2 * big + 10 :]])
        assert sent > 0
        ws.sendall(view[2 * big + sent :])
        reader.join(30)
        assert not reader.is_alive(), f"the peer got {len(got)} of {len(data)} bytes"
        assert bytes(got) == data
        assert ws.refused == 0
        assert ws.send_sizes[:2] == [big, big]
        # Non-blocking again: the same send is refused.
        ws.setblocking(False)
        with pytest.raises(OSError) as info:
            ws.send(view[:big])
        assert info.value.errno == WSAENOBUFS
        assert ws.refused == 1


def test_stand_in_reports_would_block_as_wsaewouldblock() -> None:
    a, b = loopback_pair()
    with WindowsSocket.wrap(a) as ws, b:
        with pytest.raises(BlockingIOError) as info:
            ws.recv_into(bytearray(10))
        assert info.value.errno == WSAEWOULDBLOCK
        assert getattr(info.value, "winerror", None) == WSAEWOULDBLOCK
        with pytest.raises(BlockingIOError):
            ws.recv(10)
        # Fill the kernel buffers until send would block (bounded).
        chunk = b"z" * (64 * KiB)
        for _ in range(10_000):
            try:
                ws.send(chunk)
            except BlockingIOError as exc:
                assert exc.errno == WSAEWOULDBLOCK
                assert getattr(exc, "winerror", None) == WSAEWOULDBLOCK
                break
        else:
            raise AssertionError("640 MB went into a loopback socket nobody reads")
        assert ws.would_blocks >= 3


def test_stand_in_connect_reports_wsaewouldblock_and_wsa_so_error() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with WindowsSocket(socket.AF_INET, socket.SOCK_STREAM) as ws:
            ws.setblocking(False)
            with pytest.raises(BlockingIOError) as info:
                ws.connect(listener.getsockname())
            assert info.value.errno == WSAEWOULDBLOCK
            assert getattr(info.value, "winerror", None) == WSAEWOULDBLOCK
    with WindowsSocket(socket.AF_INET, socket.SOCK_STREAM) as ws:
        ws.settimeout(10)
        with pytest.raises(ConnectionRefusedError) as refused:
            ws.connect(("127.0.0.1", closed_port()))
        assert refused.value.errno == WSAECONNREFUSED


# ------------------------------------------------------------------ the cap


def test_10mib_write_arrives_intact_and_no_send_exceeds_128k(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    a, b = windows_pair(streams)
    with platform_flag(True):
        writer = streams.stream(a)
        reader = streams.stream(b)
    assert writer.write_chunk_size == WINDOWS_SEND_LIMIT
    data = payload(10 * MiB, 1)
    got = Receiver(io_loop, reader, len(data), lambda: b.bytes_received, sender=a)
    written = Waiter(io_loop)
    writer.write(data, written.done)
    assert got.wait() == hashlib.sha256(data).hexdigest()
    written.wait()
    assert a.send_sizes, "the stream must send through socket.send"
    assert max(a.send_sizes) == WINDOWS_SEND_LIMIT, max(a.send_sizes)
    assert a.refused == 0, "a capped stream never hands Winsock an oversized send"
    # The kernel pushed back somewhere (WSAEWOULDBLOCK on send or recv), and
    # the stream took it as "not now".
    assert a.would_blocks + b.would_blocks > 0
    assert not writer.closed() and writer.error is None
    assert not reader.closed() and reader.error is None


def test_mixed_writes_with_windows_socket_keep_order_and_cap(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    """Small writes (gathered), big ones (kept as views), some over 128 KiB."""
    a, b = windows_pair(streams)
    with platform_flag(True):
        writer = streams.stream(a)
        reader = streams.stream(b)
    rnd = random.Random(7)
    sizes = [rnd.choice([1, 100, 5000, 16 * KiB, 128 * KiB + 1, 700 * KiB]) for _ in range(60)]
    data = payload(sum(sizes), 2)
    got = Receiver(io_loop, reader, len(data), lambda: b.bytes_received, sender=a)
    done: list[int] = []

    def on_written(i: int) -> Callable[[], None]:
        return lambda: done.append(i)

    pos = 0
    for i, size in enumerate(sizes):
        piece = memoryview(data)[pos : pos + size]
        kind = i % 3
        obj: bytes | bytearray | memoryview = (
            bytes(piece) if kind == 0 else bytearray(piece) if kind == 1 else piece
        )
        writer.write(obj, on_written(i))
        pos += size
    assert got.wait() == hashlib.sha256(data).hexdigest()
    settle(io_loop, 0.01)
    assert done == list(range(len(sizes))), "write callbacks once each, in order"
    assert max(a.send_sizes) <= WINDOWS_SEND_LIMIT
    assert a.refused == 0


def test_flag_off_large_writes_are_not_chunked(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = loopback_pair()
    rec = streams.track(ChaosSocket.wrap(a))  # no faults: it only records
    peer = streams.track(ChaosSocket.wrap(b))
    with platform_flag(False):
        writer = streams.stream(rec)
        reader = streams.stream(peer)
    assert writer.write_chunk_size is None
    data = payload(10 * MiB, 3)
    got = Receiver(io_loop, reader, len(data), lambda: peer.bytes_received)
    writer.write(data)
    assert got.wait() == hashlib.sha256(data).hexdigest()
    sizes = [call.nbytes for call in rec.sends]
    assert sizes[0] == len(data), f"no cap: the first send gets the whole write, got {sizes[:4]}"
    assert max(sizes) > WINDOWS_SEND_LIMIT


@pytest.mark.parametrize(
    ("windows", "chunk"),
    [
        (False, 1000),
        (False, 64 * KiB),
        (False, 200 * KiB),
        (True, 4096),
        (True, 64 * KiB),
        (True, WINDOWS_SEND_LIMIT),
    ],
)
def test_write_chunk_size_is_honoured(
    io_loop: IOLoop, streams: StreamKit, windows: bool, chunk: int
) -> None:
    a, b = loopback_pair()
    peer = streams.track(ChaosSocket.wrap(b))
    sock = streams.track(WindowsSocket.wrap(a) if windows else ChaosSocket.wrap(a))
    with platform_flag(windows):
        writer = streams.stream(sock, write_chunk_size=chunk)
        reader = streams.stream(peer)
    assert writer.write_chunk_size == chunk
    data = payload(2 * MiB + 3, 4)
    got = Receiver(
        io_loop,
        reader,
        len(data),
        lambda: peer.bytes_received,
        sender=sock if isinstance(sock, WindowsSocket) else None,
    )
    writer.write(data[:10])  # through the gathering buffer
    writer.write(memoryview(data)[10:])  # a view, much larger than the cap
    assert got.wait() == hashlib.sha256(data).hexdigest()
    if isinstance(sock, WindowsSocket):
        sizes = sock.send_sizes
        assert sock.refused == 0
    else:
        sizes = [call.nbytes for call in sock.sends]
    assert max(sizes) == chunk, (max(sizes), chunk)


@pytest.mark.parametrize("windows", [True, False])
def test_tls_sends_are_capped_on_windows_only(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles, windows: bool
) -> None:
    """SSLIOStream hands ``SSLSocket.send`` at most 128 KiB on Windows, all of it elsewhere."""
    listener = streams.listener()
    server_ctx = tls.server_context()
    server_ctx.num_tickets = 0  # the client never reads: no ticket to leave unread
    with platform_flag(windows):
        client = streams.track(
            ChaosSSLIOStream(
                WindowsSocket(socket.AF_INET, socket.SOCK_STREAM),
                ssl_options=tls.client_context(),
                io_loop=io_loop,
            )
        )
        client.connect(listener.getsockname(), server_hostname="localhost")
        conn = streams.track(accept_on_loop(io_loop, listener))
        server = streams.track(
            ChaosSSLIOStream(conn, ssl_options=server_ctx, server_side=True, io_loop=io_loop)
        )
    data = payload(MiB + 1, 5)
    got = Receiver(io_loop, server, len(data), lambda: server.chaos.bytes_received)
    client.write(data)
    assert got.wait() == hashlib.sha256(data).hexdigest()
    sizes = client.chaos.send_sizes
    assert client.chaos.violations == []
    if windows:
        assert max(sizes) == WINDOWS_SEND_LIMIT, max(sizes)
    else:
        assert sizes[0] == len(data), sizes[:4]


# ------------------------------------------------------------------ connect


@pytest.mark.parametrize("use_tls", [False, True], ids=["plain", "tls"])
def test_connect_in_progress_reported_as_wsaewouldblock(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles, use_tls: bool
) -> None:
    """Windows says WSAEWOULDBLOCK (not EINPROGRESS) for a connect in progress."""
    listener = streams.listener()
    ws = WindowsSocket(socket.AF_INET, socket.SOCK_STREAM)
    with platform_flag(True):
        if use_tls:
            server_ctx = tls.server_context()
            server_ctx.num_tickets = 0
            client: IOStream = streams.track(
                ChaosSSLIOStream(ws, ssl_options=tls.client_context(), io_loop=io_loop)
            )
        else:
            client = streams.stream(ws)
    connected = Waiter(io_loop)
    client.connect(listener.getsockname(), connected.done, server_hostname="localhost")
    # A read and a write issued while connecting go ahead once connected.
    reply = Waiter(io_loop)
    client.read_until(b"\n", reply.callback)
    client.write(b"ping\n")
    conn = streams.track(accept_on_loop(io_loop, listener))
    if use_tls:
        server: IOStream = streams.track(
            ChaosSSLIOStream(conn, ssl_options=server_ctx, server_side=True, io_loop=io_loop)
        )
    else:
        server = streams.stream(conn)
    server.read_until(b"\n", lambda line: server.write(line.upper()))
    assert reply.wait() == b"PING\n"
    assert connected.calls == 1
    assert client.error is None and not client.closed()


def test_refused_connect_with_wsa_codes_closes_with_the_error(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    ws = WindowsSocket(socket.AF_INET, socket.SOCK_STREAM)
    with platform_flag(True):
        stream = streams.stream(ws)
    closed = Waiter(io_loop)
    stream.set_close_callback(closed.done)
    connected: list[bool] = []
    stream.connect(("127.0.0.1", closed_port()), lambda: connected.append(True))
    closed.wait()
    assert isinstance(stream.error, ConnectionRefusedError), repr(stream.error)
    assert connected == []


# ------------------------------------------------------------------ WSAENOBUFS


class OversizedCap:
    """A 1 MiB write from a :class:`WindowsSocket` stream whose ``write_chunk_size``
    is above Winsock's limit, run until the data arrives — or until
    *refusal_limit* sends in a row were refused (a livelock: stop, report)."""

    def __init__(self, io_loop: IOLoop, streams: StreamKit, refusal_limit: int = 200) -> None:
        a, b = windows_pair(streams)
        with platform_flag(True):
            self.writer = streams.stream(a, write_chunk_size=10**9)
            self.reader = streams.stream(b)
        self.sock = a
        self.data = payload(MiB, 6)
        self.received: list[bytes] = []
        self.livelock = False
        self.waiter = Waiter(io_loop)
        a.on_refusals(refusal_limit, self._on_livelock)
        self.reader.read_bytes(len(self.data), self._on_data)
        self.writer.write(self.data)
        wait_with_progress(self.waiter, lambda: b.bytes_received)

    def _on_data(self, data: bytes) -> None:
        self.received.append(data)
        self.waiter.done()

    def _on_livelock(self) -> None:
        self.livelock = True
        self.waiter.done()


def test_wsaenobufs_on_an_oversized_send_is_not_fatal_and_the_stream_recovers(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    """``write_chunk_size=10**9`` on Windows: the first large send fails with WSAENOBUFS.

    That error means "not now, and not that much": the stream must neither
    close (it is no failure of the connection) nor retry the same oversized
    send for ever (Windows reports the socket writable at once, so that is a
    busy loop with no progress: the bug this test was written for, now
    fixed). It must go on with sends Winsock accepts, and deliver everything.
    """
    run = OversizedCap(io_loop, streams)
    sock = run.sock
    assert not run.livelock, (
        f"{sock.refused} sends refused in a row: WSAENOBUFS retried with the same size"
    )
    assert run.received == [run.data]
    assert not run.writer.closed() and run.writer.error is None, repr(run.writer.error)
    assert sock.refused >= 1, "the oversized send was never tried: nothing was tested"
    # A few refusals while the stream finds a size that fits are fine; one
    # per send (or a retry loop) is not.
    assert sock.refused <= 8, f"{sock.refused} sends refused: {sock.send_sizes[:12]}"


# ------------------------------------------------------------------ sanity of the cap itself


def test_cap_constant_is_128k() -> None:
    cap = iostream.stream.WINDOWS_WRITE_CHUNK_SIZE
    assert cap == 128 * KiB


# ------------------------------------------------------------------ connect_ex and makefile


def test_connect_ex_reports_wsa_codes() -> None:
    """``connect_ex`` returns what ``connect`` raises: 10035 in progress, 10061 refused."""
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, WindowsSocket(socket.AF_INET, socket.SOCK_STREAM) as ws:
        ws.setblocking(False)
        assert ws.connect_ex(listener.getsockname()) == WSAEWOULDBLOCK
        assert ws.would_blocks == 1
    with WindowsSocket(socket.AF_INET, socket.SOCK_STREAM) as ws:
        ws.settimeout(20)
        assert ws.connect_ex(("127.0.0.1", closed_port())) == WSAECONNREFUSED
    listener = socket.create_server(("127.0.0.1", 0))
    with listener, WindowsSocket(socket.AF_INET, socket.SOCK_STREAM) as ws:
        ws.settimeout(20)
        assert ws.connect_ex(listener.getsockname()) == 0


def test_makefile_on_a_non_blocking_stand_in_returns_none_as_on_windows() -> None:
    """On Windows ``errno.EWOULDBLOCK`` is 10035, so ``SocketIO`` returns None for it."""
    a, b = loopback_pair()
    with WindowsSocket.wrap(a) as ws, b:
        raw = ws.makefile("rwb", buffering=0)
        with raw:
            assert raw.read(10) is None, "nothing to read yet: None, not an exception"
            b.sendall(b"abc")
            readable, _, _ = select.select([ws], [], [], 20)
            assert readable
            assert raw.read(10) == b"abc"
            # Fill the send buffer: write() returns None once Winsock would block.
            chunk = b"z" * (64 * KiB)
            results = [raw.write(chunk) for _ in range(1000)]
            assert None in results, "the send buffer never filled"
            assert ws.would_blocks >= 2
        reader = ws.makefile("rb")
        with reader:
            assert reader.read(10) is None
        text = ws.makefile("r", encoding="ascii")
        text.close()
        ws.close()  # the files are closed: the fd goes now
        assert ws.fileno() == -1
