"""Issue 10, stream side: Futures on every method, cancellation, and the rest
of Tornado's stream API (read_until_regex, read_bytes(partial=True),
read_into, start_tls, wait_for_handshake, PipeIOStream, io_loop=None), on
every poller (the ``io_loop`` fixture). Written with ``await`` only, run by
``IOLoop.run_sync`` (no asyncio loop in the process).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import socket
import ssl
import sys
from typing import Any

import pytest
from _stream_helpers import (  # noqa: F401  (fixtures)
    KiB,
    StreamKit,
    TLSFiles,
    closed_port,
    streams_fixture,
    tls_fixture,
)

from iostream import IOLoop, IOStream, SSLIOStream, StreamClosedError, TCPServer
from iostream.stream import StreamBufferFullError, StreamState, UnsatisfiableReadError

_POSIX = sys.platform != "win32"

#: Seconds any one run_sync in this file may take (a passing test: milliseconds).
LIMIT = 20


def run(io_loop: IOLoop, coro_fn: Any) -> Any:
    return io_loop.run_sync(coro_fn, timeout=LIMIT)


# ---------------------------------------------------------------- Futures resolve


def test_every_read_returns_a_future(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()

    async def main() -> list[Any]:
        await b.write(b"line\nfour" + b"rest-of-it" + b"\r\nABCD")
        got: list[Any] = [await a.read_until(b"\n")]
        got.append(await a.read_bytes(4))
        got.append(await a.read_until_regex(rb"-of-\w+\r\n"))
        buf = bytearray(4)
        got.append(await a.read_into(buf))
        got.append(bytes(buf))
        await b.write(b"tail")
        b.close()
        got.append(await a.read_until_close())
        return got

    assert run(io_loop, main) == [b"line\n", b"four", b"rest-of-it\r\n", 4, b"ABCD", b"tail"]


def test_write_future_resolves_after_send(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()

    async def main() -> bytes:
        fut = a.write(b"x" * 300 * KiB)
        reader = asyncio.ensure_future(b.read_bytes(300 * KiB))
        await fut
        assert fut.result() is None
        data: bytes = await reader
        return data

    assert run(io_loop, main) == b"x" * 300 * KiB


def test_callback_style_returns_none(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()
    assert b.write(b"ab\n", lambda: None) is None
    got: list[bytes] = []
    assert a.read_until(b"\n", got.append) is None

    async def wait() -> None:
        while not got:
            await asyncio.sleep(0.001)

    run(io_loop, wait)
    assert got == [b"ab\n"]


def test_connect_future_gives_the_stream(io_loop: IOLoop, streams: StreamKit) -> None:
    listener = streams.listener()
    stream = streams.stream(socket.socket())

    async def main() -> Any:
        return await stream.connect(listener.getsockname())

    assert run(io_loop, main) is stream
    assert stream.state is StreamState.OPEN


def test_failed_connect_future_fails_and_logs_nothing(
    io_loop: IOLoop, streams: StreamKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="iostream")
    stream = streams.stream(socket.socket())

    async def main() -> None:
        await stream.connect(("127.0.0.1", closed_port()))

    with pytest.raises(StreamClosedError) as info:
        run(io_loop, main)
    assert isinstance(info.value.real_error, ConnectionRefusedError)
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []


# ---------------------------------------------------------------- Futures fail on close


@pytest.mark.parametrize("how", ["peer_closes", "local_close"])
def test_pending_read_future_fails_with_stream_closed(
    io_loop: IOLoop, streams: StreamKit, how: str
) -> None:
    a, b = streams.pair()

    async def main() -> None:
        fut = a.read_until(b"\n")
        await b.write(b"no newline")
        if how == "peer_closes":
            b.close()
        else:
            io_loop.call_later(0.01, a.close)
        await fut

    with pytest.raises(StreamClosedError) as info:
        run(io_loop, main)
    assert info.value.real_error is None


def test_unawaited_futures_log_nothing_on_close(
    io_loop: IOLoop, streams: StreamKit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    a, _b = streams.pair()
    a.read_bytes(10)  # nobody awaits these
    listener = streams.listener()
    c = streams.stream(socket.socket())
    c.connect(listener.getsockname())
    c.write(b"queued while connecting")

    async def main() -> None:
        a.close()
        c.close()
        await asyncio.sleep(0.01)

    run(io_loop, main)
    gc.collect()
    run(io_loop, main)
    messages = [r.getMessage() for r in caplog.records]
    assert not any("never retrieved" in m for m in messages), messages


def test_unsatisfiable_and_full_reads_fail_with_their_error(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    a, b = streams.pair(client_kwargs={"max_buffer_size": 1000})

    async def unsatisfiable() -> None:
        fut = a.read_until(b"\n", max_bytes=4)
        await b.write(b"12345\n")
        await fut

    with pytest.raises(UnsatisfiableReadError):
        run(io_loop, unsatisfiable)

    c, d = streams.pair(client_kwargs={"max_buffer_size": 1000})

    async def full() -> None:
        fut = c.read_until(b"\n")
        await d.write(b"z" * 2000)
        await fut

    with pytest.raises(StreamBufferFullError):
        run(io_loop, full)
    assert isinstance(c.error, StreamBufferFullError)


def test_write_future_fails_when_peer_resets(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()

    async def main() -> None:
        b.close()
        for _ in range(1000):  # bounded: the kernel reports the reset within a few sends
            await asyncio.sleep(0.001)
            await a.write(b"x" * 64 * KiB)

    with pytest.raises(StreamClosedError):
        run(io_loop, main)


# ---------------------------------------------------------------- cancellation


def test_cancelled_read_leaves_stream_usable(io_loop: IOLoop, streams: StreamKit) -> None:
    """wait_for timing out cancels the read: the stream stays open, and
    the bytes that arrived later go to the next read (nothing lost)."""
    a, b = streams.pair()

    async def main() -> bytes:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(a.read_until(b"\n"), 0.05)
        assert not a.closed()
        await b.write(b"partial")
        await asyncio.sleep(0.02)
        await b.write(b" line\n")
        data: bytes = await a.read_until(b"\n")
        return data

    assert run(io_loop, main) == b"partial line\n"


def test_cancelled_task_with_buffered_partial_data(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()

    async def reader() -> bytes:
        data: bytes = await a.read_bytes(10)
        return data

    async def main() -> bytes:
        task = asyncio.ensure_future(reader())
        await b.write(b"01234")
        await asyncio.sleep(0.02)  # the 5 bytes are buffered, the read waits
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await b.write(b"56789")
        data: bytes = await a.read_bytes(10)
        return data

    assert run(io_loop, main) == b"0123456789"


def test_cancelled_read_into_returns_bytes_to_buffer(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()

    async def main() -> bytes:
        buf = bytearray(10)
        fut = a.read_into(buf)
        await b.write(b"abc")
        await asyncio.sleep(0.02)
        assert fut is not None
        fut.cancel()
        await b.write(b"defghij")
        data: bytes = await a.read_bytes(10)
        return data

    assert run(io_loop, main) == b"abcdefghij"


# ---------------------------------------------------------------- coroutine echo


def test_coroutine_echo_server_and_client(io_loop: IOLoop, streams: StreamKit) -> None:
    async def handle(stream: IOStream, address: Any) -> None:
        try:
            while True:
                line = await stream.read_until(b"\n")
                await stream.write(line.upper())
        except StreamClosedError:
            pass

    server = streams.track(TCPServer(handle, io_loop=io_loop))
    port = server.listen(0)

    async def client() -> list[bytes]:
        stream = streams.track(IOStream(socket.socket(), io_loop=io_loop))
        await stream.connect(("127.0.0.1", port))
        replies = []
        for word in (b"alpha", b"beta", b"gamma"):
            await stream.write(word + b"\n")
            replies.append(await stream.read_until(b"\n"))
        stream.close()
        return replies

    assert run(io_loop, client) == [b"ALPHA\n", b"BETA\n", b"GAMMA\n"]


def test_many_awaited_reads_on_buffered_data(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()
    n = 20_000

    async def main() -> int:
        await b.write(b"x\n" * n)
        count = 0
        for _ in range(n):
            assert await a.read_until(b"\n") == b"x\n"
            count += 1
        return count

    assert run(io_loop, main) == n


def test_awaited_read_until_skips_the_argument_slow_path(
    io_loop: IOLoop, streams: StreamKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a callback, ``read_until`` takes the same checked-once fast
    path as with one (it used to validate every call the slow way, a
    quarter of an awaited line's cost); bad arguments still fail."""
    import iostream.stream as stream_module

    slow_checks: list[object] = []
    real_check = stream_module._checked_delimiter

    def counting_check(delimiter: object, callback: object) -> bytes:
        slow_checks.append(delimiter)
        return real_check(delimiter, callback)

    monkeypatch.setattr(stream_module, "_checked_delimiter", counting_check)
    a, b = streams.pair()

    async def main() -> int:
        await b.write(b"x\n" * 100)
        for _ in range(100):
            assert await a.read_until(b"\n") == b"x\n"
        return len(slow_checks)

    assert run(io_loop, main) == 0
    with pytest.raises(TypeError, match="delimiter must be bytes"):
        a.read_until("\n")  # type: ignore[call-overload]
    assert slow_checks == ["\n"]


