"""Real kernel back-pressure: tiny socket buffers, slow readers, 16 MiB each way.

No stand-ins here: the loopback sockets get ``SO_SNDBUF`` / ``SO_RCVBUF`` of
4 KiB (set before ``connect`` / ``listen``, so the TCP window is small from
the handshake on), both ends write 16 MiB at once in writes of random
sizes, and both read it back slowly — one small ``read_bytes`` (now and then
a ``read_until``) per loop iteration, so the stream stops reading between
reads and the kernel buffers fill. The kernel then answers with partial
sends and EAGAIN/EWOULDBLOCK (plain) or OpenSSL with want-write/want-read
(TLS) thousands of times; the tests check that this really happened, that
every byte arrived (sha256 both ways), that every plain ``send`` started
where the accepted bytes ended, and that every TLS send retried after a
want-write was handed the same bytes again (OpenSSL's rule).

On every poller (the ``io_loop`` fixture), plain and TLS. The ``slow``
variants repeat with other buffer sizes and 64 MiB each way.
"""

from __future__ import annotations

import hashlib
import random
import socket
from collections.abc import Callable

import pytest
from _stream_helpers import (  # noqa: F401  (fixtures)
    TLSFiles,
    Waiter,
    accept_on_loop,
    spin,
    tls_fixture,
)

from iostream import IOLoop, IOStream
from iostream.testing import ChaosSocket, ChaosSSLIOStream, TLSChaos, wait_with_progress

KiB = 1024
MiB = 1024 * KiB

#: Deadline, seconds, for one whole two-way transfer (a passing 16 MiB run
#: takes one to a few seconds here; the slow 64 MiB runs up to ~20 s). Below
#: pytest's own 120 s timeout, so a stall fails with this suite's message.
TRANSFER_TIMEOUT = 100.0
#: A transfer that moves no byte for this long has stalled: fail at once.
STALL = 10.0


