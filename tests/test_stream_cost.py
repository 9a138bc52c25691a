"""What one echoed message costs a stream, in Python function calls, counted.

An echo server stream (the callback API, and a coroutine awaiting
``read_until`` then ``write``) faces a raw socket driven by a handler on the
same :class:`~iostream.IOLoop`, over a socket pair, one 64-byte line at a
time. The run is one process with no timers, so its sequence of events is
the same at any machine load: the bounds are on counts (cProfile's call
count of the library's own Python functions, per message: the difference
between 150 and 50 messages), never on time. The loop's own per-iteration
calls (the poller layer, ``IOLoop.time`` for the timer that bounds the
run) are left out: they are per wake-up, not per message, and
``tests/test_asyncio_cost.py`` bounds the poller layer. They hold the hot-path
inlinings listed in :mod:`iostream.stream`'s docstring (and the loop's, in
:mod:`iostream.ioloop`): each one undone adds a call per message and fails
a test here. ``python bench/callgrind.py echo iostream iostream-await``
gives the same path in instructions.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import socket
from collections.abc import Callable
from typing import Any

import iostream
from iostream import IOLoop, IOStream, StreamClosedError
from iostream.pollers import READ

LINE = b"x" * 63 + b"\n"
LIBRARY = os.path.dirname(iostream.__file__)
POLLERS = os.path.join(LIBRARY, "pollers")

#: The stream's and the loop's Python calls per message (the library's own
#: calls: the same on CPython 3.10-3.13). Callback server: the I/O handler,
#: the read, its recv, the trampoline, the read's completion, write, its
#: send (two calls), the next read_until, one events check, and
#: ``get_debug`` (asyncio.Future asks its loop, for write's Future). Before
#: the inlinings: 16.
CALLBACK_CALLS = 11
#: The await server: those, plus the Task's wake-up (call_soon, its
#: Handle's ``__init__`` and ``_run``), two more events checks (write and
#: read_until each look, outside the trampoline) and a second ``get_debug``
#: (read_until's Future). Before the inlinings: 26.
AWAIT_CALLS = 17


def _library_calls(serve: Callable[[IOStream], Any], messages: int) -> int:
    """The library's Python calls while *messages* lines are echoed by *serve*'s stream."""
    loop = IOLoop("poll")
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        server = IOStream(b, io_loop=loop)
        task = serve(server)
        sent = 0

        def on_echo(fd: object, events: int) -> None:
            nonlocal sent
            data = a.recv(4096)
            assert data == LINE, data
            if sent == messages:
                loop.stop()
                return
            sent += 1
            a.send(LINE)

        def first() -> None:
            nonlocal sent
            loop.add_handler(a, on_echo, READ)
            sent += 1
            a.send(LINE)

        loop.call_later(30, loop.stop)
        loop.add_callback(first)
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            loop.start()
        finally:
            profiler.disable()
        assert sent == messages, f"{sent} of {messages} lines echoed in 30 s"
        server.close()
        if task is not None:
            loop.run_sync(lambda: task, timeout=10)
        stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        return sum(
            calls
            for (filename, _, name), (_, calls, *_) in stats.items()
            if filename.startswith(LIBRARY) and not filename.startswith(POLLERS) and name != "time"
        )
    finally:
        loop.close(all_fds=True)
        a.close()


def _callback_server(stream: IOStream) -> None:
    def on_line(line: bytes) -> None:
        stream.write(line)
        stream.read_until(b"\n", on_line)

    stream.read_until(b"\n", on_line)


def _await_server(stream: IOStream) -> asyncio.Task[None]:
    async def handle() -> None:
        try:
            while True:
                await stream.write(await stream.read_until(b"\n"))
        except StreamClosedError:
            pass

    return stream.io_loop.create_task(handle())


def _per_message(serve: Callable[[IOStream], Any]) -> float:
    _library_calls(serve, 5)  # once-per-thread set-up (the recv scratch buffer) done
    return (_library_calls(serve, 150) - _library_calls(serve, 50)) / 100


def test_callback_echo_calls_per_message() -> None:
    """A message echoed from the read's callback: at most CALLBACK_CALLS library calls."""
    per_message = _per_message(_callback_server)
    assert 0 < per_message <= CALLBACK_CALLS, per_message


def test_await_echo_calls_per_message() -> None:
    """``await write(await read_until(...))``: at most AWAIT_CALLS library calls."""
    per_message = _per_message(_await_server)
    assert 0 < per_message <= AWAIT_CALLS, per_message
