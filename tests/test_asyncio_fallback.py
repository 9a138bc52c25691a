"""Per-fd fallback in asyncio programs (issue 11 item 4, through PollerSelector).

The fds asyncio's own selectors refuse — a regular file or /dev/null under
epoll (EPERM), an fd >= FD_SETSIZE under select, a tty under macOS's kqueue
(EINVAL; here the kqueue stand-in refuses ttys the same way) — work on a
:func:`iostream.asyncio.new_event_loop` loop, next to ordinary sockets.
CPython's own event-loop suite (with its pty tests) also runs on the
tty-refusing kqueue stand-in.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import socket
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import POLLER_NAMES

from iostream import pollers
from iostream.asyncio import PollerSelector, new_event_loop
from iostream.pollers import Poller
from iostream.pollers.fallback import FallbackPoller
from iostream.pollers.select_ import FD_SETSIZE_POSIX

if sys.platform == "win32":
    pytest.skip(
        "the fds that fall back (files, devices, ptys, fds >= FD_SETSIZE) are POSIX ones; "
        "asyncio's selector loop takes only sockets on Windows",
        allow_module_level=True,
    )

#: Longest a test waits for an event that should come at once.
TIMEOUT = 10.0


def _tty_refusing_kqueue() -> Poller:
    """The kqueue stand-in that refuses ttys with EINVAL, as macOS's kqueue does."""
    from test_fallback import TtyRefusingKqueuePoller  # POSIX-only test module

    return TtyRefusingKqueuePoller()


def _fallbacks(loop: asyncio.AbstractEventLoop) -> dict[int, str]:
    selector = loop._selector  # type: ignore[attr-defined]
    assert isinstance(selector, PollerSelector)
    poller = selector.poller
    assert isinstance(poller, FallbackPoller)
    return poller.fallbacks


@pytest.fixture
def loop(poller_name: str) -> Iterator[asyncio.AbstractEventLoop]:
    loop = new_event_loop(poller_name)
    try:
        yield loop
    finally:
        loop.close()


async def _readable_once(loop: asyncio.AbstractEventLoop, fd: int) -> int:
    """Wait for *fd* to be readable once, through add_reader; return the fd."""
    ready: asyncio.Future[int] = loop.create_future()

    def on_readable() -> None:
        loop.remove_reader(fd)
        if not ready.done():
            ready.set_result(fd)

    loop.add_reader(fd, on_readable)
    return await asyncio.wait_for(ready, TIMEOUT)


def test_add_reader_on_a_regular_file(poller_name: str, loop: asyncio.AbstractEventLoop) -> None:
    with tempfile.TemporaryFile() as file:
        file.write(b"data")
        file.flush()
        fd = file.fileno()
        assert loop.run_until_complete(_readable_once(loop, fd)) == fd
        if poller_name == "epoll":
            # epoll refused it (EPERM): it was watched as always ready.
            loop.add_reader(fd, lambda: None)
            assert fd in _fallbacks(loop)
            loop.remove_reader(fd)
        assert _fallbacks(loop) == {}


@pytest.mark.skipif("epoll" not in pollers.available(), reason="epoll is Linux only")
def test_asyncio_own_epoll_selector_refuses_what_we_take() -> None:
    # The reason this exists: with asyncio's default selector on Linux,
    # add_reader on a regular file fails.
    with tempfile.TemporaryFile() as file, selectors.EpollSelector() as selector:
        with pytest.raises(PermissionError):
            selector.register(file, selectors.EVENT_READ)
        with PollerSelector("epoll") as ours:
            key = ours.register(file, selectors.EVENT_READ)
            assert ours.select(0) == [(key, selectors.EVENT_READ)]


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_add_reader_on_dev_null_next_to_a_socket(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> bytes:
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        with a, b, open("/dev/null", "rb") as null:
            assert await _readable_once(loop, null.fileno()) == null.fileno()
            # The socket works while /dev/null is registered (on epoll it is
            # on a secondary poller, and one wait hears both).
            loop.add_reader(null.fileno(), lambda: None)
            try:
                await loop.sock_sendall(a, b"ping")
                return await asyncio.wait_for(loop.sock_recv(b, 10), TIMEOUT)
            finally:
                loop.remove_reader(null.fileno())

    assert loop.run_until_complete(main()) == b"ping"


def _high_fd(fd: int) -> int:
    """A dup of *fd* numbered >= FD_SETSIZE (skips if the fd limit is too low)."""
    import fcntl  # POSIX only
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FD_SETSIZE_POSIX + 64
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"the fd limit ({hard}) is below FD_SETSIZE + 64")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    # The lowest free fd >= FD_SETSIZE: never one something else holds.
    high: int = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, FD_SETSIZE_POSIX)
    return high