def shrink_buffers(sock: socket.socket, bufsize: int) -> socket.socket:
    """Set *sock*'s send and receive buffers to *bufsize* (returns it)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
    return sock


def tiny_listener(bufsize: int) -> socket.socket:
    """A loopback listener whose accepted sockets inherit *bufsize* buffers.

    Set before ``listen`` (and, on the client, before ``connect``): the
    receive buffer decides the window scale announced in the SYN, so setting
    it afterwards would leave a large window.
    """
    listener = shrink_buffers(socket.socket(), bufsize)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    return listener


def tiny_buffer_pair(bufsize: int) -> tuple[socket.socket, socket.socket]:
    """A connected non-blocking loopback pair whose buffers are *bufsize*."""
    with tiny_listener(bufsize) as listener:
        client = shrink_buffers(socket.socket(), bufsize)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    shrink_buffers(server, bufsize)
    client.setblocking(False)
    server.setblocking(False)
    return client, server


class Direction:
    """One direction of a transfer: *writer* sends *size* bytes, *reader* reads slowly."""

    def __init__(
        self,
        io_loop: IOLoop,
        writer: IOStream,
        reader: IOStream,
        size: int,
        seed: int,
        finished: Waiter,
    ) -> None:
        self.io_loop = io_loop
        self.writer = writer
        self.reader = reader
        rnd = random.Random(seed)
        self.rnd = rnd
        self.payload = rnd.randbytes(size)
        self.sent_digest = hashlib.sha256(self.payload).hexdigest()
        self.received = hashlib.sha256()
        self.count = 0
        self.reads = 0
        self.write_callbacks: list[int] = []
        self.finished = finished

    def start(self) -> None:
        """Queue every write at once (random sizes), then start reading."""
        view = memoryview(self.payload)
        pos, i = 0, 0
        while pos < len(self.payload):
            n = self.rnd.choice([1, 100, 4 * KiB, 20 * KiB, 300 * KiB, 2 * MiB])
            piece = view[pos : pos + n]
            self.writer.write(bytes(piece) if n < 16 * KiB else piece, self._on_written(i))
            pos += n
            i += 1
        self.writes = i
        self._read_next()

    def _on_written(self, i: int) -> Callable[[], None]:
        return lambda: self.write_callbacks.append(i)

    def _read_next(self) -> None:
        left = len(self.payload) - self.count
        if left == 0:
            self.finished.done(self)
            return
        self.reads += 1
        if self.rnd.random() < 0.1 and b"\n" in self.payload[self.count : self.count + 64 * KiB]:
            self.reader.read_until(b"\n", self._on_data)
        else:
            self.reader.read_bytes(min(left, self.rnd.randint(1, 16 * KiB)), self._on_data)

    def _on_data(self, data: bytes) -> None:
        self.received.update(data)
        self.count += len(data)
        # Slow reader: the next read starts on the next loop iteration, so the
        # stream stops reading in between and the kernel buffers fill up.
        self.io_loop.add_callback(self._read_next)

    def check(self) -> None:
        """Every byte arrived, in order; every write callback ran, in order."""
        assert self.count == len(self.payload)
        assert self.received.hexdigest() == self.sent_digest, "bytes differ (sha256)"
        assert self.write_callbacks == list(range(self.writes))


def two_way(io_loop: IOLoop, a: IOStream, b: IOStream, size: int, seed: int) -> list[Direction]:
    """*size* bytes from *a* to *b* and from *b* to *a*, at once, slow readers."""
    finished = Waiter(io_loop, expected=2)
    closes = {a: 0, b: 0}

    def on_close(stream: IOStream) -> Callable[[], None]:
        def closed() -> None:
            closes[stream] += 1

        return closed

    a.set_close_callback(on_close(a))
    b.set_close_callback(on_close(b))
    directions = [
        Direction(io_loop, a, b, size, seed, finished),
        Direction(io_loop, b, a, size, seed + 1, finished),
    ]
    for d in directions:
        d.start()
    wait_with_progress(
        finished, lambda: sum(d.count for d in directions), stall=STALL, limit=TRANSFER_TIMEOUT
    )
    for d in directions:
        d.check()
    assert a.error is None and b.error is None, (a.error, b.error)
    assert not a.closed() and not b.closed()
    a.close()
    b.close()
    spin(io_loop, 3)
    assert closes == {a: 1, b: 1}, "each close callback exactly once"
    return directions


# ------------------------------------------------------------------ plain


def run_plain(io_loop: IOLoop, bufsize: int, size: int, seed: int) -> None:
    """A two-way plain transfer over tiny buffers; checks the kernel pushed back."""
    c, s = tiny_buffer_pair(bufsize)
    ca, sa = ChaosSocket.wrap(c), ChaosSocket.wrap(s)  # no faults: they record
    a = IOStream(ca, io_loop=io_loop)
    b = IOStream(sa, io_loop=io_loop)
    try:
        a_to_b, b_to_a = two_way(io_loop, a, b, size, seed)
        for sock, direction in ((ca, a_to_b), (sa, b_to_a)):
            calls = sock.sends
            blocked = sum(1 for call in calls if call.error == "BlockingIOError")
            partial = sum(1 for call in calls if 0 < call.sent < call.nbytes)
            assert blocked > 0, "the kernel never said EAGAIN: the buffers were not tiny"
            assert partial > 0, "the kernel never sent part of a send"
            violations = sock.send_violations(direction.payload)
            assert violations == [], violations[:5]
    finally:
        a.close()
        b.close()


def test_16mib_each_way_tiny_buffers_plain(io_loop: IOLoop) -> None:
    """16 MiB each way, 4 KiB socket buffers, slow readers, plain TCP."""
    run_plain(io_loop, 4096, 16 * MiB, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("bufsize", [1024, 4096, 65536])
def test_64mib_each_way_tiny_buffers_plain(io_loop: IOLoop, bufsize: int) -> None:
    """64 MiB each way over several buffer sizes, plain TCP."""
    run_plain(io_loop, bufsize, 64 * MiB, seed=bufsize)


# ------------------------------------------------------------------ TLS


def run_tls(io_loop: IOLoop, tls: TLSFiles, bufsize: int, size: int, seed: int) -> None:
    """A two-way TLS transfer over tiny buffers; checks OpenSSL pushed back."""
    cchaos, schaos = TLSChaos(), TLSChaos()  # no faults: they record and check retries
    with tiny_listener(bufsize) as listener:
        client = ChaosSSLIOStream(
            shrink_buffers(socket.socket(), bufsize),
            ssl_options=tls.client_context(),
            io_loop=io_loop,
            chaos=cchaos,
        )
        client.connect(listener.getsockname(), server_hostname="localhost")
        conn = shrink_buffers(accept_on_loop(io_loop, listener), bufsize)
    server = ChaosSSLIOStream(
        conn, ssl_options=tls.server_context(), io_loop=io_loop, chaos=schaos, server_side=True
    )
    try:
        two_way(io_loop, client, server, size, seed)
        for chaos in (cchaos, schaos):
            assert chaos.violations == [], chaos.violations[:5]
        wants = cchaos.real_send_wants + schaos.real_send_wants
        assert wants > 0, "OpenSSL never said want-write: the buffers were not tiny"
    finally:
        client.close()
        server.close()


def test_16mib_each_way_tiny_buffers_tls(io_loop: IOLoop, tls: TLSFiles) -> None:
    """16 MiB each way, 4 KiB socket buffers, slow readers, TLS."""
    run_tls(io_loop, tls, 4096, 16 * MiB, seed=3)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bufsize", "size"), [(1024, 4 * MiB), (4096, 64 * MiB), (65536, 64 * MiB)]
)
def test_64mib_each_way_tiny_buffers_tls(
    io_loop: IOLoop, tls: TLSFiles, bufsize: int, size: int
) -> None:
    """64 MiB each way over several buffer sizes, TLS; 4 MiB with 1 KiB buffers.

    Why less data for 1 KiB buffers: a 1 KiB receive buffer announces a
    window smaller than one TLS record (up to 16 KiB plus overhead), so the
    sender keeps meeting a zero or tiny window. The receiver's silly-window
    avoidance holds back the window update until the window has opened by a
    good fraction of the buffer, and the sender then waits for its *persist
    timer* (zero-window probes, 200 ms and backing off) before it sends
    again. That is a kernel stall, not the library's: 64 MiB took minutes
    here, past pytest's 120 s timeout. 4 MiB each way still drives the
    tiny-buffer TLS path thousands of times (want-write and want-read
    counted, same-bytes retries checked) in seconds.
    """
    run_tls(io_loop, tls, bufsize, size, seed=bufsize + 1)
