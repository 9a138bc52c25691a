"""Defects an audit of the stream core found (round two), one test each.

Every test here failed on the code before its fix (the commit that added it
says which fix). Run on every poller (the ``io_loop`` fixture).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import ssl
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _stream_helpers import (  # noqa: F401  (fixtures)
    StreamKit,
    TLSFiles,
    streams_fixture,
    tls_fixture,
)

from iostream import IOLoop, StreamClosedError
from iostream.stream import UnsatisfiableReadError

#: Seconds any one run_sync here may take (a passing test: milliseconds).
LIMIT = 20

needs_pipes = pytest.mark.skipif(sys.platform == "win32", reason="PipeIOStream is POSIX only")


def run(io_loop: IOLoop, coro_fn: Callable[[], Any]) -> Any:
    return io_loop.run_sync(coro_fn, timeout=LIMIT)


@pytest.fixture
def loud_logs(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    """What iostream logged above DEBUG (a peer going away must log nothing there)."""
    caplog.set_level(logging.DEBUG, logger="iostream")

    def above_debug() -> list[str]:
        return [
            f"{r.levelname} {r.getMessage()}"
            for r in caplog.records
            if r.name.startswith("iostream") and r.levelno > logging.DEBUG
        ]

    yield above_debug


def count_handler_calls(stream: Any) -> list[int]:
    """Count the stream's I/O handler runs (wrap it before it is registered)."""
    calls = [0]
    handler = stream._handle_events

    def counting(fd: object, events: int) -> None:
        calls[0] += 1
        handler(fd, events)

    stream._handle_events = counting
    return calls


async def loop_turns(n: int) -> None:
    """Let the loop go round *n* times (each turn polls with a zero timeout)."""
    for _ in range(n):
        await asyncio.sleep(0)


# ------------------------------------------------- start_tls: handshake failed at once


def _peer_sends_plain_text(peer: socket.socket) -> None:
    peer.sendall(b"454 TLS not available\r\n" * 4)


def _peer_closes(peer: socket.socket) -> None:
    peer.close()


@pytest.mark.parametrize("server_side", [False, True])
@pytest.mark.parametrize("peer_action", [_peer_sends_plain_text, _peer_closes])
def test_start_tls_future_fails_when_the_handshake_fails_at_once(
    io_loop: IOLoop,
    streams: StreamKit,
    tls: TLSFiles,
    server_side: bool,
    peer_action: Callable[[socket.socket], None],
) -> None:
    # The new stream's first handshake step runs in its constructor; the
    # Future used to be added to its waiters after that step had already
    # closed it, and never completed.
    stream, peer = streams.stream_and_peer()
    peer_action(peer)

    async def main() -> BaseException | None:
        if server_side:
            future = stream.start_tls(True, tls.server_context())
        else:
            future = stream.start_tls(False, tls.client_context(), server_hostname="localhost")
        try:
            await asyncio.wait_for(future, LIMIT / 2)
        except asyncio.TimeoutError:
            raise AssertionError("start_tls's Future never completed") from None
        except Exception as exc:
            return exc
        return None

    error = run(io_loop, main)
    assert isinstance(error, ssl.SSLError), repr(error)


def test_start_tls_callback_form_when_the_handshake_fails_at_once(
    io_loop: IOLoop, streams: StreamKit, tls: TLSFiles
) -> None:
    # The callback form raised StreamClosedError from start_tls itself; now
    # the callback never runs and the close callback reports the failure.
    stream, peer = streams.stream_and_peer()
    _peer_sends_plain_text(peer)
    ran: list[object] = []
    closed = asyncio.Event()

    async def main() -> None:
        stream.set_close_callback(closed.set)  # moves to the TLS stream
        assert stream.start_tls(False, tls.client_context(), "localhost", ran.append) is None
        await asyncio.wait_for(closed.wait(), LIMIT / 2)

    run(io_loop, main)
    assert ran == []


# ------------------------------------------------- pipes: hang-ups


