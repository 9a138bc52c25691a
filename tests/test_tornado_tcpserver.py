"""Tornado's own server tests, ported onto this API (issue 10 items 6 and 7).

Sources (Tornado 6.x, ``tornado/test``):

* ``tcpserver_test.py`` — ``TCPServerTest``: a coroutine ``handle_stream``'s
  exception is logged; a native coroutine ``handle_stream`` serves;
  ``stop()`` twice; ``stop()`` inside ``handle_stream`` with many clients
  connecting (Tornado #2069: no EBADF). ``TestMultiprocess``: ``listen`` in
  one process, ``bind``/``start(3)``, ``bind_sockets``/``fork_processes``/
  ``add_sockets``, and ``reuse_port`` in every worker, each worker printing
  its task id.
* ``netutil_test.py`` — ``TestPortAllocation``: one port for every address
  of ``"localhost"``; ``reuse_port``.
* ``process_test.py`` — ``ProcessTest.test_multi_process``: three workers,
  two serve and the third is the client; workers made to exit with an error
  are restarted, one exiting with 0 is not, the last one's pid changes when
  it is made to fail, and the supervisor exits 0 when all exited normally.

What differs, and why:

* Tornado runs these on asyncio; here the in-process tests run on each
  poller's IOLoop (the ``io_loop`` fixture), and the multi-process ones in a
  fresh interpreter, each both under ``asyncio.run`` (as Tornado's) and on
  the native IOLoop's ``run_sync``.
* Tornado's coroutine tests ``yield``/``await`` stream Futures. They are
  here twice: as Tornado wrote them (``*_awaiting``: ``await
  stream.read_bytes(5)``, ``await client.connect(...)`` under ``run_sync``),
  and with the streams' callbacks resolving a Future (the callback API).
* ``test_stop_in_callback`` is skipped in Tornado when every client
  connected (the race it looks for did not happen); here it asserts that
  the server side logged nothing above DEBUG whatever happened, and the
  deterministic version lives in ``test_accept_reset.py``.
* ``process_test``'s HTTP server and client become a line protocol over
  plain sockets (``pid``, ``exit N``).
* Not ported, no such API here: ``is_valid_ip``, the resolvers,
  ``Subprocess``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Coroutine
from typing import Any

import pytest
from _stream_helpers import (  # noqa: F401  (fixtures)
    StreamKit,
    Waiter,
    settle,
    streams_fixture,
)
from test_process import start_script  # noqa: F401  (fixture)

from iostream import IOLoop, IOStream, TCPServer
from iostream.netutil import bind_sockets

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def future_read_bytes(stream: IOStream, n: int) -> asyncio.Future[bytes]:
    """An awaitable for ``stream.read_bytes(n)``, resolved by its callback."""
    future: asyncio.Future[bytes] = stream.io_loop.create_future()
    stream.read_bytes(n, future.set_result)
    return future


def bind_unused_port() -> tuple[socket.socket, int]:
    """Tornado's testing.bind_unused_port: one listening socket on 127.0.0.1."""
    (sock,) = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    port: int = sock.getsockname()[1]
    return sock, port


# ---------------------------------------------------------------- TCPServerTest


def test_handle_stream_coroutine_logging(
    io_loop: IOLoop, streams: StreamKit, caplog: pytest.LogCaptureFixture
) -> None:
    """handle_stream may be a coroutine; an exception in it is logged."""
    caplog.set_level(logging.ERROR, logger="iostream")

    class TestServer(TCPServer):
        def handle_stream(self, stream: IOStream, address: Any) -> Coroutine[Any, Any, None]:
            async def run() -> None:
                await future_read_bytes(stream, len(b"hello"))
                stream.close()
                1 / 0  # noqa: B018

            return run()

    sock, port = bind_unused_port()
    server = streams.track(TestServer(io_loop=io_loop))
    server.add_socket(sock)
    client = streams.stream(socket.socket())
    got = Waiter(io_loop)
    client.connect(("127.0.0.1", port))
    client.write(b"hello")
    client.read_until_close(got.callback)
    assert got.wait() == b""
    logged = Waiter(io_loop)

    def check() -> None:
        if any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records):
            logged.done()
        else:
            io_loop.call_later(0.005, check)

    io_loop.add_callback(check)
    logged.wait()


