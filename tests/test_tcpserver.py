"""TCPServer against its contract (docs/guarantees.md, "TCPServer and friends"), on every
poller.

Covers ``handle_stream`` as an argument and as an overridden method,
``listen(0)`` returning the port (IPv4 and IPv6), many pending connections,
exceptions in ``handle_stream``, ``stop()`` (idempotent; open streams stay
open), stream keyword arguments, and TLS servers (``handle_stream`` may run
before the handshake ends; reads and writes wait for it; a plaintext client
does not stop the server).

Tornado's set-up API (issue 10 item 6): ``io_loop=None`` is the current
loop; ``add_sockets``/``add_socket``; ``bind`` then ``start()`` (and
``bind`` after it); ``listen`` with ``family``/``reuse_port``; a UNIX socket
server; ``start(2)`` for real in a fresh interpreter: both workers serve
(one is held busy so the other must take the next connection; their pids
and task ids differ), a worker killed by SIGKILL and one exiting with
status 1 are each replaced by a new pid with the same task id, and after
SIGTERM to the supervisor every worker is reaped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from _stream_helpers import (  # noqa: F401  (fixtures)
    SOCKET_TIMEOUT,
    StreamKit,
    TLSFiles,
    Waiter,
    has_ipv6,
    iostream_errors,
    settle,
    streams_fixture,
    tls_fixture,
)
from support import run_until
from test_process import pid_alive, start_script  # noqa: F401  (fixture)

from iostream import (
    IOLoop,
    IOStream,
    SSLIOStream,
    StreamBufferFullError,
    TCPServer,
)
from iostream.netutil import bind_sockets, bind_unix_socket


def echo_line(stream: IOStream, address: Any) -> None:
    """handle_stream: answer one line with b"echo: " + line, then close."""

    def on_line(line: bytes) -> None:
        stream.write(b"echo: " + line, stream.close)

    stream.read_until(b"\n", on_line)


def client_request(
    io_loop: IOLoop, streams: StreamKit, port: int, payload: bytes, host: str = "127.0.0.1"
) -> bytes:
    """Connect an IOStream client, send *payload*, return everything until close."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    client = streams.stream(streams.track(socket.socket(family, socket.SOCK_STREAM)))
    w = Waiter(io_loop)
    client.connect((host, port))
    client.write(payload)
    client.read_until_close(w.callback)
    result: bytes = w.wait()
    return result


# ---------------------------------------------------------------- basics


def test_handle_stream_argument(io_loop: IOLoop, streams: StreamKit) -> None:
    seen: list[Any] = []

    def handle(stream: IOStream, address: Any) -> None:
        seen.append((type(stream), address))
        echo_line(stream, address)

    server = streams.track(TCPServer(handle, io_loop=io_loop))
    port = server.listen(0)
    assert isinstance(port, int) and port > 0
    assert client_request(io_loop, streams, port, b"hi\n") == b"echo: hi\n"
    assert len(seen) == 1
    assert issubclass(seen[0][0], IOStream)
    assert seen[0][1][0] == "127.0.0.1"


def test_handle_stream_keyword(io_loop: IOLoop, streams: StreamKit) -> None:
    server = streams.track(TCPServer(handle_stream=echo_line, io_loop=io_loop))
    port = server.listen(0)
    assert client_request(io_loop, streams, port, b"kw\n") == b"echo: kw\n"


def test_handle_stream_overridden(io_loop: IOLoop, streams: StreamKit) -> None:
    class EchoServer(TCPServer):
        handled = 0

        def handle_stream(self, stream: IOStream, address: Any) -> None:
            EchoServer.handled += 1
            echo_line(stream, address)

    server = streams.track(EchoServer(io_loop=io_loop))
    port = server.listen(0)
    assert client_request(io_loop, streams, port, b"sub\n") == b"echo: sub\n"
    assert EchoServer.handled == 1


