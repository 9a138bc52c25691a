"""The fault sockets under asyncio: what works, and what docs/testing.md says does not.

asyncio's *selector* event loop (the default on Linux and macOS) drives a
transport through the Python socket object it was given, so a
:class:`ChaosSocket` or :class:`WindowsSocket` passed as ``sock=`` is
exercised for real. Loops that bypass the Python object (uvloop works on
the raw fd; Windows' proactor uses overlapped I/O) see no fault at all.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from iostream import IOLoop
from iostream.testing import (
    WINDOWS_SEND_LIMIT,
    WSAENOBUFS,
    ChaosSocket,
    Waiter,
    WindowsSocket,
    parse_schedule,
    socket_pair,
    stream_pair,
    tls_contexts,
)

pytestmark = pytest.mark.skipif(
    sys.platform == "win32",
    reason="asyncio's default loop on Windows is the proactor, which never calls sock.send",
)

PAYLOAD = bytes(range(256)) * 4 * 1024  # 1 MiB


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def _faulted(sock: ChaosSocket) -> set[str]:
    return {f.kind for f in sock.send_record + sock.recv_record if f.kind != "ok"}


def test_asyncio_streams_over_a_chaos_socket_lose_nothing() -> None:
    """open_connection(sock=ChaosSocket): short sends/reads, EAGAIN and EINTR, data intact."""

    async def main() -> tuple[bytes, ChaosSocket]:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        raw.setblocking(False)
        # An explicit start (so every kind surely happens), then seeded draws.
        sock = ChaosSocket.wrap(
            raw,
            parse_schedule("[short(1), block, eintr, short(7), eintr]"),
            parse_schedule("[eintr, short(3), block]"),
            seed="asyncio",
        )
        reader, writer = await asyncio.open_connection(sock=sock)
        # writelines: asyncio 3.12+ hands several buffers to sock.sendmsg.
        writer.writelines([PAYLOAD[:1000], PAYLOAD[1000:300_000]])
        writer.write(PAYLOAD[300_000:])
        got = await asyncio.wait_for(reader.readexactly(len(PAYLOAD)), 60)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return got, sock

    got, sock = asyncio.run(main())
    assert got == PAYLOAD
    assert {"short", "block", "eintr"} <= _faulted(sock), sock.describe()
    assert sock.send_violations(PAYLOAD) == []


def test_loop_sock_sendall_and_sock_recv_over_a_chaos_socket() -> None:
    """loop.sock_sendall retries short sends and would-block; loop.sock_recv survives EINTR."""

    async def main() -> tuple[bytes, ChaosSocket, ChaosSocket]:
        loop = asyncio.get_running_loop()
        a, b = socket_pair()
        sender = ChaosSocket.wrap(a, seed=1)
        receiver = ChaosSocket.wrap(b, seed=2)
        with sender, receiver:
            send = asyncio.ensure_future(loop.sock_sendall(sender, PAYLOAD))
            got = bytearray()
            for _ in range(100_000):
                chunk = await asyncio.wait_for(loop.sock_recv(receiver, 65536), 30)
                assert chunk, "peer closed early"
                got += chunk
                if len(got) >= len(PAYLOAD):
                    break
            await send
            return bytes(got), sender, receiver

    got, sender, receiver = asyncio.run(main())
    assert got == PAYLOAD
    assert sender.send_violations(PAYLOAD) == []
    # At least 16 recv calls (1 MiB in 64 KiB reads): the first 16 draws of
    # seed 2 are fixed, and include these.
    assert {"short", "block"} <= _faulted(receiver), receiver.describe()


def test_asyncio_transport_gives_up_on_wsaenobufs() -> None:
    """What docs/testing.md warns about: a selector transport treats WSAENOBUFS as fatal.

    asyncio's ``_SelectorSocketTransport.write`` retries only
    BlockingIOError/InterruptedError; any other OSError closes the
    connection. Under Winsock's send rule, one write over 128 KiB does it.
    """

    async def main() -> BaseException | None:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        raw.setblocking(False)
        sock = WindowsSocket.wrap(raw)
        reader, writer = await asyncio.open_connection(sock=sock)
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
        writer.write(b"small")  # under the limit: fine
        assert await asyncio.wait_for(reader.readexactly(5), 30) == b"small"
        writer.write(b"x" * (WINDOWS_SEND_LIMIT + 1))
        error: BaseException | None = None
        try:
            await asyncio.wait_for(writer.drain(), 30)
            await asyncio.wait_for(reader.read(), 30)
        except OSError as exc:
            error = exc
        # On 3.12+ drain() raises a plain ConnectionResetError("Connection
        # lost") first; the error the transport gave up on is the one it
        # passed to connection_lost, which the StreamReader keeps.
        lost = reader.exception()
        writer.close()
        server.close()
        await server.wait_closed()
        return lost if lost is not None else error

    error = asyncio.run(main())
    assert isinstance(error, OSError)
    assert getattr(error, "winerror", None) == WSAENOBUFS


def test_asyncio_transport_small_writes_piling_up_hit_wsaenobufs_too() -> None:
    """The transport hands its whole buffer to one send: small writes add up past 128 KiB."""

    async def main() -> tuple[BaseException | None, int]:
        go = asyncio.Event()

        async def slow_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await go.wait()  # read nothing until the client's buffer has piled up
            while await reader.read(65536):
                pass
            writer.close()

        server = await asyncio.start_server(slow_reader, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        raw.setblocking(False)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        sock = WindowsSocket.wrap(raw)
        reader, writer = await asyncio.open_connection(sock=sock)
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
        transport = writer.transport
        for _ in range(10_000):  # bounded: until 256 KiB wait in the transport
            writer.write(b"s" * 4096)
            if transport.get_write_buffer_size() > 2 * WINDOWS_SEND_LIMIT:
                break
        piled = transport.get_write_buffer_size()
        go.set()
        error: BaseException | None = None
        try:
            await asyncio.wait_for(reader.read(), 30)
        except OSError as exc:
            error = exc
        writer.close()
        server.close()
        await server.wait_closed()
        return error, piled

    error, piled = asyncio.run(main())
    assert piled > 2 * WINDOWS_SEND_LIMIT
    assert isinstance(error, OSError)
    assert getattr(error, "winerror", None) == WSAENOBUFS


def test_asyncio_tls_runs_over_a_chaos_socket() -> None:
    """asyncio's TLS (a memory BIO over the transport): the plain faults apply below it."""
    server_context, client_context = tls_contexts()

    async def main() -> tuple[bytes, ChaosSocket]:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        raw.setblocking(False)
        sock = ChaosSocket.wrap(
            raw,
            parse_schedule("[short(1), block, eintr]"),
            parse_schedule("[short(5), eintr, block]"),
            seed="tls",
        )
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=client_context, server_hostname="localhost"
        )
        writer.write(PAYLOAD)
        got = await asyncio.wait_for(reader.readexactly(len(PAYLOAD)), 60)
        writer.close()
        server.close()
        await server.wait_closed()
        return got, sock

    got, sock = asyncio.run(main())
    assert got == PAYLOAD
    assert {"short", "block", "eintr"} <= _faulted(sock)


