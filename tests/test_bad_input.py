"""Bad input on every public API (issue 6, item 5).

Each case calls one public entry point (IOLoop, the pollers, IOStream,
SSLIOStream, TCPServer) with one wrong argument — wrong type, negative or
zero size, empty delimiter, a non-socket, a closed socket, the fd of a
regular file, NaN — or in the wrong state (connect twice, read while
reading, write after close, listen again after stop, ...), and checks:

* the exception's class;
* that ``str(exc)`` names the argument (or the state) that was wrong;
* that nothing is left half-registered: ``io_loop.handler_count()`` (and
  the poller's table) unchanged, the caller's socket still open and theirs;
* where it matters, that the object still works afterwards.
"""

from __future__ import annotations

import math
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _load_helpers import fd_count, suite_pollers
from _stream_helpers import (  # noqa: F401  (fixtures)
    StreamKit,
    TLSFiles,
    Waiter,
    closed_port,
    has_ipv6,
    streams_fixture,
    tls_fixture,
)

from iostream import (
    IOLoop,
    IOStream,
    SSLIOStream,
    StreamClosedError,
    TCPServer,
    pollers,
)
from iostream.pollers import READ, Poller

#: Stream- and server-level cases that do not depend on the poller run on
#: the best one of this run only.
ONE_POLLER = pytest.mark.parametrize("poller_name", suite_pollers()[:1])


def _closed_socket() -> socket.socket:
    sock = socket.socket()
    sock.close()
    return sock


@pytest.fixture
def regular_file() -> Iterator[int]:
    """The fd of a regular file (a temporary one)."""
    with tempfile.TemporaryFile() as f:
        yield f.fileno()


def expect(
    io_loop: IOLoop,
    exc_type: type[BaseException] | tuple[type[BaseException], ...],
    names: tuple[str, ...],
    call: Callable[[], object],
) -> BaseException:
    """Run *call*: it raises *exc_type* naming each of *names*; no handler is left behind."""
    handlers = io_loop.handler_count()
    with pytest.raises(exc_type) as info:
        call()
    message = str(info.value)
    for name in names:
        assert name in message, f"{name!r} not in {message!r}"
    assert io_loop.handler_count() == handlers, "left something registered"
    return info.value


def spin_once(io_loop: IOLoop) -> None:
    """Run one short loop turn (lets scheduled callbacks run)."""
    waiter = Waiter(io_loop)
    io_loop.add_callback(waiter.done)
    waiter.wait()


# ---------------------------------------------------------------- IOLoop