def test_handler_sees_client_address(io_loop: IOLoop, streams: StreamKit) -> None:
    addresses: list[Any] = []
    local: list[Any] = []
    got = Waiter(io_loop)

    def handle(stream: IOStream, address: Any) -> None:
        addresses.append(address)
        stream.write(b"x", stream.close)

    server = streams.track(TCPServer(handle, io_loop=io_loop))
    port = server.listen(0)
    client_sock = streams.track(socket.socket())
    client = streams.stream(client_sock)
    client.connect(("127.0.0.1", port), lambda: local.append(client_sock.getsockname()))
    client.read_until_close(got.callback)
    assert got.wait() == b"x"
    assert tuple(addresses[0][:2]) == tuple(local[0][:2])


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback here")
def test_listen_ipv6(io_loop: IOLoop, streams: StreamKit) -> None:
    server = streams.track(TCPServer(echo_line, io_loop=io_loop))
    port = server.listen(0, "::1")
    assert port > 0
    assert client_request(io_loop, streams, port, b"six\n", host="::1") == b"echo: six\n"


def test_listen_twice_on_two_ports(io_loop: IOLoop, streams: StreamKit) -> None:
    server = streams.track(TCPServer(echo_line, io_loop=io_loop))
    p1 = server.listen(0)
    p2 = server.listen(0)
    assert p1 != p2
    assert client_request(io_loop, streams, p1, b"1\n") == b"echo: 1\n"
    assert client_request(io_loop, streams, p2, b"2\n") == b"echo: 2\n"


def test_listen_on_a_port_in_use_raises(io_loop: IOLoop, streams: StreamKit) -> None:
    taken = streams.listener()
    server = streams.track(TCPServer(echo_line, io_loop=io_loop))
    server.stop()  # before any listen(): a no-op
    with pytest.raises(OSError):
        server.listen(taken.getsockname()[1])
    port = server.listen(0)  # the failure left the server usable
    assert client_request(io_loop, streams, port, b"ok\n") == b"echo: ok\n"


def test_many_pending_connections(io_loop: IOLoop, streams: StreamKit) -> None:
    n = 200
    handled: list[Any] = []
    all_handled = Waiter(io_loop)

    def handle(stream: IOStream, address: Any) -> None:
        handled.append(address)
        streams.track(stream)
        stream.write(b"%d" % len(handled), stream.close)
        if len(handled) == n:
            all_handled.done()

    server = streams.track(TCPServer(handle, io_loop=io_loop))
    port = server.listen(0)
    clients = []
    for _ in range(n):
        s = streams.track(socket.socket())
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", port))
        assert err in (0, 115, 36, 10035, 11), err  # 0, EINPROGRESS (Linux/macOS), WSA, EAGAIN
        clients.append(s)
    all_handled.wait(timeout=30)
    assert len(handled) == n
    assert len({tuple(a[:2]) for a in handled}) == n


def test_exception_in_handle_stream_is_logged_and_server_keeps_accepting(
    io_loop: IOLoop, streams: StreamKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="iostream")
    exc = RuntimeError("handler bug")
    calls = [0]

    def handle(stream: IOStream, address: Any) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise exc
        echo_line(stream, address)

    server = streams.track(TCPServer(handle, io_loop=io_loop))
    port = server.listen(0)
    first = streams.stream(streams.track(socket.socket()))
    first_closed = Waiter(io_loop)
    first.set_close_callback(first_closed.done)
    first.connect(("127.0.0.1", port))
    first.read_until_close(lambda d: None)
    # The second connection is served even though the first handler raised.
    assert client_request(io_loop, streams, port, b"again\n") == b"echo: again\n"
    assert calls[0] == 2
    assert iostream_errors(caplog, exc), "the handler's exception must be logged"


def test_stop_is_idempotent_and_keeps_open_streams(io_loop: IOLoop, streams: StreamKit) -> None:
    server_streams: list[IOStream] = []
    accepted = Waiter(io_loop)

    def handle(stream: IOStream, address: Any) -> None:
        server_streams.append(stream)
        streams.track(stream)
        stream.read_bytes(4, lambda data: stream.write(data.upper()))
        accepted.done()

    server = streams.track(TCPServer(handle, io_loop=io_loop))
    port = server.listen(0)
    client = streams.stream(streams.track(socket.socket()))
    client.connect(("127.0.0.1", port))
    accepted.wait()
    server.stop()
    server.stop()
    settle(io_loop)
    # New connections are refused...
    probe = streams.track(socket.socket())
    probe.settimeout(10)
    with pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))
    # ...but the stream accepted before stop() still works.
    got = Waiter(io_loop)
    client.write(b"open")
    client.read_bytes(4, got.callback)
    assert got.wait() == b"OPEN"
    assert not server_streams[0].closed()


