"""iostream.netutil: bind_sockets, bind_unix_socket, add_accept_handler (issue 10 item 6).

Each socket made here serves a real echo through ``TCPServer.add_sockets``
and an IOStream client on the test's loop (every poller): IPv4, IPv6 (``::1``),
both on one port from ``"localhost"``, a UNIX path, a Linux abstract name.
Also: port 0 gives the same port on every address (Tornado's own
netutil tests are ported in test_tornado_tcpserver.py), ``reuse_port``,
``IPV6_V6ONLY``, all-or-nothing binding, stale UNIX socket files, the
accept handler's removal (also from inside its callback), its per-event
bound, and bad arguments named in the error with no fd leaked.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from _load_helpers import fd_count
from _stream_helpers import (  # noqa: F401  (fixtures)
    SOCKET_TIMEOUT,
    StreamKit,
    Waiter,
    has_ipv6,
    settle,
    streams_fixture,
)

from iostream import IOLoop, IOStream, TCPServer
from iostream.netutil import (
    ACCEPTS_PER_EVENT,
    add_accept_handler,
    bind_sockets,
    bind_unix_socket,
)

needs_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback here")
needs_unix = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no AF_UNIX")
needs_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="abstract UNIX names are Linux only"
)


def echo_server(io_loop: IOLoop, streams: StreamKit) -> TCPServer:
    """A TCPServer (not yet listening) answering one line with b"echo: " + line."""

    def handle(stream: IOStream, address: Any) -> None:
        streams.track(stream)
        stream.read_until(b"\n", lambda line: stream.write(b"echo: " + line, stream.close))

    return streams.track(TCPServer(handle, io_loop=io_loop))


def echo_over(streams: StreamKit, family: int, address: Any, payload: bytes = b"hi\n") -> bytes:
    """Connect an IOStream client of *family* to *address*; send; return all it gets."""
    client = streams.stream(streams.track(socket.socket(family, socket.SOCK_STREAM)))
    got = Waiter(streams.io_loop)
    client.connect(address)
    client.write(payload)
    client.read_until_close(got.callback)
    result: bytes = got.wait()
    return result


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


# ---------------------------------------------------------------- bind_sockets


def test_bind_sockets_ipv4_echo(io_loop: IOLoop, streams: StreamKit) -> None:
    sockets = bind_sockets(0, "127.0.0.1")
    assert len(sockets) == 1
    sock = sockets[0]
    assert sock.family == socket.AF_INET
    assert sock.getblocking() is False
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    port = sock.getsockname()[1]
    assert port > 0
    server = echo_server(io_loop, streams)
    server.add_sockets(sockets)
    assert echo_over(streams, socket.AF_INET, ("127.0.0.1", port)) == b"echo: hi\n"


@needs_ipv6
def test_bind_sockets_ipv6_echo(io_loop: IOLoop, streams: StreamKit) -> None:
    sockets = bind_sockets(0, "::1")
    assert [s.family for s in sockets] == [socket.AF_INET6]
    # IPv6 sockets never take IPv4 too, on every OS.
    assert sockets[0].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    port = sockets[0].getsockname()[1]
    server = echo_server(io_loop, streams)
    server.add_sockets(sockets)
    assert echo_over(streams, socket.AF_INET6, ("::1", port)) == b"echo: hi\n"


@needs_ipv6
def test_port_zero_on_two_loopbacks_gives_one_port(
    io_loop: IOLoop, streams: StreamKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name for ::1 and 127.0.0.1 (IPv6 listed first), port 0: one port, both served."""
    real = socket.getaddrinfo

    def both(host: Any, port: Any, family: Any = 0, *args: Any) -> Any:
        assert host == "dual.test" and port == 0
        return real("::1", 0, socket.AF_INET6, socket.SOCK_STREAM) + real(
            "127.0.0.1", 0, socket.AF_INET, socket.SOCK_STREAM
        )

    monkeypatch.setattr(socket, "getaddrinfo", both)
    sockets = bind_sockets(0, "dual.test")
    monkeypatch.undo()
    assert [s.family for s in sockets] == [socket.AF_INET, socket.AF_INET6]
    port = sockets[0].getsockname()[1]
    assert sockets[1].getsockname()[1] == port
    server = echo_server(io_loop, streams)
    server.add_sockets(sockets)
    assert echo_over(streams, socket.AF_INET, ("127.0.0.1", port), b"four\n") == b"echo: four\n"
    assert echo_over(streams, socket.AF_INET6, ("::1", port), b"six\n") == b"echo: six\n"


