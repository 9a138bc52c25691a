"""Tornado's own IOStream tests (tornado/test/iostream_test.py, 6.x, with the
4.5 ones they grew from), ported onto this API, on every poller.

Tornado's ``TestReadWriteMixin`` runs here on three stream pairs — plain
TCP, TLS, and pipes (``PipeIOStream``) — as Tornado runs it on
``TestIOStream``, ``TestIOStreamSSL`` and ``TestPipeIOStream``; then the
socket-only tests (connect errors, read errors, write Futures), start_tls,
wait_for_handshake and the pipe tests. ``gen_test`` coroutines become
``async def`` functions run by ``IOLoop.run_sync``; ``ExpectLog`` becomes
``caplog``; Tornado's names are kept in the test names.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from _stream_helpers import (  # noqa: F401  (fixtures)
    StreamKit,
    TLSFiles,
    closed_port,
    streams_fixture,
    tls_fixture,
)

from iostream import IOLoop, IOStream, SSLIOStream, StreamClosedError, TCPServer
from iostream.stream import BaseIOStream, UnsatisfiableReadError

_POSIX = sys.platform != "win32"
LIMIT = 30
MB = 1024 * 1024

Pair = tuple[BaseIOStream, BaseIOStream]


def run(io_loop: IOLoop, fn: Callable[[], Awaitable[Any]]) -> Any:
    return io_loop.run_sync(fn, timeout=LIMIT)


def _kinds() -> list[str]:
    return ["plain", "tls", "pipe"] if _POSIX else ["plain", "tls"]


@pytest.fixture(params=_kinds())
def make_pair(
    request: pytest.FixtureRequest, io_loop: IOLoop, streams: StreamKit, tls: TLSFiles
) -> Iterator[Callable[..., Pair]]:
    """``make_pair(**kwargs) -> (rs, ws)``: a reading and a writing stream."""
    kind: str = request.param

    def make(**kwargs: Any) -> Pair:
        if kind == "plain":
            a, b = streams.pair(client_kwargs=kwargs, server_kwargs=kwargs)
            return a, b
        if kind == "tls":
            client, server = streams.ssl_pair(tls, client_kwargs=kwargs, server_kwargs=kwargs)
            return server, client
        from iostream.pipe import PipeIOStream

        r, w = os.pipe()
        rs = streams.track(PipeIOStream(r, io_loop=io_loop, **kwargs))
        ws = streams.track(PipeIOStream(w, io_loop=io_loop, **kwargs))
        return rs, ws

    yield make


class Event:
    """asyncio.Event stand-in usable as a plain callback."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def set(self) -> None:
        self.event.set()

    async def wait(self) -> None:
        await self.event.wait()


def info_records(caplog: pytest.LogCaptureFixture, prefix: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(prefix)]


# ---------------------------------------------------------------- TestReadWriteMixin


def test_write_zero_bytes(io_loop: IOLoop, make_pair: Callable[..., Pair]) -> None:
    _rs, ws = make_pair()

    async def main() -> None:
        await ws.write(b"")

    run(io_loop, main)


def test_future_delayed_close_callback(io_loop: IOLoop, make_pair: Callable[..., Pair]) -> None:
    rs, ws = make_pair()

    async def main() -> list[bytes]:
        ws.write(b"12")
        chunks = [await rs.read_bytes(1)]
        ws.close()
        chunks.append(await rs.read_bytes(1))
        return chunks

    assert run(io_loop, main) == [b"1", b"2"]


def test_close_buffered_data(io_loop: IOLoop, make_pair: Callable[..., Pair]) -> None:
    rs, ws = make_pair(read_chunk_size=256)

    async def main() -> list[bytes]:
        ws.write(b"A" * 512)
        first = await rs.read_bytes(256)
        ws.close()
        await asyncio.sleep(0.01)
        return [first, await rs.read_bytes(256)]

    assert run(io_loop, main) == [b"A" * 256, b"A" * 256]


def test_read_until_close_after_close(io_loop: IOLoop, make_pair: Callable[..., Pair]) -> None:
    rs, ws = make_pair()

    async def main() -> list[bytes]:
        ws.write(b"1234")
        data = await rs.read_bytes(1)
        ws.close()
        return [data, await rs.read_until_close()]

    assert run(io_loop, main) == [b"1", b"234"]