def test_ioloop_bad_poller_argument() -> None:
    fds = fd_count()
    with pytest.raises(TypeError, match="poller"):
        IOLoop(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nosuch") as info:
        IOLoop("nosuch")
    assert "epoll" in str(info.value) and "select" in str(info.value)  # the known ones
    # No waker socket pair was made (or it was closed) on the way out.
    assert fd_count() == fds


BAD_HANDLER_ARGS: list[Any] = [
    pytest.param(lambda s: ("x", print, READ), TypeError, ("fd",), id="fd-str"),
    pytest.param(lambda s: (-1, print, READ), ValueError, ("fd",), id="fd-negative"),
    pytest.param(lambda s: (True, print, READ), TypeError, ("fd",), id="fd-bool"),
    pytest.param(lambda s: (_closed_socket(), print, READ), ValueError, ("fd",), id="fd-closed"),
    pytest.param(lambda s: (s, 5, READ), TypeError, ("handler",), id="handler-not-callable"),
    pytest.param(lambda s: (s, print, 0x100), ValueError, ("events",), id="events-bits"),
    pytest.param(lambda s: (s, print, "r"), TypeError, ("events",), id="events-str"),
    pytest.param(lambda s: (s, print, None), TypeError, ("events",), id="events-none"),
]


@pytest.mark.parametrize(("args", "exc", "names"), BAD_HANDLER_ARGS)
def test_add_handler_bad_arguments(
    io_loop: IOLoop, args: Callable[[socket.socket], tuple[Any, ...]], exc: Any, names: Any
) -> None:
    a, b = socket.socketpair()
    with a, b:
        expect(io_loop, exc, names, lambda: io_loop.add_handler(*args(a)))
        assert a.fileno() >= 0
        # The fd is still free to register: nothing of the failed call remains.
        io_loop.add_handler(a, lambda fd, ev: None, READ)
        io_loop.remove_handler(a)


def test_add_handler_twice_keeps_the_first(io_loop: IOLoop) -> None:
    a, b = socket.socketpair()
    with a, b:
        calls: list[str] = []
        waiter = Waiter(io_loop)

        def first(fd: Any, events: int) -> None:
            calls.append("first")
            a.recv(16)
            waiter.done()

        def second(fd: Any, events: int) -> None:
            calls.append("second")
            a.recv(16)
            waiter.done()

        io_loop.add_handler(a, first, READ)
        expect(io_loop, FileExistsError, ("fd",), lambda: io_loop.add_handler(a, second, READ))
        b.send(b"x")
        waiter.wait()
        io_loop.remove_handler(a)
        assert calls == ["first"]


def test_update_handler_bad_arguments(io_loop: IOLoop) -> None:
    a, b = socket.socketpair()
    with a, b:
        expect(io_loop, FileNotFoundError, ("fd",), lambda: io_loop.update_handler(a, READ))
        io_loop.add_handler(a, print, READ)
        expect(io_loop, ValueError, ("events",), lambda: io_loop.update_handler(a, 0x100))
        expect(io_loop, TypeError, ("events",), lambda: io_loop.update_handler(a, "w"))  # type: ignore[arg-type]
        io_loop.remove_handler(a)
        # remove_handler of an unknown fd is silent (docs/guarantees.md, "IOLoop").
        io_loop.remove_handler(a)


@pytest.mark.parametrize(
    ("call", "exc", "names"),
    [
        pytest.param(lambda lp: lp.call_later("1", print), TypeError, ("delay",), id="delay-str"),
        pytest.param(lambda lp: lp.call_later(None, print), TypeError, ("delay",), id="delay-none"),
        pytest.param(lambda lp: lp.call_later(1, 5), TypeError, ("callback",), id="callback"),
        pytest.param(
            lambda lp: lp.add_timeout("x", print), TypeError, ("deadline",), id="deadline-str"
        ),
        pytest.param(
            lambda lp: lp.add_timeout(lp.time() + 1, None),
            TypeError,
            ("callback",),
            id="timeout-callback",
        ),
        pytest.param(lambda lp: lp.add_callback(5), TypeError, ("callback",), id="add_callback"),
        pytest.param(
            lambda lp: lp.call_later(math.nan, print),
            ValueError,
            ("delay",),
            id="delay-nan",
        ),
        pytest.param(
            lambda lp: lp.add_timeout(math.nan, print),
            ValueError,
            ("deadline",),
            id="deadline-nan",
        ),
        pytest.param(
            lambda lp: lp.remove_timeout("x"),
            TypeError,
            ("handle",),
            id="remove_timeout-str",
        ),
    ],
)
@ONE_POLLER
def test_timer_and_callback_bad_arguments(
    io_loop: IOLoop, call: Callable[[IOLoop], object], exc: Any, names: Any
) -> None:
    timers = len(io_loop._timers)
    callbacks = len(io_loop._callbacks)
    expect(io_loop, exc, names, lambda: call(io_loop))
    # Nothing was scheduled by the failed call.
    assert len(io_loop._timers) == timers
    assert len(io_loop._callbacks) == callbacks


@ONE_POLLER
def test_nan_timer_cannot_freeze_the_loop(io_loop: IOLoop) -> None:
    """A NaN delay (say, from a bad computation) must not stop the other timers.

    (Accepted, a NaN deadline sat on top of the timer heap for ever: no
    later timer ran, and poll() got a timeout of 0 — a 100% CPU spin.)
    """
    ran: list[str] = []
    try:
        io_loop.call_later(math.nan, lambda: ran.append("nan"))
    except ValueError:
        pass  # refused at once, as it should be
    io_loop.call_later(0.01, lambda: ran.append("later"))
    waiter = Waiter(io_loop)
    io_loop.call_later(0.02, waiter.done)
    # (Waiter's own deadline is a timer too: on failure it would never fire.
    # A thread stops the loop instead, bounded.)
    stopper = threading.Timer(1.0, io_loop.stop)
    stopper.start()
    cpu0, wall0 = time.process_time(), time.monotonic()
    try:
        io_loop.start()
    finally:
        stopper.cancel()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    assert ran == ["later"]
    assert cpu < 0.1 + 0.5 * wall, f"the loop spun: {cpu:.2f}s CPU in {wall:.2f}s"


def test_loop_wrong_state(io_loop: IOLoop) -> None:
    errors: list[BaseException] = []

    def inside() -> None:
        for call in (io_loop.start, io_loop.close):
            try:
                call()
            except RuntimeError as exc:
                errors.append(exc)
        io_loop.stop()

    io_loop.add_callback(inside)
    io_loop.start()
    assert len(errors) == 2
    assert all("running" in str(e) for e in errors), errors
    io_loop.close()
    io_loop.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        io_loop.start()


# ---------------------------------------------------------------- pollers


@pytest.fixture
def poller(poller_name: str) -> Iterator[Poller]:
    """A bare poller of this run's kind."""
    p = pollers.choose(poller_name)()
    yield p
    p.close()


def test_poller_bad_arguments(poller: Poller) -> None:
    a, b = socket.socketpair()
    with a, b:
        for bad, exc, name in [
            ("x", TypeError, "fd"),
            (-1, ValueError, "fd"),
            (_closed_socket(), ValueError, "fd"),
            (object(), TypeError, "fd"),
        ]:
            with pytest.raises(exc, match=name):
                poller.register(bad, READ)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="events"):
            poller.register(a, 0x100)
        with pytest.raises(TypeError, match="events"):
            poller.register(a, "r")  # type: ignore[arg-type]
        with pytest.raises(FileNotFoundError):
            poller.modify(a, READ)
        with pytest.raises(FileNotFoundError):
            poller.unregister(a)
        # None of the failed calls registered anything: a can be registered now.
        poller.register(a, READ)
        with pytest.raises(FileExistsError):
            poller.register(a, READ)
        with pytest.raises(FileExistsError):
            poller.register(a.fileno(), READ)
        poller.unregister(a)
        assert len(poller) == 0  # type: ignore[arg-type]
    poller.close()
    poller.close()
    with pytest.raises(ValueError, match="closed"):
        poller.register(socket.socket(), READ)
    with pytest.raises(ValueError, match="closed"):
        poller.poll(0)