def test_awaited_request_response_does_not_rewatch_per_message(
    io_loop: IOLoop, streams: StreamKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``await read_until`` resumes its task one loop turn after the read
    completes, so for that turn no read is pending. READ stays watched over
    that gap (dropped lazily): a request/response exchange changes what the
    poller watches a bounded number of times, not twice per message (which
    was one ``epoll_ctl`` each, the await echo's largest cost)."""
    a, b = streams.pair()
    changes: list[int] = []
    real_update = io_loop.update_handler

    def counting_update(fd: Any, events: int) -> None:
        changes.append(events)
        real_update(fd, events)

    monkeypatch.setattr(io_loop, "update_handler", counting_update)
    rounds = 200

    async def server() -> None:
        for _ in range(rounds):
            await b.write(await b.read_until(b"\n"))

    async def main() -> int:
        task = asyncio.ensure_future(server())
        for i in range(rounds):
            message = b"%d\n" % i
            await a.write(message)
            assert await a.read_until(b"\n") == message
        await task
        return len(changes)

    assert run(io_loop, main) <= 10, changes[:20]


def test_unwanted_data_drops_the_lazily_kept_read_watch(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    """The other half of the lazy unwatch: data arriving while no read is
    pending (and no close callback is set) wakes the stream once, receives
    nothing, and stops READ being watched, so a level-triggered poller does
    not report the same bytes on every turn."""
    a, peer = streams.stream_and_peer()
    receives: list[int] = []
    wakeups: list[int] = []
    real_recv, real_handle = a.read_from_fd, a._handle_events

    def counting_recv(view: Any) -> int | None:
        receives.append(len(view))
        return real_recv(view)

    def counting_handle(fd: Any, events: int) -> None:
        wakeups.append(events)
        real_handle(fd, events)

    a.read_from_fd = counting_recv  # type: ignore[method-assign]
    a._handle_events = counting_handle  # type: ignore[method-assign]

    async def main() -> bytes:
        peer.sendall(b"first\n")
        line = await a.read_until(b"\n")
        receives.clear()
        wakeups.clear()
        peer.sendall(b"unwanted, for now\n")
        for _ in range(50):  # 50 loop turns, each polling the fd
            await asyncio.sleep(0)
        return line

    assert run(io_loop, main) == b"first\n"
    assert receives == []  # back-pressure: nothing received without a reader
    assert len(wakeups) <= 1, wakeups
    # The bytes are still the kernel's, in order, for the next read.
    assert run(io_loop, lambda: a.read_until(b"\n")) == b"unwanted, for now\n"


# ---------------------------------------------------------------- Tornado's remaining API


def test_read_until_regex(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()

    async def main() -> list[bytes]:
        await b.write(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody")
        head = await a.read_until_regex(re.compile(rb"\r\n\r\n"))
        body = await a.read_bytes(4)
        return [head, body]

    assert run(io_loop, main) == [b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n", b"body"]


def test_read_until_regex_max_bytes(io_loop: IOLoop, streams: StreamKit) -> None:
    a, b = streams.pair()

    async def main() -> None:
        fut = a.read_until_regex(rb"\d+;", max_bytes=5)
        await b.write(b"abcdefg123;")
        await fut

    with pytest.raises(UnsatisfiableReadError):
        run(io_loop, main)


def test_read_until_regex_bad_pattern(io_loop: IOLoop, streams: StreamKit) -> None:
    a, _ = streams.pair()
    with pytest.raises(TypeError, match="regex"):
        a.read_until_regex("text", lambda d: None)  # type: ignore[call-overload]


def test_read_bytes_partial(io_loop: IOLoop, streams: StreamKit) -> None:
    a, peer = streams.stream_and_peer()

    async def main() -> list[bytes]:
        peer.sendall(b"abc")
        first = await a.read_bytes(100, partial=True)
        peer.sendall(b"0123456789")
        await asyncio.sleep(0.02)
        second = await a.read_bytes(4, partial=True)
        third = await a.read_bytes(100, partial=True)
        return [first, second, third]

    assert run(io_loop, main) == [b"abc", b"0123", b"456789"]


def test_read_into_full_and_partial(io_loop: IOLoop, streams: StreamKit) -> None:
    a, peer = streams.stream_and_peer()

    async def main() -> list[Any]:
        big = bytearray(2 * 1024 * KiB)
        fut = a.read_into(big)
        payload = os.urandom(len(big))
        peer.sendall(payload)
        n = await fut
        small = bytearray(100)
        peer.sendall(b"xyz")
        m = await a.read_into(small, partial=True)
        return [n, bytes(big) == payload, m, bytes(small[:m])]

    assert run(io_loop, main) == [2 * 1024 * KiB, True, 3, b"xyz"]


def test_read_into_receives_without_intermediate_copy(io_loop: IOLoop, streams: StreamKit) -> None:
    """The caller's buffer is handed to recv_into itself."""
    a, peer = streams.stream_and_peer()
    seen: list[Any] = []
    real = a.read_from_fd

    def spy(view: memoryview) -> int | None:
        seen.append(view.obj)
        return real(view)

    a.read_from_fd = spy  # type: ignore[method-assign]
    buf = bytearray(64 * KiB)

    async def main() -> int:
        fut = a.read_into(buf)
        peer.sendall(b"q" * len(buf))
        n: int = await fut
        return n

    assert run(io_loop, main) == len(buf)
    assert any(obj is buf for obj in seen), "recv_into never got the caller's buffer"


def test_read_into_bad_buffer(io_loop: IOLoop, streams: StreamKit) -> None:
    a, _ = streams.pair()
    with pytest.raises(TypeError, match="writable"):
        a.read_into(b"read-only")
    with pytest.raises(TypeError, match="buf"):
        a.read_into(42)


def test_io_loop_none_means_current(io_loop: IOLoop) -> None:
    a, b = socket.socketpair()
    try:

        async def main() -> IOLoop:
            stream = IOStream(a)
            loop = stream.io_loop
            stream.close()
            return loop

        assert run(io_loop, main) is io_loop
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------- TLS: start_tls, handshake


def test_start_tls_both_sides(io_loop: IOLoop, streams: StreamKit, tls: TLSFiles) -> None:
    a, b = streams.pair()

    async def main() -> list[Any]:
        await a.write(b"STARTTLS\n")
        assert await b.read_until(b"\n") == b"STARTTLS\n"
        server_fut = b.start_tls(True, tls.server_context())
        client_fut = a.start_tls(False, tls.client_context(), server_hostname="localhost")
        server, client = await asyncio.gather(server_fut, client_fut)
        streams.track(server)
        streams.track(client)
        await client.write(b"secret\n")
        line = await server.read_until(b"\n")
        return [isinstance(server, SSLIOStream), a.closed(), b.closed(), line]

    assert run(io_loop, main) == [True, True, True, b"secret\n"]


def test_start_tls_refuses_a_busy_stream(io_loop: IOLoop, streams: StreamKit) -> None:
    a, _ = streams.pair()
    a.read_bytes(1)
    with pytest.raises(ValueError, match="nothing pending"):
        a.start_tls(False)


def test_start_tls_handshake_failure_is_the_ssl_error(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles
) -> None:
    a, b = streams.pair()

    async def main() -> None:
        server_fut = b.start_tls(True, tls.server_context())
        # The client trusts another CA: its handshake fails.
        client_fut = a.start_tls(
            False, tls.client_context(trust=tls.other_ca), server_hostname="localhost"
        )
        assert client_fut is not None and server_fut is not None
        try:
            await client_fut
        finally:
            server_fut.cancel()

    with pytest.raises(ssl.SSLError):
        run(io_loop, main)


def test_wait_for_handshake_and_connect_future(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles
) -> None:
    client, server = streams.ssl_pair(tls)

    async def main() -> list[Any]:
        got = await server.wait_for_handshake()
        again = await server.wait_for_handshake()  # already done: at once
        cert = server.socket.getpeercert() if isinstance(server.socket, ssl.SSLSocket) else 0
        await client.write(b"hi")
        return [got is server, again is server, cert, await server.read_bytes(2)]

    assert run(io_loop, main) == [True, True, None, b"hi"]


def test_tls_connect_future_fails_with_ssl_error(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles
) -> None:
    listener = streams.listener()
    client = streams.track(
        SSLIOStream(
            socket.socket(),
            ssl_options=tls.client_context(trust=tls.other_ca),
            io_loop=io_loop,
        )
    )
    fut = client.connect(listener.getsockname(), server_hostname="localhost")
    conn = listener.accept()[0]
    server = streams.track(
        SSLIOStream(conn, ssl_options=tls.server_context(), server_side=True, io_loop=io_loop)
    )
    assert server is not None

    async def main() -> None:
        assert fut is not None
        await fut

    with pytest.raises(ssl.SSLError):
        run(io_loop, main)


# ---------------------------------------------------------------- PipeIOStream


@pytest.mark.skipif(not _POSIX, reason="PipeIOStream is POSIX-only")
def test_pipe_stream_round_trip(io_loop: IOLoop, streams: StreamKit) -> None:
    from iostream.pipe import PipeIOStream

    r, w = os.pipe()
    reader = streams.track(PipeIOStream(r, io_loop=io_loop))
    writer = streams.track(PipeIOStream(w, io_loop=io_loop))

    async def main() -> list[bytes]:
        await writer.write(b"hello\nworld")
        line = await reader.read_until(b"\n")
        writer.close()
        rest = await reader.read_until_close()
        return [line, rest]

    assert run(io_loop, main) == [b"hello\n", b"world"]
    assert reader.closed() and reader.error is None


@pytest.mark.skipif(not _POSIX, reason="PipeIOStream is POSIX-only")
def test_pipe_stream_big_transfer_and_back_pressure(io_loop: IOLoop, streams: StreamKit) -> None:
    from iostream.pipe import PipeIOStream

    r, w = os.pipe()
    reader = streams.track(PipeIOStream(r, io_loop=io_loop, max_buffer_size=16 * KiB))
    writer = streams.track(PipeIOStream(w, io_loop=io_loop))
    payload = os.urandom(1024 * KiB)

    async def main() -> bytes:
        done = writer.write(payload)
        got = bytearray()
        while len(got) < len(payload):
            got += await reader.read_bytes(min(4 * KiB, len(payload) - len(got)))
        await done
        return bytes(got)

    assert run(io_loop, main) == payload


@pytest.mark.skipif(not _POSIX, reason="PipeIOStream is POSIX-only")
def test_pipe_stream_bad_fd(io_loop: IOLoop) -> None:
    from iostream.pipe import PipeIOStream

    with pytest.raises(ValueError, match="fd"):
        PipeIOStream(-1, io_loop=io_loop)
    with pytest.raises(TypeError, match="fd"):
        PipeIOStream("3", io_loop=io_loop)


@pytest.mark.skipif(_POSIX, reason="Windows only")
def test_pipe_stream_refused_on_windows(io_loop: IOLoop) -> None:
    from iostream.pipe import PipeIOStream

    with pytest.raises(ValueError, match="POSIX"):
        PipeIOStream(0, io_loop=io_loop)


# ---------------------------------------------------------------- inside asyncio programs


def test_streams_inside_asyncio_run() -> None:
    """docs/asyncio.md ("IOStream inside asyncio: `IOLoop.from_asyncio`"): inside
    asyncio.run, io_loop=None is an IOLoop on that asyncio loop and the Futures
    are asyncio's: IOStream next to asyncio's own streams, on one loop."""

    async def main() -> list[Any]:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        stream = IOStream(socket.socket())
        try:
            await stream.connect(("127.0.0.1", port))
            await stream.write(b"through asyncio\n")
            line = await stream.read_until(b"\n")
            rest = await stream.read_until_close()
            on_it = getattr(stream.io_loop, "asyncio_loop", None) is asyncio.get_running_loop()
            return [line, rest, on_it]
        finally:
            stream.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(main()) == [b"through asyncio\n", b"", True]