@needs_pipes
def test_idle_pipe_reader_is_parked_after_the_writer_hangs_up(io_loop: IOLoop) -> None:
    # An idle read end that watched ERROR alone heard the writer's hang-up on
    # every loop turn (100% CPU) instead of being parked once.
    from iostream import PipeIOStream

    r, w = os.pipe()
    reader = PipeIOStream(r, io_loop=io_loop)
    calls = count_handler_calls(reader)
    try:

        async def main() -> tuple[int, bytes]:
            os.write(w, b"a\nb\n")
            assert await reader.read_until(b"\n") == b"a\n"
            os.write(w, b"c\n")
            # The READ event finds no read pending: READ is dropped (lazily).
            before = calls[0]
            for _ in range(1000):
                if calls[0] > before:
                    break
                await asyncio.sleep(0.001)
            os.close(w)
            await loop_turns(20)  # the hang-up is heard (once)
            before = calls[0]
            await loop_turns(200)
            spins = calls[0] - before
            return spins, await reader.read_until_close()

        spins, rest = run(io_loop, main)
        assert spins <= 1, f"the hang-up was heard {spins} times in 200 loop turns"
        assert rest == b"b\nc\n"
    finally:
        reader.close()


@needs_pipes
def test_full_pipe_whose_reader_went_away_fails_the_write(
    io_loop: IOLoop, loud_logs: Callable[[], list[str]]
) -> None:
    # Linux reports a full pipe whose reader closed as EPOLLERR / POLLERR
    # alone: the write that fails with EPIPE was never tried, and the stream
    # spun for ever with its write pending.
    from iostream import PipeIOStream

    r, w = os.pipe()
    writer = PipeIOStream(w, io_loop=io_loop)

    async def main() -> BaseException:
        future = writer.write(b"x" * (4 << 20))  # far more than a pipe holds
        await loop_turns(3)
        assert not future.done()
        os.close(r)
        try:
            await asyncio.wait_for(future, LIMIT / 2)
        except asyncio.TimeoutError:
            raise AssertionError("the write never failed: the stream spins") from None
        except StreamClosedError as exc:
            return exc
        raise AssertionError("the write completed with no reader")

    error = run(io_loop, main)
    assert isinstance(error.real_error, BrokenPipeError), repr(error.real_error)
    assert writer.closed()
    assert loud_logs() == []


@needs_pipes
def test_pipe_writer_with_close_callback_closes_quietly_when_the_reader_goes(
    io_loop: IOLoop, poller_name: str, loud_logs: Callable[[], list[str]]
) -> None:
    # A close callback made the idle write end read ahead: os.readv on a
    # write-only fd, EBADF, logged as a WARNING.
    from iostream import PipeIOStream

    r, w = os.pipe()
    writer = PipeIOStream(w, io_loop=io_loop)
    closed = asyncio.Event()

    async def main() -> None:
        writer.set_close_callback(closed.set)
        await writer.write(b"hello")
        assert os.read(r, 5) == b"hello"
        os.close(r)
        await asyncio.wait_for(closed.wait(), LIMIT / 2)

    if poller_name == "select":
        # select has no set for errors alone (docs/guarantees.md, "Event
        # bits"): the write end learns of it at its next write.
        async def on_select() -> BaseException:
            writer.set_close_callback(closed.set)
            os.close(r)
            await loop_turns(5)
            with pytest.raises(StreamClosedError) as info:
                await writer.write(b"x")
            return info.value

        error = run(io_loop, on_select)
        assert isinstance(error.real_error, BrokenPipeError)
    else:
        run(io_loop, main)
        assert isinstance(writer.error, BrokenPipeError), repr(writer.error)
    assert loud_logs() == []


# ------------------------------------------------- read_until_regex with max_bytes


@pytest.mark.parametrize(
    ("pattern", "data", "max_bytes"),
    [
        (rb"\r\n(?![ \t])", b"Host: x\r\n continued\r\n\r\n", 9),  # a folded header
        (rb"foo\b", b"foobar\n", 3),
        (rb"value=\d+$", b"value=12345;\n", 9),
    ],
)
def test_regex_max_bytes_does_not_end_the_input_at_max_bytes(
    io_loop: IOLoop, streams: StreamKit, pattern: bytes, data: bytes, max_bytes: int
) -> None:
    # The search used max_bytes as the end of the input, so $, \b and
    # lookaheads matched at byte max_bytes where the data goes on.
    assert re.search(pattern, data) is None or re.search(pattern, data).end() > max_bytes  # type: ignore[union-attr]
    a, b = streams.pair()

    async def main() -> None:
        await b.write(data)
        with pytest.raises(StreamClosedError) as info:
            await a.read_until_regex(pattern, max_bytes=max_bytes)
        assert isinstance(info.value.real_error, UnsatisfiableReadError)

    run(io_loop, main)