def test_poller_poll_bad_timeout(poller: Poller) -> None:
    with pytest.raises(TypeError, match="timeout"):
        poller.poll("x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        poller.poll(math.nan)


def test_poller_closed_int_fd(poller: Poller) -> None:
    """An int fd that is not open: refused at once, or reported as ERROR — never silent."""
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    try:
        poller.register(fd, READ)
    except (OSError, ValueError):
        assert len(poller) == 0  # type: ignore[arg-type]
        return
    events = dict(poller.poll(0))
    assert events.get(fd, 0) & pollers.ERROR, events
    poller.unregister(fd)


def test_poller_regular_file(poller: Poller, regular_file: int, poller_name: str) -> None:
    """A regular file: poll/select watch it (always ready); epoll cannot.

    docs/guarantees.md ("Pollers"): "An fd this backend cannot watch is refused
    at `register` with a `ValueError` that says why and names a backend that
    can".
    """
    if poller_name == "epoll":
        with pytest.raises(ValueError, match="epoll") as info:
            poller.register(regular_file, READ)
        # Names a backend that can ("poll" or "select", not only "epoll").
        assert "poll" in str(info.value).replace("epoll", "") or "select" in str(info.value)
        assert len(poller) == 0  # type: ignore[arg-type]
        return
    try:
        poller.register(regular_file, READ)
    except ValueError as exc:
        assert "poll" in str(exc) or "select" in str(exc)
        assert len(poller) == 0  # type: ignore[arg-type]
        return
    events = dict(poller.poll(0))
    assert events.get(regular_file, 0) & READ
    poller.unregister(regular_file)


def test_ioloop_regular_file_on_epoll(regular_file: int) -> None:
    """Through the IOLoop: epoll refuses a regular file, and the loop's per-fd
    fallback watches it instead (docs/pollers.md, "Per-fd fallback": always
    ready, as poll/select say)."""
    if "epoll" not in pollers.available():
        pytest.skip("no epoll here")
    loop = IOLoop("epoll")
    try:
        loop.add_handler(regular_file, print, READ)
        assert regular_file in loop._handlers
        loop.remove_handler(regular_file)
        # The fd number is free in the loop's table: a socket may take it later.
        assert regular_file not in loop._handlers
    finally:
        loop.close()


# ---------------------------------------------------------------- IOStream constructor


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"io_loop": "loop"}, TypeError, "io_loop"),
        ({"max_buffer_size": 0}, ValueError, "max_buffer_size"),
        ({"max_buffer_size": -1}, ValueError, "max_buffer_size"),
        ({"max_buffer_size": "big"}, TypeError, "max_buffer_size"),
        ({"max_buffer_size": 1.5}, TypeError, "max_buffer_size"),
        ({"read_chunk_size": 0}, ValueError, "read_chunk_size"),
        ({"read_chunk_size": True}, TypeError, "read_chunk_size"),
        ({"max_write_buffer_size": -1}, ValueError, "max_write_buffer_size"),
        ({"max_write_buffer_size": "1"}, TypeError, "max_write_buffer_size"),
        ({"write_chunk_size": 0}, ValueError, "write_chunk_size"),
        ({"write_chunk_size": -5}, ValueError, "write_chunk_size"),
        ({"bogus": 1}, TypeError, "bogus"),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else ",".join(f"{k}={v[k]}" for k in v),
)
@pytest.mark.parametrize("cls", [IOStream, SSLIOStream])
@ONE_POLLER
def test_stream_bad_keyword(
    io_loop: IOLoop, cls: type[IOStream], kwargs: dict[str, Any], exc: Any, name: str
) -> None:
    sock = socket.socket()
    with sock:
        kw = {"io_loop": io_loop, **kwargs}
        expect(io_loop, exc, (name,), lambda: cls(sock, **kw))
        # The socket is still the caller's, open, and blocking as it was.
        assert sock.fileno() >= 0
        assert sock.getblocking()


