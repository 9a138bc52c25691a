"""Leaks (issue 6, item 2): connect / exchange / close cycles leave nothing behind.

After every cycle has closed on both sides:

* the process's fd count (``/proc/self/fd``) is where it started (skipped
  where /proc is absent);
* the loop's handler table (``IOLoop.handler_count()``) and the poller's fd
  table are where they started;
* every stream — client and server side — is garbage: a weak reference to
  each is dead after ``gc.collect()``. (Reference cycles through bound-method
  callbacks would be acceptable as long as the collector frees them;
  ``test_closed_streams_need_no_collector`` checks the stronger property
  that plain reference counting already frees them.)

Cycles run in waves of concurrent connections (the leak would show as well
one at a time, and this is ~20x faster). Clean cycles, plain and TLS; and
cycles that end in errors — refused connects, resets by either side, failed
TLS handshakes, resets in the middle of a handshake — which take other
paths through ``close``. The default run
does ~1,000 plain and ~200 TLS cycles on the best poller; the ``slow``
variant 20,000 of each.
"""

from __future__ import annotations

import gc
import socket
import ssl
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from _load_helpers import (
    LINGER_ZERO,
    EchoClients,
    EchoServer,
    RawPeer,
    fd_count,
    suite_pollers,
    wait_for,
)
from _stream_helpers import TLSFiles, closed_port, tls_fixture  # noqa: F401  (fixture)

from iostream import IOLoop, IOStream, SSLIOStream, TCPServer

#: Leak tests run on the best poller of this run: the bookkeeping under test
#: (stream close, handler table) is the same on every backend, and the
#: per-backend tables are covered by the poller suites.
LEAK_POLLER = suite_pollers()[0]


@pytest.fixture
def leak_loop() -> Iterator[IOLoop]:
    """An IOLoop on the best poller, closed (with its fds) at the end."""
    loop = IOLoop(LEAK_POLLER)
    try:
        yield loop
    finally:
        loop.close(all_fds=True)


class Baseline:
    """The gauges a leak would move: fds, handlers, the poller's table."""

    def __init__(self, io_loop: IOLoop) -> None:
        self.io_loop = io_loop
        # Garbage from earlier tests in this process (sockets in reference
        # cycles) would otherwise be collected mid-test and close fds that
        # the baseline counted: collect it first.
        gc.collect()
        self.fds = fd_count()
        self.handlers = io_loop.handler_count()
        self.poller_fds = _poller_size(io_loop)

    def check(self) -> None:
        """Assert every gauge is back where it was."""
        gc.collect()
        assert self.io_loop.handler_count() == self.handlers
        assert _poller_size(self.io_loop) == self.poller_fds
        if self.fds is not None:
            assert fd_count() == self.fds


def _poller_size(io_loop: IOLoop) -> int | None:
    try:
        return len(io_loop.poller)  # type: ignore[arg-type]
    except TypeError:
        return None


def _assert_all_dead(refs: list[weakref.ref[IOStream]], what: str) -> None:
    gc.collect()
    alive = [ref() for ref in refs if ref() is not None]
    assert not alive, f"{len(alive)} of {len(refs)} {what} streams still alive: {alive[:3]}"