def test_stream_kwargs_reach_the_streams(io_loop: IOLoop, streams: StreamKit) -> None:
    closed = Waiter(io_loop)
    errors: list[Any] = []

    def handle(stream: IOStream, address: Any) -> None:
        streams.track(stream)

        def on_close() -> None:
            errors.append(stream.error)
            closed.done()

        stream.set_close_callback(on_close)
        stream.read_until(b"\n", lambda d: None)

    server = streams.track(TCPServer(handle, io_loop=io_loop, max_buffer_size=4096))
    port = server.listen(0)
    client = streams.stream(streams.track(socket.socket()))
    client.connect(("127.0.0.1", port))
    client.write(b"z" * 100_000)
    closed.wait()
    assert isinstance(errors[0], StreamBufferFullError)


# ---------------------------------------------------------------- TLS


def _tls_client(streams: StreamKit, tls: TLSFiles, port: int) -> SSLIOStream:
    client = streams.track(
        SSLIOStream(socket.socket(), ssl_options=tls.client_context(), io_loop=streams.io_loop)
    )
    return client


@pytest.mark.parametrize("options", ["context", "dict"])
def test_tls_server(io_loop: IOLoop, streams: StreamKit, tls: TLSFiles, options: str) -> None:
    handled: list[Any] = []

    def handle(stream: IOStream, address: Any) -> None:
        handled.append(stream)
        streams.track(stream)
        # Issued at once: may be before the handshake has finished.
        stream.write(b"greeting\n")
        stream.read_until(b"\n", lambda line: stream.write(b"echo: " + line, stream.close))

    ssl_options: Any = (
        tls.server_context()
        if options == "context"
        else {"certfile": tls.cert_path, "keyfile": tls.key_path}
    )
    server = streams.track(TCPServer(handle, io_loop=io_loop, ssl_options=ssl_options))
    port = server.listen(0)
    client = _tls_client(streams, tls, port)
    connected = Waiter(io_loop)
    client.connect(("127.0.0.1", port), connected.done, server_hostname="localhost")
    client.write(b"hello\n")
    got = Waiter(io_loop)
    client.read_until_close(got.callback)
    assert got.wait() == b"greeting\necho: hello\n"
    assert connected.calls == 1
    assert isinstance(handled[0], SSLIOStream)
    assert client.error is None


def test_tls_server_survives_plaintext_client(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles
) -> None:
    handled: list[IOStream] = []
    errors: dict[int, Any] = {}

    def handle(stream: IOStream, address: Any) -> None:
        handled.append(stream)
        streams.track(stream)

        def on_close() -> None:
            errors[id(stream)] = stream.error

        stream.set_close_callback(on_close)
        stream.read_until(b"\n", lambda line: stream.write(b"echo: " + line, stream.close))

    server = streams.track(TCPServer(handle, io_loop=io_loop, ssl_options=tls.server_context()))
    port = server.listen(0)
    plain = streams.stream(streams.track(socket.socket()))
    plain_closed = Waiter(io_loop)
    plain.set_close_callback(plain_closed.done)
    plain.connect(("127.0.0.1", port))
    plain.write(b"GET / HTTP/1.0\r\n\r\n")
    plain.read_until_close(lambda d: None)
    plain_closed.wait()
    n_plain = len(handled)
    assert n_plain <= 1
    # A proper TLS client is still served.
    client = _tls_client(streams, tls, port)
    client.connect(("127.0.0.1", port), server_hostname="localhost")
    client.write(b"tls\n")
    got = Waiter(io_loop)
    client.read_until_close(got.callback)
    assert got.wait() == b"echo: tls\n"
    if n_plain:
        # handle_stream ran before the handshake: that stream closed with the TLS error.
        first = handled[0]
        run_until(io_loop, lambda: id(first) in errors)
        assert isinstance(errors[id(first)], ssl.SSLError), repr(errors[id(first)])