@pytest.mark.parametrize("cls", [IOStream, SSLIOStream])
def test_stream_bad_socket(io_loop: IOLoop, cls: type[IOStream]) -> None:
    expect(io_loop, TypeError, ("socket",), lambda: cls(5, io_loop=io_loop))  # type: ignore[arg-type]
    expect(io_loop, TypeError, ("socket",), lambda: cls(None, io_loop=io_loop))  # type: ignore[arg-type]
    a, b = socket.socketpair()
    # A file object, not a socket: refused by type.
    with a, b, a.makefile("rb") as f:
        expect(io_loop, TypeError, ("socket",), lambda: cls(f, io_loop=io_loop))  # type: ignore[arg-type]
    expect(
        io_loop, ValueError, ("socket", "closed"), lambda: cls(_closed_socket(), io_loop=io_loop)
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        expect(io_loop, ValueError, ("socket", "SOCK_STREAM"), lambda: cls(udp, io_loop=io_loop))


def test_stream_on_a_regular_file(io_loop: IOLoop, regular_file: int) -> None:
    """What a user who tries to stream a file gets: Python refuses the socket itself.

    ``socket.socket(fileno=fd)`` of a regular file fails at once on Linux
    (ENOTSOCK), before the library sees it; the file's fd stays open and
    the user's. (Where the platform does build such a socket, the stream
    refuses it as not SOCK_STREAM or fails its first I/O with an OSError.)
    """
    try:
        sock = socket.socket(fileno=regular_file)
    except OSError as exc:
        assert exc.errno is not None
        os.fstat(regular_file)  # still open
        return
    try:
        with pytest.raises((ValueError, OSError)):
            stream = IOStream(sock, io_loop=io_loop)
            stream.read_bytes(1, print)
    finally:
        sock.detach()


# ---------------------------------------------------------------- IOStream calls


@pytest.fixture
def pair(streams: StreamKit) -> tuple[IOStream, socket.socket]:
    """A connected IOStream and its raw peer."""
    return streams.stream_and_peer()


@pytest.mark.parametrize(
    ("call", "exc", "names"),
    [
        (lambda s: s.read_until(b"", print), ValueError, ("delimiter",)),
        (lambda s: s.read_until("\n", print), TypeError, ("delimiter",)),
        (lambda s: s.read_until(None, print), TypeError, ("delimiter",)),
        (lambda s: s.read_until(b"\n", 5), TypeError, ("callback",)),
        (lambda s: s.read_until(b"\n", print, max_bytes=0), ValueError, ("max_bytes",)),
        (lambda s: s.read_until(b"\n", print, max_bytes=-1), ValueError, ("max_bytes",)),
        (lambda s: s.read_until(b"\n", print, max_bytes="9"), TypeError, ("max_bytes",)),
        (lambda s: s.read_bytes(-1, print), ValueError, ("num_bytes",)),
        (lambda s: s.read_bytes(1.5, print), TypeError, ("num_bytes",)),
        (lambda s: s.read_bytes("3", print), TypeError, ("num_bytes",)),
        (lambda s: s.read_bytes(3, 5), TypeError, ("callback",)),
        (lambda s: s.read_bytes(3, print, 5), TypeError, ("streaming_callback",)),
        (lambda s: s.read_until_close(5), TypeError, ("callback",)),
        (lambda s: s.read_until_close(print, "x"), TypeError, ("streaming_callback",)),
        (lambda s: s.write("text"), TypeError, ("data",)),
        (lambda s: s.write(5), TypeError, ("data",)),
        (lambda s: s.write(None), TypeError, ("data",)),
        (lambda s: s.write([1, 2]), TypeError, ("data",)),
        (lambda s: s.write(b"x", 5), TypeError, ("callback",)),
        (lambda s: s.set_close_callback(5), TypeError, ("callback",)),
        (lambda s: s.connect(("127.0.0.1", 1), 5), TypeError, ("callback",)),
    ],
    ids=lambda v: "" if callable(v) or isinstance(v, tuple) else v.__name__,
)
def test_stream_bad_call(
    io_loop: IOLoop,
    pair: tuple[IOStream, socket.socket],
    call: Callable[[IOStream], object],
    exc: Any,
    names: Any,
) -> None:
    stream, peer = pair
    expect(io_loop, exc, names, lambda: call(stream))
    # The stream is untouched: a good read and write still work.
    assert not stream.closed() and not stream.reading() and not stream.writing()
    got = Waiter(io_loop)
    stream.read_until(b"\n", got.callback)
    stream.write(b"out\n")
    peer.sendall(b"in\n")
    assert got.wait() == b"in\n"
    assert peer.recv(16) == b"out\n"


BAD_ADDRESSES = [
    pytest.param(None, ("address",), id="None"),
    pytest.param(12345, ("address",), id="int"),
    pytest.param(("127.0.0.1", "http"), ("port",), id="port-str"),
    pytest.param(("127.0.0.1", 70000), ("port",), id="port-70000"),
]


@pytest.mark.parametrize(("address", "names"), BAD_ADDRESSES)
@ONE_POLLER
def test_connect_bad_address_message(io_loop: IOLoop, address: Any, names: Any) -> None:
    stream = IOStream(socket.socket(), io_loop=io_loop)
    try:
        error = expect(
            io_loop, (TypeError, ValueError, OverflowError), (), lambda: stream.connect(address)
        )
        assert any(name in str(error) for name in names), error
    finally:
        stream.close()


@pytest.mark.parametrize("address", [None, ("127.0.0.1", 70000)], ids=["None", "port-70000"])
@ONE_POLLER
def test_connect_bad_address_leaves_stream_usable(
    io_loop: IOLoop, streams: StreamKit, address: Any
) -> None:
    listener = streams.listener()
    stream = streams.stream(socket.socket())
    with pytest.raises((TypeError, ValueError, OverflowError)):
        stream.connect(address)
    connected = Waiter(io_loop)
    stream.connect(listener.getsockname(), connected.done)
    connected.wait()


@ONE_POLLER
def test_connect_on_a_connected_stream(
    io_loop: IOLoop, pair: tuple[IOStream, socket.socket]
) -> None:
    stream, _peer = pair
    with pytest.raises(RuntimeError, match="connect"):
        stream.connect(("127.0.0.1", 1))
    assert not stream.closed()


def test_stream_wrong_state(io_loop: IOLoop, streams: StreamKit) -> None:
    listener = streams.listener()
    stream = streams.stream(socket.socket())
    stream.connect(listener.getsockname())
    # connect twice
    expect(io_loop, RuntimeError, ("connect",), lambda: stream.connect(listener.getsockname()))
    # read while reading: refused, and the first read still completes
    got = Waiter(io_loop)
    stream.read_bytes(3, got.callback)
    expect(io_loop, RuntimeError, ("read", "pending"), lambda: stream.read_bytes(1, print))
    expect(io_loop, RuntimeError, ("read",), lambda: stream.read_until(b"\n", print))
    expect(io_loop, RuntimeError, ("read",), lambda: stream.read_until_close(print))
    listener.settimeout(10.0)
    conn, _ = listener.accept()
    with conn:
        conn.sendall(b"abc")
        assert got.wait() == b"abc"
        closed = Waiter(io_loop)
        stream.set_close_callback(closed.done)
        stream.close()
        closed.wait()
    # after close: write, unsatisfiable read, connect
    expect(io_loop, StreamClosedError, (), lambda: stream.write(b"x"))
    expect(io_loop, StreamClosedError, (), lambda: stream.read_bytes(1, print))
    expect(io_loop, RuntimeError, ("closed",), lambda: stream.connect(listener.getsockname()))
    stream.close()  # idempotent


# ---------------------------------------------------------------- SSLIOStream


def test_ssl_options_bad(io_loop: IOLoop, tls: TLSFiles) -> None:
    sock = socket.socket()
    with sock:
        expect(
            io_loop,
            TypeError,
            ("ssl_options",),
            lambda: SSLIOStream(sock, ssl_options=5, io_loop=io_loop),  # type: ignore[arg-type]
        )
        expect(
            io_loop,
            ValueError,
            ("ssl_options", "bogus"),
            lambda: SSLIOStream(sock, ssl_options={"bogus": 1}, io_loop=io_loop),
        )
        expect(
            io_loop,
            ValueError,
            ("certfile",),
            lambda: SSLIOStream(sock, server_side=True, io_loop=io_loop),
        )
        expect(
            io_loop,
            ValueError,
            ("certfile",),
            lambda: SSLIOStream(
                sock, ssl_options={"keyfile": "k"}, server_side=True, io_loop=io_loop
            ),
        )
        assert sock.fileno() >= 0


@pytest.mark.parametrize("key", ["certfile", "ca_certs"])
@ONE_POLLER
def test_ssl_options_missing_file(io_loop: IOLoop, key: str) -> None:
    missing = "/nonexistent/iostream-test.pem"
    sock = socket.socket()
    with sock:
        expect(
            io_loop,
            OSError,
            (missing,),
            lambda: SSLIOStream(
                sock, ssl_options={key: missing}, server_side=key == "certfile", io_loop=io_loop
            ),
        )


@ONE_POLLER
def test_ssl_connect_bad_server_hostname(io_loop: IOLoop, streams: StreamKit) -> None:
    listener = streams.listener()
    stream = streams.track(SSLIOStream(socket.socket(), io_loop=io_loop))
    expect(
        io_loop,
        TypeError,
        ("server_hostname",),
        lambda: stream.connect(listener.getsockname(), server_hostname=5),  # type: ignore[call-overload]
    )


@ONE_POLLER
def test_ssl_server_side_with_a_client_context(io_loop: IOLoop) -> None:
    """A client context used for a server-side stream: refused at construction."""
    client_ctx = ssl.create_default_context()
    a, b = socket.socketpair()
    with a, b:
        error = expect(
            io_loop,
            (ValueError, ssl.SSLError),
            (),
            lambda: SSLIOStream(a, ssl_options=client_ctx, server_side=True, io_loop=io_loop),
        )
        assert a.fileno() >= 0
        # Says what is wrong: a client context for a server-side stream.
        assert "server" in str(error), error


# ---------------------------------------------------------------- TCPServer


def test_tcpserver_bad_arguments(io_loop: IOLoop) -> None:
    expect(io_loop, TypeError, ("handle_stream",), lambda: TCPServer(5, io_loop=io_loop))  # type: ignore[arg-type]
    expect(io_loop, TypeError, ("io_loop",), lambda: TCPServer(print, io_loop="x"))  # type: ignore[arg-type]
    expect(
        io_loop,
        TypeError,
        ("ssl_options",),
        lambda: TCPServer(print, io_loop=io_loop, ssl_options=5),  # type: ignore[arg-type]
    )
    expect(
        io_loop,
        ValueError,
        ("certfile",),
        lambda: TCPServer(print, io_loop=io_loop, ssl_options={}),
    )
    server = TCPServer(print, io_loop=io_loop)
    fds = fd_count()
    for port in (-1, 65536, "80", True, None, 1.5):
        expect(io_loop, ValueError, ("port",), lambda port=port: server.listen(port))  # type: ignore[misc]
    expect(io_loop, TypeError, ("address",), lambda: server.listen(0, 5))  # type: ignore[arg-type]
    assert fd_count() == fds


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"max_buffer_size": -1}, "max_buffer_size"), ({"bogus": 1}, "bogus")],
    ids=["max_buffer_size", "unknown"],
)
@ONE_POLLER
def test_tcpserver_bad_stream_kwargs(io_loop: IOLoop, kwargs: dict[str, Any], name: str) -> None:
    expect(
        io_loop,
        (TypeError, ValueError),
        (name,),
        lambda: TCPServer(print, io_loop=io_loop, **kwargs),
    )