@pytest.mark.skipif("select" not in POLLER_NAMES, reason="this run does not cover select")
@pytest.mark.skipif("poll" not in pollers.available(), reason="needs poll to fall back to")
def test_select_loop_takes_a_socket_above_fd_setsize() -> None:
    a, b = socket.socketpair()
    high = socket.socket(fileno=_high_fd(b.fileno()))
    b.close()
    loop = new_event_loop("select")

    async def main() -> bytes:
        a.setblocking(False)
        high.setblocking(False)
        await loop.sock_sendall(a, b"over the limit")
        data = await asyncio.wait_for(loop.sock_recv(high, 100), TIMEOUT)
        assert high.fileno() >= FD_SETSIZE_POSIX
        loop.add_reader(high.fileno(), lambda: None)
        assert "select" in _fallbacks(loop)[high.fileno()]
        loop.remove_reader(high.fileno())
        return data

    try:
        assert loop.run_until_complete(main()) == b"over the limit"
    finally:
        loop.close()
        a.close()
        high.close()


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs os.openpty")
def test_tty_refused_by_kqueue_stand_in_in_an_asyncio_program() -> None:
    # The macOS case of issue 11: kqueue refuses ttys with EINVAL, so tools
    # install a select() loop by hand. Here a pty is read through a
    # transport on a (stand-in) kqueue loop, next to a TCP connection.
    loop = asyncio.SelectorEventLoop(PollerSelector(_tty_refusing_kqueue()))
    master, slave = os.openpty()

    async def main() -> tuple[bytes, bytes]:
        got_tty: asyncio.Queue[bytes] = asyncio.Queue()

        class TtyReader(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                got_tty.put_nowait(data)

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tty_file = os.fdopen(master, "rb", buffering=0, closefd=False)
        transport, _ = await loop.connect_read_pipe(TtyReader, tty_file)
        try:
            assert master in _fallbacks(loop)
            assert "kqueue refused it" in _fallbacks(loop)[master]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            os.write(slave, b"typed\n")
            writer.write(b"socket line\n")
            line = await asyncio.wait_for(reader.readline(), TIMEOUT)
            typed = await asyncio.wait_for(got_tty.get(), TIMEOUT)
            writer.close()
            return line, typed
        finally:
            transport.close()
            server.close()
            await server.wait_closed()

    try:
        line, typed = loop.run_until_complete(main())
        assert line == b"socket line\n"
        assert typed.replace(b"\r", b"") == b"typed\n"
    finally:
        loop.close()
        os.close(master)
        os.close(slave)


# -- CPython's event-loop suite on the tty-refusing kqueue stand-in --------------------

test_events: Any = pytest.importorskip(
    "test.test_asyncio.test_events",
    reason="this Python has no test package (Lib/test/test_asyncio/test_events.py)",
)


def tearDownModule() -> None:
    asyncio.set_event_loop_policy(None)


class TestCPythonEventLoopOnTtyRefusingKqueue(test_events.SelectEventLoopTests):  # type: ignore[misc]
    """Among others, CPython's test_read_pty_output and test_write_pty: ptys that
    this kqueue refuses, as macOS's does, go through the fallback."""

    def create_event_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.SelectorEventLoop(PollerSelector(_tty_refusing_kqueue()))

    @pytest.mark.skip(
        reason="the kqueue stand-in reads (so, on Linux, clears) SO_ERROR to report a "
        "failed connect, and asyncio then reads 0: a limit of the stand-in, not of kqueue"
    )
    def test_create_connection_local_addr_skip_different_family(self) -> None:
        raise AssertionError("skipped")