def test_family_restricts_addresses() -> None:
    sockets = bind_sockets(0, "localhost", family=socket.AF_INET)
    try:
        assert sockets and all(s.family == socket.AF_INET for s in sockets)
    finally:
        close_all(sockets)


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_reuse_port_sets_the_option_and_is_needed() -> None:
    """A second bind of the port works with reuse_port, and only with it."""
    (first,) = bind_sockets(0, "127.0.0.1", reuse_port=True)
    port = first.getsockname()[1]
    try:
        second = bind_sockets(port, "127.0.0.1", reuse_port=True)
        try:
            assert all(s.getsockname()[1] == port for s in second)
            assert second[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        finally:
            close_all(second)
        # Without it the port is taken.
        with pytest.raises(OSError) as info:
            bind_sockets(port, "127.0.0.1")
        assert info.value.errno == errno.EADDRINUSE
    finally:
        first.close()


@needs_ipv6
def test_bind_sockets_all_or_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """If one address cannot be bound, the sockets already made are closed."""
    with socket.socket(socket.AF_INET6) as taken:
        taken.bind(("::1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        real = socket.getaddrinfo

        def both(host: Any, port_: Any, *args: Any, **kwargs: Any) -> Any:
            return real("127.0.0.1", port, socket.AF_INET, socket.SOCK_STREAM) + real(
                "::1", port, socket.AF_INET6, socket.SOCK_STREAM
            )

        fds = fd_count()
        monkeypatch.setattr(socket, "getaddrinfo", both)
        with pytest.raises(OSError) as info:
            bind_sockets(port, "localhost")
        monkeypatch.undo()
        assert info.value.errno == errno.EADDRINUSE
        assert fd_count() == fds


def test_bind_sockets_skips_duplicate_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def twice(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **kwargs) * 2

    monkeypatch.setattr(socket, "getaddrinfo", twice)
    sockets = bind_sockets(0, "127.0.0.1")
    monkeypatch.undo()
    try:
        assert len(sockets) == 1
    finally:
        close_all(sockets)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"port": -1}, ValueError, "port"),
        ({"port": 65536}, ValueError, "port"),
        ({"port": "80"}, ValueError, "port"),
        ({"port": None}, ValueError, "port"),
        ({"port": True}, ValueError, "port"),
        ({"port": 0, "address": 5}, TypeError, "address"),
        ({"port": 0, "family": 12345}, ValueError, "family"),
        ({"port": 0, "family": socket.AF_INET, "backlog": -1}, ValueError, "backlog"),
        ({"port": 0, "backlog": "10"}, ValueError, "backlog"),
        ({"port": 0, "flags": "passive"}, TypeError, "flags"),
        ({"port": 0, "reuse_port": "yes"}, TypeError, "reuse_port"),
    ],
)
def test_bind_sockets_bad_arguments(kwargs: dict[str, Any], error: type, name: str) -> None:
    fds = fd_count()
    with pytest.raises(error) as info:
        bind_sockets(**kwargs)
    assert name in str(info.value)
    assert fd_count() == fds


# ---------------------------------------------------------------- bind_unix_socket