def test_uvloop_does_not_see_the_fault_socket() -> None:
    """uvloop reads and writes the fd itself: the Python-level faults never happen."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> tuple[bytes, ChaosSocket]:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        raw.setblocking(False)
        sock = ChaosSocket.wrap(raw, seed=2)
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(PAYLOAD[:100_000])
        got = await asyncio.wait_for(reader.readexactly(100_000), 30)
        writer.close()
        server.close()
        await server.wait_closed()
        return got, sock

    loop = uvloop.new_event_loop()
    try:
        got, sock = loop.run_until_complete(main())
    finally:
        loop.close()
    assert got == PAYLOAD[:100_000]
    assert sock.send_record == [] and sock.recv_record == []


def test_iostreams_on_an_asyncio_loop_over_chaos_sockets() -> None:
    """IOLoop.from_asyncio: the library's streams on asyncio's loop, fault sockets underneath."""

    async def main() -> tuple[bytes, ChaosSocket, ChaosSocket]:
        io_loop = IOLoop.current()
        a, b = stream_pair("chaos", io_loop, seed="bridge")
        try:
            done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            b.read_bytes(len(PAYLOAD), done.set_result)
            a.write(PAYLOAD)
            got = await asyncio.wait_for(done, 60)
            assert isinstance(a.socket, ChaosSocket) and isinstance(b.socket, ChaosSocket)
            return got, a.socket, b.socket
        finally:
            a.close()
            b.close()

    got, sock, peer = asyncio.run(main())
    assert got == PAYLOAD
    # The receiving side makes at least 16 recv calls; the first draws of its
    # seed ("bridge/server") include a short read and would-blocks.
    assert {"short", "block"} <= _faulted(peer), peer.describe()
    assert sock.send_violations(PAYLOAD) == []


def test_waiter_type_is_exported() -> None:
    # Waiter is the callback-style counterpart used with IOLoop directly.
    loop = IOLoop("select")
    try:
        w = Waiter(loop)
        loop.add_callback(w.done, 1)
        assert w.wait(timeout=20) == 1
    finally:
        loop.close(all_fds=True)