# ---------------------------------------------------------------- Tornado's set-up API


def test_io_loop_none_is_the_current_loop(io_loop: IOLoop, streams: StreamKit) -> None:
    io_loop.make_current()
    try:
        server = streams.track(TCPServer(echo_line))
    finally:
        IOLoop.clear_current()
    assert server.io_loop is io_loop
    port = server.listen(0)
    assert client_request(io_loop, streams, port, b"cur\n") == b"echo: cur\n"


def test_add_sockets_and_add_socket(io_loop: IOLoop, streams: StreamKit) -> None:
    server = streams.track(TCPServer(echo_line, io_loop=io_loop))
    first = bind_sockets(0, "127.0.0.1")
    second = bind_sockets(0, "127.0.0.1")
    server.add_sockets(first)
    server.add_socket(second[0])
    for sock in (first[0], second[0]):
        port = sock.getsockname()[1]
        assert client_request(io_loop, streams, port, b"add\n") == b"echo: add\n"
    server.stop()
    assert first[0].fileno() == -1 and second[0].fileno() == -1  # the server owned them


def test_add_sockets_bad_input_adds_nothing(io_loop: IOLoop, streams: StreamKit) -> None:
    server = streams.track(TCPServer(echo_line, io_loop=io_loop))
    (good,) = bind_sockets(0, "127.0.0.1")
    streams.track(good)
    handlers = io_loop.handler_count()
    with pytest.raises(TypeError, match="sockets"):
        server.add_sockets([good, "not a socket"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="sockets"):
        server.add_sockets(good)  # type: ignore[arg-type]
    closed = socket.socket()
    closed.close()
    with pytest.raises(ValueError, match="sockets"):
        server.add_sockets([closed])
    assert io_loop.handler_count() == handlers


def test_bind_then_start_in_this_process(io_loop: IOLoop, streams: StreamKit) -> None:
    server = streams.track(TCPServer(echo_line, io_loop=io_loop))
    handlers = io_loop.handler_count()
    port = server.bind(0, "127.0.0.1")
    assert io_loop.handler_count() == handlers  # not accepting before start()
    server.start()
    assert client_request(io_loop, streams, port, b"bound\n") == b"echo: bound\n"
    # bind() after start() accepts at once.
    port2 = server.bind(0, "127.0.0.1", family=socket.AF_INET, backlog=8)
    assert client_request(io_loop, streams, port2, b"later\n") == b"echo: later\n"
    with pytest.raises(RuntimeError, match="start"):
        server.start()


def test_start_bad_num_processes(io_loop: IOLoop, streams: StreamKit) -> None:
    server = streams.track(TCPServer(echo_line, io_loop=io_loop))
    with pytest.raises(TypeError, match="num_processes"):
        server.start("2")  # type: ignore[arg-type]
    server.start(1)  # the failed call did not count as a start


def test_stop_closes_bound_but_unstarted_sockets(io_loop: IOLoop, streams: StreamKit) -> None:
    server = streams.track(TCPServer(echo_line, io_loop=io_loop))
    port = server.bind(0, "127.0.0.1")
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5.0)


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_listen_reuse_port_twice(io_loop: IOLoop, streams: StreamKit) -> None:
    a = streams.track(TCPServer(echo_line, io_loop=io_loop))
    b = streams.track(TCPServer(echo_line, io_loop=io_loop))
    port = a.listen(0, "127.0.0.1", reuse_port=True)
    assert b.listen(port, "127.0.0.1", reuse_port=True) == port
    assert client_request(io_loop, streams, port, b"rp\n") == b"echo: rp\n"


def test_listen_family_ipv4_only(io_loop: IOLoop, streams: StreamKit) -> None:
    server = streams.track(TCPServer(echo_line, io_loop=io_loop))
    port = server.listen(0, "localhost", family=socket.AF_INET)
    assert client_request(io_loop, streams, port, b"v4\n") == b"echo: v4\n"


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no AF_UNIX")
def test_unix_socket_server(io_loop: IOLoop, streams: StreamKit, tmp_path: Path) -> None:
    path = str(tmp_path / "server.sock")
    server = streams.track(TCPServer(echo_line, io_loop=io_loop))
    server.add_socket(bind_unix_socket(path))
    client = streams.stream(streams.track(socket.socket(socket.AF_UNIX)))
    got = Waiter(io_loop)
    client.connect(path)
    client.write(b"local\n")
    client.read_until_close(got.callback)
    assert got.wait() == b"echo: local\n"