def _warm_up(io_loop: IOLoop, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
    """One cycle first, so that lazily made per-process objects (the receive
    scratch buffer, OpenSSL's tables) are not counted as a leak."""
    warm = EchoClients(io_loop, port, 2, 2, 64, ssl_context=ssl_context)
    io_loop.add_callback(warm.start)
    wait_for(io_loop, warm.done, timeout=20.0, notifiers=(warm,))
    assert warm.failures == []


def _echo_cycles(
    io_loop: IOLoop,
    cycles: int,
    concurrency: int,
    size: int,
    server_options: ssl.SSLContext | None = None,
    client_context: ssl.SSLContext | None = None,
    timeout: float = 60.0,
) -> None:
    server = EchoServer(io_loop, ssl_options=server_options)
    port = server.listen()
    _warm_up(io_loop, port, client_context)
    wait_for(io_loop, lambda: server.open_now == 0, timeout=10.0, notifiers=(server,))
    server.keep_refs = True
    baseline = Baseline(io_loop)
    clients = EchoClients(
        io_loop, port, cycles, concurrency, size, ssl_context=client_context, keep_refs=True
    )
    io_loop.add_callback(clients.start)
    wait_for(
        io_loop,
        lambda: clients.done() and server.open_now == 0 and server.opened >= cycles + 2,
        timeout=timeout,
        notifiers=(server, clients),
    )
    assert clients.failures == []
    assert clients.verified == cycles
    assert dict(clients.errors) == {"clean": cycles}
    assert server.errors["clean"] == cycles + 2  # the warm-up's too
    baseline.check()
    _assert_all_dead(clients.refs, "client")
    _assert_all_dead(server.refs, "server")
    server.stop()


# ---------------------------------------------------------------- clean cycles


def test_plain_cycles(leak_loop: IOLoop) -> None:
    _echo_cycles(leak_loop, cycles=1000, concurrency=50, size=1024)


def test_tls_cycles(leak_loop: IOLoop, tls: TLSFiles) -> None:
    _echo_cycles(
        leak_loop,
        cycles=200,
        concurrency=20,
        size=1024,
        server_options=tls.server_context(),
        client_context=tls.client_context(),
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_plain_cycles_20k(leak_loop: IOLoop) -> None:
    _echo_cycles(leak_loop, cycles=20_000, concurrency=100, size=1024, timeout=300.0)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tls_cycles_20k(leak_loop: IOLoop, tls: TLSFiles) -> None:
    _echo_cycles(
        leak_loop,
        cycles=20_000,
        concurrency=50,
        size=1024,
        server_options=tls.server_context(),
        client_context=tls.client_context(),
        timeout=600.0,
    )


def test_closed_streams_need_no_collector(leak_loop: IOLoop) -> None:
    """Stronger than the contract (docs/guarantees.md) asks: closed streams die by
    reference counting alone.

    A cycle through a bound-method callback (stream -> pending read ->
    stream.write) is fine as long as ``gc`` frees it, but a stream that
    needs the collector keeps its buffers until the next collection — under
    load, that is memory. With the collector off, every stream of 200
    cycles must already be gone once everything has closed.
    """
    server = EchoServer(leak_loop, keep_refs=True)
    port = server.listen()
    clients = EchoClients(leak_loop, port, 200, 20, 512, keep_refs=True)
    gc.collect()
    gc.disable()
    try:
        leak_loop.add_callback(clients.start)
        wait_for(
            leak_loop,
            lambda: clients.done() and server.closed == 200,
            timeout=30.0,
            notifiers=(server, clients),
        )
        # A few more loop turns: the streams' last scheduled callbacks run.
        assert _turns(leak_loop, 3)
        alive = [r() for r in clients.refs + server.refs if r() is not None]
        assert not alive, f"{len(alive)} streams need the cycle collector: {alive[:3]}"
    finally:
        gc.enable()
    assert clients.verified == 200


def _turns(io_loop: IOLoop, n: int) -> bool:
    """Run *n* loop iterations (a chain of callbacks); True when done."""
    left = [n]

    def step() -> None:
        left[0] -= 1
        if left[0] <= 0:
            io_loop.stop()
        else:
            io_loop.add_callback(step)

    io_loop.add_callback(step)
    wait_for(io_loop, lambda: left[0] <= 0, timeout=5.0)
    return left[0] <= 0


# ---------------------------------------------------------------- error cycles


def _error_cycle_refused(io_loop: IOLoop, refs: list[weakref.ref[IOStream]]) -> list[Any]:
    """A connect to a closed port: the stream closes with ConnectionRefusedError."""
    errors: list[Any] = []
    port = closed_port()
    for _ in range(100):
        stream = IOStream(socket.socket(), io_loop=io_loop)
        refs.append(weakref.ref(stream))
        stream.connect(("127.0.0.1", port), lambda: errors.append("connected?!"))
        ref = weakref.ref(stream)
        stream.set_close_callback(lambda ref=ref: errors.append(_err(ref)))  # type: ignore[misc]
        del stream
    wait_for(io_loop, lambda: len(errors) >= 100, timeout=20.0)
    return errors


def _err(ref: weakref.ref[IOStream]) -> Any:
    stream = ref()
    return type(stream.error) if stream is not None else None


def test_error_cycles(leak_loop: IOLoop, tls: TLSFiles) -> None:
    """Refused connects, resets from either side and failed TLS handshakes leak nothing."""
    io_loop = leak_loop
    plain = EchoServer(io_loop, keep_refs=True)
    plain_port = plain.listen()
    secure = EchoServer(io_loop, ssl_options=tls.server_context(), keep_refs=True)
    secure_port = secure.listen()
    _warm_up(io_loop, plain_port)
    _warm_up(io_loop, secure_port, tls.client_context())
    wait_for(
        io_loop,
        lambda: plain.open_now == 0 and secure.open_now == 0,
        timeout=10.0,
        notifiers=(plain,),
    )
    plain.refs.clear()
    secure.refs.clear()
    baseline = Baseline(io_loop)
    refs: list[weakref.ref[IOStream]] = []

    # 1. Refused connects.
    refused = _error_cycle_refused(io_loop, refs)
    assert refused == [ConnectionRefusedError] * 100

    # 2. Client resets (RST) right after the server stream exists: the
    #    server stream closes with ConnectionResetError.
    for _ in range(100):
        opened = plain.opened
        peer = RawPeer.connect(io_loop, plain_port)
        peer.send_now(b"some bytes")
        wait_for(
            io_loop,
            lambda opened=opened: plain.opened > opened,  # type: ignore[misc]
            timeout=10.0,
            notifiers=(plain,),
        )
        peer.reset()
    wait_for(io_loop, lambda: plain.open_now == 0, timeout=20.0, notifiers=(plain,))
    assert plain.errors["ConnectionResetError"] + plain.errors["clean"] >= 100

    # 3. Server streams reset the client mid-exchange: the client stream
    #    closes with ConnectionResetError (or a clean EOF if the RST lost a
    #    race with the FIN: either way the stream is closed and gone).
    def resetting(stream: IOStream, address: Any) -> None:
        def on_data(data: bytes) -> None:
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
            stream.close()

        refs.append(weakref.ref(stream))
        stream.read_bytes(4, on_data)

    rst_server = TCPServer(resetting, io_loop=io_loop)
    rst_port = rst_server.listen(0)
    closes: list[Any] = []
    for _ in range(100):
        client = IOStream(socket.socket(), io_loop=io_loop)
        refs.append(weakref.ref(client))
        client.connect(("127.0.0.1", rst_port))
        ref = weakref.ref(client)
        client.set_close_callback(lambda ref=ref: closes.append(_err(ref)))  # type: ignore[misc]
        client.write(b"ping")
        client.read_bytes(10, lambda data: closes.append("data?!"))
        del client
    wait_for(io_loop, lambda: len(closes) >= 100, timeout=20.0)
    assert "data?!" not in closes
    assert set(closes) <= {ConnectionResetError, type(None)}, closes
    rst_server.stop()

    # 4. Failed TLS handshakes (the client does not trust the server's CA).
    handshake_errors: list[Any] = []
    untrusting = tls.client_context(trust=tls.other_ca)
    for _ in range(30):
        client = SSLIOStream(socket.socket(), ssl_options=untrusting, io_loop=io_loop)
        refs.append(weakref.ref(client))
        client.connect(("127.0.0.1", secure_port), lambda: handshake_errors.append("ok?!"))
        ref = weakref.ref(client)
        client.set_close_callback(
            lambda ref=ref: handshake_errors.append(_err(ref))  # type: ignore[misc]
        )
        del client
    wait_for(
        io_loop,
        lambda: len(handshake_errors) >= 30 and secure.open_now == 0,
        timeout=30.0,
        notifiers=(secure,),
    )
    assert handshake_errors == [ssl.SSLCertVerificationError] * 30

    # 5. Peers that reset in the middle of the TLS handshake (the server
    #    stream is still HANDSHAKING).
    for _ in range(30):
        opened = secure.opened
        peer = RawPeer.connect(io_loop, secure_port)
        peer.send_now(b"\x16\x03\x01\x00\x05")  # the start of a ClientHello
        wait_for(
            io_loop,
            lambda opened=opened: secure.opened > opened,  # type: ignore[misc]
            timeout=10.0,
            notifiers=(secure,),
        )
        peer.reset()
    wait_for(io_loop, lambda: secure.open_now == 0, timeout=20.0, notifiers=(secure,))

    baseline.check()
    _assert_all_dead(refs, "client")
    _assert_all_dead(plain.refs, "plain server")
    _assert_all_dead(secure.refs, "TLS server")
    assert secure.errors.keys() - {"clean"} <= {
        "SSLError",
        "SSLEOFError",
        "ConnectionResetError",
    }, secure.errors
    plain.stop()
    secure.stop()