def test_large_read_until(io_loop: IOLoop, make_pair: Callable[..., Pair]) -> None:
    rs, ws = make_pair()

    async def main() -> int:
        for _ in range(4096):
            ws.write(b"A" * 1024)
        ws.write(b"\r\n")
        return len(await rs.read_until(b"\r\n"))

    assert run(io_loop, main) == 4096 * 1024 + 2


def test_read_until_with_close_after_second_packet(
    io_loop: IOLoop, make_pair: Callable[..., Pair]
) -> None:
    rs, ws = make_pair()

    async def main() -> bytes:
        rf = asyncio.ensure_future(rs.read_until(b"done"))
        await asyncio.sleep(0.1)
        await ws.write(b"x" * 2048)
        ws.write(b"done")
        ws.close()
        data: bytes = await rf
        return data

    assert run(io_loop, main) == b"x" * 2048 + b"done"


def test_read_until_unsatisfied_after_close(
    io_loop: IOLoop, make_pair: Callable[..., Pair]
) -> None:
    rs, ws = make_pair()

    async def main() -> None:
        rf = asyncio.ensure_future(rs.read_until(b"done"))
        await ws.write(b"x" * 2048)
        ws.write(b"foo")
        ws.close()
        await rf

    with pytest.raises(StreamClosedError) as info:
        run(io_loop, main)
    assert not isinstance(info.value, UnsatisfiableReadError)


def test_close_callback_with_pending_read(io_loop: IOLoop, make_pair: Callable[..., Pair]) -> None:
    rs, ws = make_pair()

    async def main() -> bytes:
        event = Event()
        rs.set_close_callback(event.set)
        ws.write(b"OK\r\n")
        res = await rs.read_until(b"\r\n")
        ws.close()
        rs.read_until(b"\r\n")  # never satisfied; nobody awaits it
        await event.wait()
        return res

    assert run(io_loop, main) == b"OK\r\n"


def test_future_close_callback(io_loop: IOLoop, make_pair: Callable[..., Pair]) -> None:
    rs, ws = make_pair()
    closed: list[bool] = []

    async def main() -> None:
        event = Event()

        def on_close() -> None:
            closed.append(True)
            event.set()

        rs.set_close_callback(on_close)
        ws.write(b"a")
        assert await rs.read_bytes(1) == b"a"
        assert closed == []
        ws.close()
        await event.wait()

    run(io_loop, main)
    assert closed == [True]


def test_write_memoryview(io_loop: IOLoop, make_pair: Callable[..., Pair]) -> None:
    rs, ws = make_pair()

    async def main() -> bytes:
        fut = rs.read_bytes(4)
        ws.write(memoryview(b"hello"))
        data: bytes = await fut
        return data

    assert run(io_loop, main) == b"hell"


def test_read_bytes_partial(io_loop: IOLoop, make_pair: Callable[..., Pair]) -> None:
    rs, ws = make_pair()

    async def main() -> list[bytes]:
        fut = rs.read_bytes(50, partial=True)
        ws.write(b"hello")
        got = [await fut]
        fut = rs.read_bytes(3, partial=True)
        ws.write(b"world")
        got.append(await fut)
        got.append(await rs.read_bytes(0, partial=True))
        return got

    assert run(io_loop, main) == [b"hello", b"wor", b""]


def test_read_until_max_bytes(
    io_loop: IOLoop, make_pair: Callable[..., Pair], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="iostream")
    rs, ws = make_pair()

    async def main() -> list[bytes]:
        closed = Event()
        rs.set_close_callback(closed.set)
        fut = rs.read_until(b"def", max_bytes=50)
        ws.write(b"abcdef")
        got = [await fut]
        fut = rs.read_until(b"def", max_bytes=6)
        ws.write(b"abcdef")
        got.append(await fut)
        rs.read_until(b"def", max_bytes=5)
        ws.write(b"123456")
        await closed.wait()
        return got

    assert run(io_loop, main) == [b"abcdef", b"abcdef"]
    assert len(info_records(caplog, "Unsatisfiable read")) == 1