def test_handle_stream_native_coroutine(io_loop: IOLoop, streams: StreamKit) -> None:
    class TestServer(TCPServer):
        async def handle_stream(self, stream: IOStream, address: Any) -> None:
            stream.write(b"data")
            stream.close()

    sock, port = bind_unused_port()
    server = streams.track(TestServer(io_loop=io_loop))
    server.add_socket(sock)
    client = streams.stream(socket.socket())
    got = Waiter(io_loop)
    client.connect(("127.0.0.1", port))
    client.read_until_close(got.callback)
    assert got.wait() == b"data"
    server.stop()


def test_stop_twice(io_loop: IOLoop) -> None:
    sock, _port = bind_unused_port()
    server = TCPServer(io_loop=io_loop)
    server.add_socket(sock)
    server.stop()
    server.stop()
    assert sock.fileno() == -1


def test_stop_in_callback(
    io_loop: IOLoop, streams: StreamKit, caplog: pytest.LogCaptureFixture
) -> None:
    """Tornado #2069: stop() in handle_stream while more connections are being accepted."""
    caplog.set_level(logging.DEBUG)
    server: TCPServer

    class TestServer(TCPServer):
        def handle_stream(self, stream: IOStream, address: Any) -> None:
            server.stop()
            streams.track(stream)
            stream.read_until_close(lambda data: None)

    sock, port = bind_unused_port()
    server = streams.track(TestServer(io_loop=io_loop))
    server.add_socket(sock)
    n = 40
    outcomes = Waiter(io_loop, expected=n)
    connected: list[IOStream] = []
    for _ in range(n):
        client = streams.stream(socket.socket())

        def on_connect(client: IOStream = client) -> None:
            connected.append(client)
            outcomes.done()

        client.set_close_callback(outcomes.done)
        client.connect(("127.0.0.1", port), on_connect)
    outcomes.wait()
    assert connected, "all clients failed connecting"
    for client in connected:
        client.close()
    settle(io_loop)
    # Nothing from the server's side: no EBADF from accept() on the closed
    # socket (Tornado #2069), no error at all. A client whose connection was
    # reset with the listening socket may log its own connect error.
    server_side = ("netutil.py", "tcpserver.py", "ioloop.py")
    loud = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR
        or (r.levelno > logging.DEBUG and os.path.basename(r.pathname) in server_side)
    ]
    assert loud == [], [(r.levelname, r.getMessage()) for r in loud]


# ---------------------------------------------------------------- the same, awaiting stream Futures
#
# Tornado's coroutine tests exactly as written there (``await stream.read_bytes``,
# ``await client.connect``, ``await client.read_until_close()``), on the
# native IOLoop's run_sync, on every poller.

#: Seconds any one run_sync below may take.
RUN_TIMEOUT = 20.0


def test_handle_stream_coroutine_logging_awaiting(
    io_loop: IOLoop, streams: StreamKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="iostream")

    class TestServer(TCPServer):
        async def handle_stream(self, stream: IOStream, address: Any) -> None:
            await stream.read_bytes(len(b"hello"))
            stream.close()
            1 / 0  # noqa: B018

    sock, port = bind_unused_port()
    server = streams.track(TestServer(io_loop=io_loop))
    server.add_socket(sock)
    client = streams.stream(socket.socket())

    async def main() -> None:
        await client.connect(("127.0.0.1", port))
        await client.write(b"hello")
        await client.read_until_close()
        # Let the server's task get to its failure and be logged.
        for _ in range(100):
            if any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records):
                return
            await asyncio.sleep(0.01)

    io_loop.run_sync(main, timeout=RUN_TIMEOUT)
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)