@ONE_POLLER
def test_tcpserver_add_socket_bad(io_loop: IOLoop) -> None:
    server = TCPServer(print, io_loop=io_loop)
    expect(io_loop, TypeError, ("sock",), lambda: server.add_socket(5))  # type: ignore[arg-type]


def test_tcpserver_listen_port_in_use(io_loop: IOLoop) -> None:
    server = TCPServer(print, io_loop=io_loop)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        fds = fd_count()
        error = expect(io_loop, OSError, (), lambda: server.listen(port))
        assert isinstance(error, OSError) and error.errno is not None
        assert fd_count() == fds  # the socket that failed to bind was closed


@ONE_POLLER
def test_tcpserver_listen_partial_failure_leaves_nothing(
    io_loop: IOLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not has_ipv6():
        pytest.skip("needs ::1")
    with socket.socket(socket.AF_INET6) as taken:
        taken.bind(("::1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]

        def two_addresses(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
            ]

        server = TCPServer(print, io_loop=io_loop)
        fds = fd_count()
        monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
        try:
            expect(io_loop, OSError, (), lambda: server.listen(port, "localhost"))
        finally:
            monkeypatch.undo()
        assert fd_count() == fds


def test_tcpserver_listen_again_after_stop(io_loop: IOLoop, streams: StreamKit) -> None:
    """stop() is idempotent; listen() after stop() serves again (a fresh socket)."""
    got: list[bytes] = []

    def handle(stream: IOStream, address: Any) -> None:
        stream.read_until_close(got.append)

    server = TCPServer(handle, io_loop=io_loop)
    before = io_loop.handler_count()
    port = server.listen(0)
    server.stop()
    server.stop()
    assert io_loop.handler_count() == before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5.0)
    port = server.listen(0)
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.sendall(b"again")
    waiter = Waiter(io_loop)

    def check() -> None:
        if got:
            waiter.done()
        else:
            io_loop.call_later(0.005, check)

    io_loop.add_callback(check)
    waiter.wait()
    assert got == [b"again"]
    server.stop()
    spin_once(io_loop)
    assert io_loop.handler_count() == before


@pytest.mark.parametrize("registered", [False, True], ids=["no-handler", "raises-after-read"])
@ONE_POLLER
def test_tcpserver_handler_error_closes_the_connection(
    io_loop: IOLoop, registered: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/guarantees.md ("TCPServer and friends"): "An exception in
    `handle_stream` is logged and the server keeps accepting." The connection
    it was given must not be left hanging."""

    def failing(stream: IOStream, address: Any) -> None:
        stream.read_until(b"\n", print)
        raise RuntimeError("handler bug")

    server = TCPServer(failing if registered else None, io_loop=io_loop)
    before = io_loop.handler_count()
    port = server.listen(0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
            waiter = Waiter(io_loop)

            def check() -> None:
                if any(r.exc_info for r in caplog.records):
                    waiter.done()
                else:
                    io_loop.call_later(0.005, check)

            io_loop.add_callback(check)
            waiter.wait()
            spin_once(io_loop)
            # Dropped, not left hanging: EOF (or a reset) at once.
            sock.settimeout(2.0)
            try:
                assert sock.recv(1) == b""
            except ConnectionResetError:
                pass
            assert io_loop.handler_count() == before + 1  # the listener only
    finally:
        server.stop()