def test_regex_max_bytes_accepts_a_match_ending_at_the_bound(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    a, b = streams.pair()

    async def main() -> list[bytes]:
        await b.write(b"abc\ndef")
        # The lookahead reads past max_bytes; the match itself ends within it.
        first = await a.read_until_regex(rb"abc(?=\n)", max_bytes=3)
        return [first, await a.read_bytes(4)]

    assert run(io_loop, main) == [b"abc", b"\ndef"]


# ------------------------------------------------- read_into cancelled


def test_cancelled_read_into_lets_go_of_the_callers_buffer(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    # The withdrawal was lazy (at the next read): meanwhile recv kept writing
    # into the caller's buffer, and the caller's own bytes then came back as
    # stream data.
    a, b = streams.pair()

    async def main() -> tuple[bytes, bytes]:
        buf = bytearray(10)
        await b.write(b"HELLO")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(a.read_into(buf), 0.05)
        buf[:] = b"Z" * 10  # the caller reuses its buffer at once
        await b.write(b"WORLD")
        await loop_turns(10)  # the stream may receive it now (no read pending)
        after = bytes(buf)
        return after, await a.read_bytes(10)

    after, data = run(io_loop, main)
    assert after == b"Z" * 10, "the stream wrote into a buffer it had let go of"
    assert data == b"HELLOWORLD"


# ------------------------------------------------- write completion order


def test_write_future_does_not_overtake_an_earlier_write_callback(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    # An awaited write that completed at once resumed its coroutine before
    # the earlier write's callback (already due) had run.
    a, _b = streams.pair()
    order: list[str] = []

    async def main() -> None:
        a.write(b"first", callback=lambda: order.append("first callback"))
        await a.write(b"second")
        order.append("second awaited")
        await loop_turns(3)

    run(io_loop, main)
    assert order == ["first callback", "second awaited"]


# ------------------------------------------------- TLS: a reset while reading


def test_tls_reset_while_reading_sets_error(
    io_loop: IOLoop, poller_name: str, streams: StreamKit, tls: TLSFiles
) -> None:
    # OpenSSL 3 reports a reset met by SSL_read as an unexpected EOF, which
    # the ssl module returns as b"": the stream closed with error None, as
    # for the peer's clean close. A plain stream says ConnectionResetError.
    import struct

    client, server = streams.ssl_pair(tls)

    async def main() -> BaseException | None:
        await client.write(b"hi")
        assert await server.read_bytes(2) == b"hi"  # the handshake is done
        reading = client.read_until(b"\n")
        await loop_turns(3)
        raw = server.socket
        socket.socket.setsockopt(raw, socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        socket.socket.close(raw)  # a reset, no close_notify
        with pytest.raises(StreamClosedError) as info:
            await reading
        return info.value.real_error

    error = run(io_loop, main)
    if poller_name == "select":
        # select reports the reset as READ only; OpenSSL then says EOF.
        assert error is None or isinstance(error, ConnectionResetError)
    else:
        assert isinstance(error, ConnectionResetError), repr(error)
        assert isinstance(client.error, ConnectionResetError)


# ------------------------------------------------- a large read_bytes: memory on arrival


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RSS from /proc")
def test_large_read_bytes_costs_memory_as_data_arrives(io_loop: IOLoop, streams: StreamKit) -> None:
    # The target of a large read_bytes was mapped in whole (MAP_POPULATE)
    # before a byte arrived: a peer announcing 64 MiB and sending 1 byte cost
    # 64 MiB of resident memory at once, per connection.
    a, b = streams.pair()
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    async def main() -> int:
        await b.write(b"x")
        before = rss()
        reading = a.read_bytes(64 * 1024 * 1024)
        await loop_turns(10)  # the byte is received into the target
        grown = rss() - before
        a.close()
        with pytest.raises(StreamClosedError):
            await reading
        return grown

    grown = run(io_loop, main)
    assert grown < 20 * 1024 * 1024, f"{grown / 2**20:.1f} MiB resident for 1 byte received"


# ------------------------------------------------- memory per idle connection


def test_an_idle_streams_attributes_stay_in_a_shared_key_dict(
    io_loop: IOLoop, streams: StreamKit
) -> None:
    # One more instance attribute (_readable) took IOStream to 30, past
    # what CPython keeps in a key-sharing instance dict: each stream's dict
    # became a full table, and an idle connection went from 3.5 to 4.8 KiB
    # (python -m iostream bench --workloads memory). New per-stream state
    # belongs in an existing attribute or a class default.
    a, _ = streams.pair()
    size = sys.getsizeof(vars(a))
    assert size < 1000, f"{len(vars(a))} attributes, a {size}-byte dict per stream"