def test_read_until_max_bytes_inline(
    io_loop: IOLoop, make_pair: Callable[..., Pair], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="iostream")
    rs, ws = make_pair()

    async def main() -> None:
        closed = Event()
        rs.set_close_callback(closed.set)
        ws.write(b"123456")
        # Not raised synchronously: the Future fails (a StreamClosedError, as
        # in Tornado, that is also an UnsatisfiableReadError:
        # docs/guarantees.md, "IOStream", the Futures paragraph).
        fut = rs.read_until(b"def", max_bytes=5)
        with pytest.raises(StreamClosedError) as info:
            await fut
        assert isinstance(info.value, UnsatisfiableReadError)
        await closed.wait()

    run(io_loop, main)
    assert len(info_records(caplog, "Unsatisfiable read")) == 1


def test_read_until_max_bytes_ignores_extra(
    io_loop: IOLoop, make_pair: Callable[..., Pair], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="iostream")
    rs, ws = make_pair()

    async def main() -> None:
        closed = Event()
        rs.set_close_callback(closed.set)
        ws.write(b"abcdef")
        rs.read_until(b"def", max_bytes=5)
        await closed.wait()

    run(io_loop, main)
    assert len(info_records(caplog, "Unsatisfiable read")) == 1


def test_read_until_regex_max_bytes(
    io_loop: IOLoop, make_pair: Callable[..., Pair], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="iostream")
    rs, ws = make_pair()

    async def main() -> list[bytes]:
        closed = Event()
        rs.set_close_callback(closed.set)
        fut = rs.read_until_regex(b"def", max_bytes=50)
        ws.write(b"abcdef")
        got = [await fut]
        fut = rs.read_until_regex(b"def", max_bytes=6)
        ws.write(b"abcdef")
        got.append(await fut)
        rs.read_until_regex(b"def", max_bytes=5)
        ws.write(b"123456")
        await closed.wait()
        return got

    assert run(io_loop, main) == [b"abcdef", b"abcdef"]
    assert len(info_records(caplog, "Unsatisfiable read")) == 1


@pytest.mark.parametrize("data", [b"123456", b"abcdef"], ids=["inline", "ignores_extra"])
def test_read_until_regex_max_bytes_inline_and_ignores_extra(
    io_loop: IOLoop,
    make_pair: Callable[..., Pair],
    caplog: pytest.LogCaptureFixture,
    data: bytes,
) -> None:
    caplog.set_level(logging.INFO, logger="iostream")
    rs, ws = make_pair()

    async def main() -> None:
        closed = Event()
        rs.set_close_callback(closed.set)
        ws.write(data)
        rs.read_until_regex(b"def", max_bytes=5)
        await closed.wait()

    run(io_loop, main)
    assert len(info_records(caplog, "Unsatisfiable read")) == 1


def test_small_reads_from_large_buffer(io_loop: IOLoop, make_pair: Callable[..., Pair]) -> None:
    rs, ws = make_pair(max_buffer_size=10 * 1024)

    async def main() -> int:
        ws.write(b"a" * 1024 * 100)
        for _ in range(100):
            assert await rs.read_bytes(1024) == b"a" * 1024
        return 100

    assert run(io_loop, main) == 100
    assert not rs.closed()


def test_small_read_untils_from_large_buffer(
    io_loop: IOLoop, make_pair: Callable[..., Pair]
) -> None:
    rs, ws = make_pair(max_buffer_size=10 * 1024)

    async def main() -> int:
        ws.write((b"a" * 1023 + b"\n") * 100)
        for _ in range(100):
            assert await rs.read_until(b"\n", max_bytes=4096) == b"a" * 1023 + b"\n"
        return 100

    assert run(io_loop, main) == 100
    assert not rs.closed()


def test_flow_control(io_loop: IOLoop, make_pair: Callable[..., Pair]) -> None:
    rs, ws = make_pair(max_buffer_size=5 * MB)

    async def main() -> int:
        ws.write(b"a" * 10 * MB)
        total = len(await rs.read_bytes(MB))
        await asyncio.sleep(0.1)
        for _ in range(9):
            total += len(await rs.read_bytes(MB))
        return total

    assert run(io_loop, main) == 10 * MB
    assert not rs.closed() and rs.error is None