def test_handle_stream_native_coroutine_awaiting(io_loop: IOLoop, streams: StreamKit) -> None:
    class TestServer(TCPServer):
        async def handle_stream(self, stream: IOStream, address: Any) -> None:
            stream.write(b"data")
            stream.close()

    sock, port = bind_unused_port()
    server = streams.track(TestServer(io_loop=io_loop))
    server.add_socket(sock)
    client = streams.stream(socket.socket())

    async def main() -> bytes:
        await client.connect(("127.0.0.1", port))
        result: bytes = await client.read_until_close()
        return result

    assert io_loop.run_sync(main, timeout=RUN_TIMEOUT) == b"data"
    server.stop()
    client.close()


def test_stop_in_callback_awaiting(
    io_loop: IOLoop, streams: StreamKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server: TCPServer

    class TestServer(TCPServer):
        async def handle_stream(self, stream: IOStream, address: Any) -> None:
            server.stop()
            streams.track(stream)
            await stream.read_until_close()

    sock, port = bind_unused_port()
    server = streams.track(TestServer(io_loop=io_loop))
    server.add_socket(sock)
    n = 40
    clients = [streams.stream(socket.socket()) for _ in range(n)]
    connected: list[IOStream] = []

    async def connect(client: IOStream) -> None:
        try:
            await client.connect(("127.0.0.1", port))
        except OSError:  # StreamClosedError is one
            pass
        else:
            connected.append(client)

    async def main() -> None:
        await asyncio.gather(*(connect(c) for c in clients))

    io_loop.run_sync(main, timeout=RUN_TIMEOUT)
    assert connected, "all clients failed connecting"
    for client in connected:
        client.close()
    settle(io_loop)
    server_side = ("netutil.py", "tcpserver.py", "ioloop.py")
    loud = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR
        or (r.levelno > logging.DEBUG and os.path.basename(r.pathname) in server_side)
    ]
    assert loud == [], [(r.levelname, r.getMessage()) for r in loud]


# ---------------------------------------------------------------- TestMultiprocess

#: Each worker prints its task id as one byte, then exits (status 0), so the
#: supervisor exits 0 too; stderr stays empty.


def run_subproc(start_script: Any, code: str) -> tuple[str, str]:
    script = start_script(code)
    status, out, err = script.finish()
    assert status == 0, f"status {status}; stdout={out!r} stderr={err!r}"
    return out, err


def quiet(err: str) -> str:
    """stderr without the INFO lines the test prelude's logging config adds."""
    return "".join(line for line in err.splitlines(True) if not line.startswith("INFO "))


#: How a script runs its ``async def main()``: on asyncio, as Tornado's
#: tests do (``IOLoop.current()`` is then an IOLoop on the asyncio loop), or
#: on the native IOLoop.
RUNNERS = {
    "asyncio": "import asyncio; asyncio.run(main())",
    "native": "from iostream import IOLoop; IOLoop.current().run_sync(main)",
}


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_listen_single(start_script: Any, runner: str) -> None:
    out, err = run_subproc(
        start_script,
        """
        from iostream import TCPServer

        async def main():
            server = TCPServer()
            server.listen(0, address="127.0.0.1")

        """
        + RUNNERS[runner]
        + """
        os.write(1, b"012")
        """,
    )
    assert "".join(sorted(out)) == "012"
    assert quiet(err) == ""


@needs_fork
def test_bind_start(start_script: Any) -> None:
    out, err = run_subproc(
        start_script,
        """
        from iostream import IOLoop, TCPServer

        server = TCPServer()
        server.bind(0, address="127.0.0.1")
        server.start(3)
        IOLoop.current().run_sync(lambda: None)
        os.write(1, str(task_id()).encode())
        """,
    )
    assert "".join(sorted(out)) == "012"
    assert quiet(err) == ""


@needs_fork
@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_add_sockets(start_script: Any, runner: str) -> None:
    out, err = run_subproc(
        start_script,
        """
        from iostream import TCPServer
        from iostream.netutil import bind_sockets

        sockets = bind_sockets(0, address="127.0.0.1")
        fork_processes(3)

        async def main():
            server = TCPServer()
            server.add_sockets(sockets)

        """
        + RUNNERS[runner]
        + """
        os.write(1, str(task_id()).encode())
        """,
    )
    assert "".join(sorted(out)) == "012"
    assert quiet(err) == ""