# ---------------------------------------------------------------- start(n): pre-forked workers

#: The worker script: each connection gets "<pid> <task id>\n", then one
#: command line: "hold" blocks the whole worker (answering "holding") until
#: the client sends a byte, so the next connection must go to another
#: worker; "exit N" ends the worker with status N.
WORKER_SERVER = """
import select
from iostream import IOLoop, TCPServer

def handle(stream, address):
    def on_command(line):
        command = line.split()
        if command == [b"hold"]:
            stream.socket.send(b"holding\\n")
            select.select([stream.socket], [], [], 30)
            stream.socket.recv(1)  # unread data would make close() send a reset
            stream.close()
        elif command[:1] == [b"exit"]:
            os._exit(int(command[1]))
        else:
            stream.close()

    stream.write(f"{os.getpid()} {task_id()}\\n".encode())
    stream.read_until(b"\\n", on_command)

server = TCPServer(handle)
port = server.bind(0, "127.0.0.1")
say(f"port {port}")
server.start(2)
IOLoop.current().start()
"""


class WorkerClient:
    """A blocking client of WORKER_SERVER: who served it (pid, task id)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
        self.file = self.sock.makefile("rb")
        pid, task = self.file.readline().split()
        self.pid = int(pid)
        self.task = int(task)

    def hold(self) -> None:
        self.sock.sendall(b"hold\n")
        assert self.file.readline() == b"holding\n"

    def release(self) -> None:
        self.sock.sendall(b"x")
        assert self.file.read() == b""  # the worker closed the connection

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_start_2_serves_from_both_workers_and_replaces_dead_ones(
    start_script: Any, poller_name: str
) -> None:
    script = start_script(WORKER_SERVER, env={"IOSTREAM_POLLER": poller_name})
    deadline = time.monotonic() + 60
    port = int(script.line(deadline).split()[1])
    clients: list[WorkerClient] = []

    def connect() -> WorkerClient:
        client = WorkerClient(port)
        clients.append(client)
        return client

    try:
        # Worker A is held: the next connection can only be served by B.
        a = connect()
        a.hold()
        b = connect()
        assert b.pid != a.pid
        assert {a.task, b.task} == {0, 1}
        # B killed by a signal: its replacement (same task id) takes the next one.
        os.kill(b.pid, signal.SIGKILL)
        c = connect()
        assert c.pid not in (a.pid, b.pid)
        assert c.task == b.task
        # C exits with an error: replaced again.
        c.sock.sendall(b"exit 1\n")
        assert c.file.read() == b""  # C is gone (its fds closed with it)
        d = connect()
        assert d.pid not in (a.pid, b.pid, c.pid)
        assert d.task == b.task
        a.release()
        # A serves again once released.
        again = connect()
        assert again.pid in (a.pid, d.pid)
    finally:
        for client in clients:
            client.close()
    os.kill(script.proc.pid, signal.SIGTERM)
    status, _out, err = script.finish()
    assert status == 128 + signal.SIGTERM, err
    assert f"killed by signal {signal.SIGKILL}, restarting" in err, err
    assert "exited with status 1, restarting" in err, err
    for pid in (a.pid, b.pid, c.pid, d.pid):
        assert not pid_alive(pid), f"worker {pid} was not reaped"


def test_serves_inside_asyncio_run() -> None:
    """io_loop=None inside a running asyncio loop: the server runs on that loop."""

    async def main() -> bytes:
        server = TCPServer(echo_line)
        try:
            port = server.listen(0)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"aio\n")
            reply = await asyncio.wait_for(reader.read(), timeout=SOCKET_TIMEOUT)
            writer.close()
            return reply
        finally:
            server.stop()

    assert asyncio.run(main()) == b"echo: aio\n"