def test_read_into(io_loop: IOLoop, make_pair: Callable[..., Pair]) -> None:
    rs, ws = make_pair()

    async def main() -> None:
        buf = bytearray(10)
        fut = rs.read_into(buf)
        ws.write(b"hello")
        await asyncio.sleep(0.05)
        assert rs.reading()
        ws.write(b"world!!")
        assert await fut == 10
        assert not rs.reading()
        assert bytes(buf) == b"helloworld"
        # The existing buffer is fed into the user's buffer.
        fut = rs.read_into(buf)
        await asyncio.sleep(0.05)
        assert rs.reading()
        ws.write(b"1234567890")
        assert await fut == 10
        assert not rs.reading()
        assert bytes(buf) == b"!!12345678"
        # The existing buffer can satisfy the read at once.
        buf = bytearray(4)
        ws.write(b"abcdefghi")
        assert await rs.read_into(buf) == 4
        assert bytes(buf) == b"90ab"
        assert await rs.read_bytes(7) == b"cdefghi"

    run(io_loop, main)


def test_read_into_partial(io_loop: IOLoop, make_pair: Callable[..., Pair]) -> None:
    rs, ws = make_pair()

    async def main() -> None:
        buf = bytearray(10)
        fut = rs.read_into(buf, partial=True)
        ws.write(b"hello")
        assert await fut == 5
        assert not rs.reading()
        assert bytes(buf) == b"hello\0\0\0\0\0"
        ws.write(b"world!1234567890")
        assert await rs.read_into(buf, partial=True) == 10
        assert bytes(buf) == b"world!1234"
        assert await rs.read_into(buf, partial=True) == 6
        assert bytes(buf) == b"5678901234"

    run(io_loop, main)


def test_read_into_zero_bytes(io_loop: IOLoop, make_pair: Callable[..., Pair]) -> None:
    rs, _ws = make_pair()
    fut = rs.read_into(bytearray())
    assert fut.done() and fut.result() == 0


def test_many_mixed_reads(io_loop: IOLoop, make_pair: Callable[..., Pair]) -> None:
    r = random.Random(42)
    nbytes = 1000000
    rs, ws = make_pair()
    produced = hashlib.sha1()
    consumed = hashlib.sha1()

    async def produce() -> None:
        remaining = nbytes
        while remaining > 0:
            size = r.randint(1, min(1000, remaining))
            data = os.urandom(size)
            produced.update(data)
            await ws.write(data)
            remaining -= size

    async def consume() -> None:
        remaining = nbytes
        while remaining > 0:
            size = r.randint(1, min(1000, remaining))
            if r.random() > 0.5:
                data = await rs.read_bytes(size)
                consumed.update(data)
            else:
                buf = bytearray(size)
                assert await rs.read_into(buf) == size
                consumed.update(buf)
            remaining -= size

    async def main() -> None:
        await asyncio.gather(produce(), consume())

    run(io_loop, main)
    assert produced.hexdigest() == consumed.hexdigest()


# ---------------------------------------------------------------- TestIOStreamMixin (sockets)


def test_connection_refused(io_loop: IOLoop, streams: StreamKit) -> None:
    stream = streams.stream(socket.socket())
    closed: list[bool] = []
    stream.set_close_callback(lambda: closed.append(True))

    async def main() -> None:
        await stream.connect(("127.0.0.1", closed_port()))

    with pytest.raises(StreamClosedError):
        run(io_loop, main)
    assert isinstance(stream.error, ConnectionRefusedError), stream.error