@needs_fork
@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_listen_multi_reuse_port(start_script: Any, runner: str) -> None:
    out, err = run_subproc(
        start_script,
        """
        import socket
        from iostream import TCPServer
        from iostream.netutil import bind_sockets

        # An unused port that every worker can bind again.
        (sock,) = bind_sockets(0, address="127.0.0.1", family=socket.AF_INET, reuse_port=True)
        port = sock.getsockname()[1]

        fork_processes(3)

        async def main():
            server = TCPServer()
            server.listen(port, address="127.0.0.1", reuse_port=True)

        """
        + RUNNERS[runner]
        + """
        os.write(1, str(task_id()).encode())
        """,
    )
    assert "".join(sorted(out)) == "012"
    assert quiet(err) == ""


# ---------------------------------------------------------------- netutil_test.TestPortAllocation


def test_same_port_allocation() -> None:
    sockets = bind_sockets(0, "localhost")
    try:
        port = sockets[0].getsockname()[1]
        assert all(s.getsockname()[1] == port for s in sockets[1:])
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_reuse_port() -> None:
    sockets: list[socket.socket] = []
    (sock,) = bind_sockets(0, "127.0.0.1", family=socket.AF_INET, reuse_port=True)
    port = sock.getsockname()[1]
    try:
        sockets = bind_sockets(port, "127.0.0.1", reuse_port=True)
        assert all(s.getsockname()[1] == port for s in sockets)
    finally:
        sock.close()
        for s in sockets:
            s.close()


# ---------------------------------------------------------------- process_test.ProcessTest

MULTI_PROCESS = """
import socket
from iostream import IOLoop, TCPServer
from iostream.netutil import bind_sockets

(sock,) = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
port = sock.getsockname()[1]

def fetch(command, fail_ok=False):
    # One request: a command line, the answer until the server closes.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(command + b"\\n")
        chunks = []
        while True:
            try:
                chunk = conn.recv(100)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            chunks.append(chunk)
    answer = b"".join(chunks)
    if not answer and not fail_ok:
        raise AssertionError(f"no answer to {command!r}")
    return answer

def handle(stream, address):
    def on_line(line):
        words = line.split()
        if words[:1] == [b"exit"]:
            os._exit(int(words[1]))
        stream.write(str(os.getpid()).encode(), stream.close)
    stream.read_until(b"\\n", on_line)

try:
    id = fork_processes(3, max_restarts=3)
    assert id is not None
except SystemExit as exc:
    # Exiting cleanly from fork_processes: every worker finished with status 0.
    assert exc.code == 0, exc.code
    assert task_id() is None
    sock.close()
    say("supervisor done")
    sys.exit(0)

if id in (0, 1):
    assert id == task_id()
    server = TCPServer(handle)
    server.add_sockets([sock])
    IOLoop.current().start()
elif id == 2:
    assert id == task_id()
    sock.close()
    # Make two processes exit abnormally; they are restarted.
    fetch(b"exit 2", fail_ok=True)
    fetch(b"exit 3", fail_ok=True)
    int(fetch(b"pid"))
    # Make one exit normally: not restarted. One process is left.
    fetch(b"exit 0", fail_ok=True)
    pid = int(fetch(b"pid"))
    fetch(b"exit 4", fail_ok=True)
    pid2 = int(fetch(b"pid"))
    assert pid != pid2, (pid, pid2)
    # The last one exits normally, so the supervisor shuts down cleanly.
    fetch(b"exit 0", fail_ok=True)
    say("client done")
    os._exit(0)
"""


@needs_fork
def test_multi_process(start_script: Any) -> None:
    script = start_script(MULTI_PROCESS)
    status, out, err = script.finish()
    assert status == 0, f"status {status}; stdout={out!r} stderr={err!r}"
    assert sorted(out.splitlines()) == ["client done", "supervisor done"], (out, err)
    # exit 2, 3 and 4 restarted; exit 0 twice did not.
    assert err.count(", restarting") == 3, err
    assert err.count("exited normally") == 3, err  # the two servers and the client