@needs_unix
def test_unix_socket_path_echo(io_loop: IOLoop, streams: StreamKit, tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")
    sock = bind_unix_socket(path)
    assert sock.getblocking() is False
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    server = echo_server(io_loop, streams)
    server.add_socket(sock)
    assert echo_over(streams, socket.AF_UNIX, path, b"unix\n") == b"echo: unix\n"


@needs_unix
def test_unix_socket_mode_and_pathlike(tmp_path: Path) -> None:
    path = tmp_path / "mode.sock"
    sock = bind_unix_socket(path, mode=0o660, backlog=5)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    finally:
        sock.close()


@needs_unix
def test_unix_socket_replaces_a_stale_socket_file(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    old = bind_unix_socket(path)
    old.close()  # the file stays, as after a crash
    assert os.path.exists(path)
    new = bind_unix_socket(path)
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(SOCKET_TIMEOUT)
            client.connect(path)  # the new socket listens there
    finally:
        new.close()


@needs_unix
def test_unix_socket_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes(b"precious")
    fds = fd_count()
    with pytest.raises(ValueError) as info:
        bind_unix_socket(str(path))
    assert "not a socket" in str(info.value)
    assert path.read_bytes() == b"precious"
    assert fd_count() == fds


@needs_unix
@needs_linux
def test_unix_socket_abstract_name_echo(io_loop: IOLoop, streams: StreamKit) -> None:
    name = f"\0iostream-test-{os.getpid()}-{id(streams)}"
    sock = bind_unix_socket(name)
    assert sock.getsockname() in (name, name.encode())
    server = echo_server(io_loop, streams)
    server.add_socket(sock)
    assert echo_over(streams, socket.AF_UNIX, name, b"abstract\n") == b"echo: abstract\n"


@needs_unix
@pytest.mark.parametrize(
    ("args", "error", "name"),
    [
        ((5,), TypeError, "file"),
        (("",), ValueError, "file"),
        (("x.sock", "0o600"), ValueError, "mode"),
        (("x.sock", 0o600, -1), ValueError, "backlog"),
    ],
)
def test_bind_unix_socket_bad_arguments(
    tmp_path: Path, args: tuple[Any, ...], error: type, name: str
) -> None:
    if args and args[0] == "x.sock":
        args = (str(tmp_path / "x.sock"), *args[1:])
    fds = fd_count()
    with pytest.raises(error) as info:
        bind_unix_socket(*args)
    assert name in str(info.value)
    assert fd_count() == fds
    assert not (tmp_path / "x.sock").exists()


# ---------------------------------------------------------------- add_accept_handler


def test_add_accept_handler_gives_connection_and_address(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    listener = streams.listener()
    got = Waiter(io_loop)
    remove = add_accept_handler(listener, lambda c, a: got.done((streams.track(c), a)), io_loop)
    client = streams.track(socket.create_connection(listener.getsockname(), SOCKET_TIMEOUT))
    connection, address = got.wait()
    assert isinstance(connection, socket.socket)
    assert tuple(address[:2]) == tuple(client.getsockname()[:2])
    remove()
    remove()  # idempotent


def test_remove_stops_accepting(io_loop: IOLoop, streams: StreamKit) -> None:
    listener = streams.listener()
    accepted: list[Any] = []
    handlers = io_loop.handler_count()
    remove = add_accept_handler(listener, lambda c, a: accepted.append(streams.track(c)), io_loop)
    assert io_loop.handler_count() == handlers + 1
    remove()
    assert io_loop.handler_count() == handlers
    streams.track(socket.create_connection(listener.getsockname(), SOCKET_TIMEOUT))
    settle(io_loop)
    assert accepted == []
    assert listener.fileno() >= 0  # remove() does not close the socket


def test_remove_inside_callback_stops_the_batch(io_loop: IOLoop, streams: StreamKit) -> None:
    listener = streams.listener()
    accepted: list[socket.socket] = []
    first = Waiter(io_loop)
    removers: list[Any] = []

    def on_connection(connection: socket.socket, address: Any) -> None:
        accepted.append(streams.track(connection))
        removers[0]()
        listener.close()  # as TCPServer.stop() does: no accept() on it after this
        first.done()

    # Three connections queued before the loop runs: one event sees them all.
    for _ in range(3):
        streams.track(socket.create_connection(listener.getsockname(), SOCKET_TIMEOUT))
    removers.append(add_accept_handler(listener, on_connection, io_loop))
    first.wait()
    settle(io_loop)
    assert len(accepted) == 1


class EndlessListener(socket.socket):
    """A listening socket whose ``accept`` always has another connection."""

    def accept(self) -> tuple[socket.socket, Any]:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM), ("192.0.2.1", 1)


def test_accepts_per_event_are_bounded(io_loop: IOLoop, streams: StreamKit) -> None:
    listener = streams.track(EndlessListener(socket.AF_INET, socket.SOCK_STREAM))
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    # A real pending connection keeps the fd readable.
    streams.track(socket.create_connection(listener.getsockname(), SOCKET_TIMEOUT))
    count = [0]
    after_first_event = Waiter(io_loop)

    def on_connection(connection: socket.socket, address: Any) -> None:
        connection.close()
        count[0] += 1
        if count[0] == 1:
            # Runs once the handler has returned (next iteration).
            io_loop.add_callback(lambda: after_first_event.done(count[0]))

    remove = add_accept_handler(listener, on_connection, io_loop)
    try:
        assert after_first_event.wait() == ACCEPTS_PER_EVENT
    finally:
        remove()


def test_add_accept_handler_defaults_to_the_current_loop(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    listener = streams.listener()
    io_loop.make_current()
    try:
        got = Waiter(io_loop)
        remove = add_accept_handler(listener, lambda c, a: got.done(streams.track(c)))
        streams.track(socket.create_connection(listener.getsockname(), SOCKET_TIMEOUT))
        assert isinstance(got.wait(), socket.socket)
        remove()
    finally:
        IOLoop.clear_current()


def test_add_accept_handler_bad_arguments(io_loop: IOLoop, streams: StreamKit) -> None:
    listener = streams.listener()
    handlers = io_loop.handler_count()
    with pytest.raises(TypeError, match="sock"):
        add_accept_handler(5, print, io_loop)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callback"):
        add_accept_handler(listener, 5, io_loop)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="io_loop"):
        add_accept_handler(listener, print, "loop")  # type: ignore[arg-type]
    assert io_loop.handler_count() == handlers