def test_gaierror(io_loop: IOLoop, streams: StreamKit, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    stream = streams.stream(socket.socket())

    def boom(self: socket.socket, address: Any) -> None:
        raise socket.gaierror(errno.EIO, "boom")

    monkeypatch.setattr(socket.socket, "connect", boom)

    async def main() -> None:
        await stream.connect(("localhost", 80))

    with pytest.raises(StreamClosedError):
        run(io_loop, main)
    assert isinstance(stream.error, socket.gaierror)


@pytest.mark.skipif(not _POSIX, reason="os.close on a socket fd is POSIX-only")
def test_async_read_error_logging(
    io_loop: IOLoop, streams: StreamKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="iostream")
    server, client = streams.pair()
    real = server.read_from_fd

    def fake_read_from_fd(view: memoryview) -> int | None:
        os.close(server.fileno())
        return real(view)

    async def main() -> None:
        closed = Event()
        server.set_close_callback(closed.set)
        server.read_bytes(1)
        client.write(b"a")
        server.read_from_fd = fake_read_from_fd  # type: ignore[method-assign]
        await closed.wait()

    run(io_loop, main)
    # Logged once, by the stream, as Tornado words it.
    prefix = f"error on read from fd {server.fileno()} "
    records = [r for r in caplog.records if r.getMessage().startswith(prefix)]
    assert len(records) == 1 and records[0].levelno == logging.WARNING


def test_future_write(io_loop: IOLoop, streams: StreamKit) -> None:
    """Write Futures are never orphaned (10 concurrent producers)."""
    m, n, producers = 5000, 1000, 10
    total = m * n * producers
    server, client = streams.pair(
        client_kwargs={"max_buffer_size": total}, server_kwargs={"max_buffer_size": total}
    )

    async def produce() -> None:
        data = b"x" * m
        for _ in range(n):
            await server.write(data)

    async def consume() -> int:
        nread = 0
        while nread < total:
            nread += len(await client.read_bytes(m))
        return nread

    async def main() -> None:
        await asyncio.gather(*[produce() for _ in range(producers)], consume())

    run(io_loop, main)


# ---------------------------------------------------------------- TestIOStreamStartTLS


def _plain_pair(io_loop: IOLoop, streams: StreamKit) -> tuple[IOStream, IOStream]:
    server, client = streams.pair()
    return server, client


def test_start_tls_smtp(io_loop: IOLoop, streams: StreamKit, tls: TLSFiles) -> None:
    server, client = _plain_pair(io_loop, streams)

    async def server_send_line(s: BaseIOStream, c: BaseIOStream, line: bytes) -> None:
        s.write(line)
        assert await c.read_until(b"\r\n") == line

    async def main() -> None:
        await server_send_line(server, client, b"220 mail.example.com ready\r\n")
        await server_send_line(client, server, b"EHLO mail.example.com\r\n")
        await server_send_line(server, client, b"250-mail.example.com welcome\r\n")
        await server_send_line(server, client, b"250 STARTTLS\r\n")
        await server_send_line(client, server, b"STARTTLS\r\n")
        await server_send_line(server, client, b"220 Go ahead\r\n")
        client_future = client.start_tls(False, {"cert_reqs": ssl.CERT_NONE})
        server_future = server.start_tls(True, {"certfile": tls.cert_path, "keyfile": tls.key_path})
        tls_client = streams.track(await client_future)
        tls_server = streams.track(await server_future)
        assert isinstance(tls_client, SSLIOStream) and isinstance(tls_server, SSLIOStream)
        await server_send_line(tls_client, tls_server, b"EHLO mail.example.com\r\n")
        await server_send_line(tls_server, tls_client, b"250 mail.example.com welcome\r\n")

    run(io_loop, main)


def test_handshake_fail(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="iostream")
    server, client = _plain_pair(io_loop, streams)

    async def main() -> None:
        server_future = server.start_tls(True, tls.server_context())
        # The default context does not trust the test CA.
        client_future = client.start_tls(False, server_hostname="localhost")
        with pytest.raises(ssl.SSLError):
            await client_future
        with pytest.raises((ssl.SSLError, OSError)):
            await server_future

    run(io_loop, main)
    assert any(r.getMessage().startswith("SSL Error on") for r in caplog.records)


def test_check_hostname(io_loop: IOLoop, streams: StreamKit, tls: TLSFiles) -> None:
    server, client = _plain_pair(io_loop, streams)

    async def main() -> None:
        server_future = server.start_tls(True, tls.server_context(tls.localhost_only))
        client_future = client.start_tls(False, tls.client_context(), server_hostname="127.0.0.1")
        with pytest.raises(ssl.SSLError):
            await client_future
        with pytest.raises(Exception):  # noqa: B017  (Tornado's check: any error)
            await server_future

    run(io_loop, main)


def test_typed_memoryview(io_loop: IOLoop, streams: StreamKit) -> None:
    server, client = _plain_pair(io_loop, streams)
    buf = memoryview(bytes(80)).cast("L")

    async def main() -> bytes:
        await server.write(buf)
        data: bytes = await client.read_bytes(buf.nbytes)
        return data

    assert run(io_loop, main) == bytes(buf)


# ---------------------------------------------------------------- WaitForHandshakeTest


def _tls_server(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles, handle: Callable[..., Any]
) -> int:
    server = streams.track(TCPServer(handle, io_loop=io_loop, ssl_options=tls.server_context()))
    port: int = server.listen(0)
    return port


async def _connect_client(io_loop: IOLoop, streams: StreamKit, port: int) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    client = streams.track(SSLIOStream(socket.socket(), ssl_options=ctx, io_loop=io_loop))
    await client.connect(("127.0.0.1", port))
    assert isinstance(client.socket, ssl.SSLSocket) and client.socket.cipher() is not None


def test_wait_for_handshake_future(io_loop: IOLoop, streams: StreamKit, tls: TLSFiles) -> None:
    done: list[Any] = []

    def handle(stream: SSLIOStream, address: Any) -> None:
        assert isinstance(stream.socket, ssl.SSLSocket) and stream.socket.cipher() is None

        async def connection() -> None:
            await stream.wait_for_handshake()
            done.append(stream.socket.cipher())  # type: ignore[attr-defined]

        io_loop.spawn_callback(connection)

    port = _tls_server(io_loop, streams, tls, handle)

    async def main() -> None:
        await _connect_client(io_loop, streams, port)
        for _ in range(1000):  # bounded: the server side finishes within a few iterations
            if done:
                return
            await asyncio.sleep(0.005)

    run(io_loop, main)
    assert done and done[0] is not None


def test_wait_for_handshake_already_connected(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles
) -> None:
    done: list[Any] = []

    def handle(stream: SSLIOStream, address: Any) -> None:
        async def connection() -> None:
            await stream.wait_for_handshake()
            await stream.wait_for_handshake()  # again: resolved at once
            done.append(True)

        io_loop.spawn_callback(connection)

    port = _tls_server(io_loop, streams, tls, handle)

    async def main() -> None:
        await _connect_client(io_loop, streams, port)
        for _ in range(1000):
            if done:
                return
            await asyncio.sleep(0.005)

    run(io_loop, main)
    assert done == [True]


# ---------------------------------------------------------------- TestPipeIOStream


@pytest.mark.skipif(not _POSIX, reason="PipeIOStream is POSIX-only")
def test_pipe_iostream(io_loop: IOLoop, streams: StreamKit) -> None:
    from iostream.pipe import PipeIOStream

    r, w = os.pipe()
    rs = streams.track(PipeIOStream(r, io_loop=io_loop))
    ws = streams.track(PipeIOStream(w, io_loop=io_loop))

    async def main() -> list[bytes]:
        ws.write(b"hel")
        ws.write(b"lo world")
        got = [await rs.read_until(b" ")]
        got.append(await rs.read_bytes(3))
        ws.close()
        got.append(await rs.read_until_close())
        return got

    assert run(io_loop, main) == [b"hello ", b"wor", b"ld"]


@pytest.mark.skipif(not _POSIX, reason="PipeIOStream is POSIX-only")
def test_pipe_iostream_big_write(io_loop: IOLoop, streams: StreamKit) -> None:
    from iostream.pipe import PipeIOStream

    r, w = os.pipe()
    rs = streams.track(PipeIOStream(r, io_loop=io_loop))
    ws = streams.track(PipeIOStream(w, io_loop=io_loop))
    n = 1024 * 1024

    async def main() -> bytes:
        ws.write(b"a" * n)
        data: bytes = await rs.read_bytes(n)
        return data

    assert run(io_loop, main) == b"a" * n
