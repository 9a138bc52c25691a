"""asyncio streams (``StreamReader.readexactly`` / ``readuntil``), the same on uvloop,
and the same on iostream's pollers (``iostream.asyncio.new_event_loop``).

This is the baseline of every ratio. The reader keeps asyncio's default
buffer limit (64 KiB) unless a workload needs a longer line (the big
``read_until``), as a user would. The echo server is the documented idiom:
``readuntil``, ``write``, ``await drain()``. The client of the ``own-*``
workloads is ``open_connection`` with ``write(chunk)`` and ``await drain()``
after each 64 KiB chunk (the documented flow control: drain returns at once
while the transport's buffer is under its high-water mark).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import ClassVar

from iostream.bench._jobs import ReadPhase, WritePhase
from iostream.bench._peers import _aio
from iostream.bench._peers.base import BACKLOG, BenchError, Peer, ServerStats


class AsyncioStreamsPeer(Peer):
    """asyncio streams on the default (selector) event loop."""

    name: ClassVar[str] = "asyncio-streams"

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.new_event_loop()

    def receive(
        self,
        sock: socket.socket,
        tls: ssl.SSLContext | None,
        phases: list[ReadPhase],
        timeout: float,
    ) -> None:
        """Read every phase with ``readexactly`` / ``readuntil``."""
        _aio.run(self._new_loop, self._receive(sock, tls, phases), timeout)

    async def _receive(
        self, sock: socket.socket, tls: ssl.SSLContext | None, phases: list[ReadPhase]
    ) -> None:
        loop = asyncio.get_running_loop()
        limit = _aio.stream_limit([p.size for p in phases if p.until])
        reader = asyncio.StreamReader(limit=limit)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock, ssl=tls)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        try:
            for phase in phases:
                await _run_phase(reader, writer, phase)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            raise BenchError(f"asyncio stream failed: {exc!r}") from exc
        finally:
            writer.close()

    def send(self, port: int, phases: list[WritePhase], timeout: float) -> None:
        """Connect with ``open_connection``; ``write`` + ``await drain()`` per chunk."""
        _aio.run(self._new_loop, _send(port, phases), timeout)

    def serve(self, stats: ServerStats, ready: Callable[[int], None]) -> None:
        """Echo lines with ``start_server``."""
        _aio.run(self._new_loop, _serve(stats, ready), None)


async def _send(port: int, phases: list[WritePhase]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for phase in phases:
            if phase.go:
                phase.check_go(await reader.readexactly(len(phase.go)))
            phase.begin()
            write, drain = writer.write, writer.drain
            for chunk in phase.chunks:
                write(chunk)
                await drain()
            phase.end()
        extra = await reader.read()
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise BenchError(f"asyncio stream failed: {exc!r}") from exc
    finally:
        writer.close()
    if extra:
        raise BenchError(f"{len(extra)} bytes after the last phase")


async def _run_phase(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, phase: ReadPhase
) -> None:
    phase.begin()
    if phase.go:
        writer.write(phase.go)
    feed = phase.feed
    if phase.until:
        readuntil = reader.readuntil
        for _ in range(phase.count):
            feed(await readuntil(b"\n"))
    else:
        readexactly = reader.readexactly
        size = phase.size
        for _ in range(phase.count):
            feed(await readexactly(size))
    phase.end()


async def _serve(stats: ServerStats, ready: Callable[[int], None]) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats.accepted += 1
        try:
            while True:
                line = await reader.readuntil(b"\n")
                writer.write(line)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=BACKLOG)
    ready(server.sockets[0].getsockname()[1])
    await server.serve_forever()


class UvloopStreamsPeer(AsyncioStreamsPeer):
    """The same asyncio streams code on uvloop's event loop."""

    name: ClassVar[str] = "uvloop-streams"

    @classmethod
    def unavailable(cls) -> str | None:
        """uvloop is optional (the ``bench`` extra) and not on Windows."""
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "uvloop is not installed (python -m pip install 'uvloop>=0.17')"
        return None

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop


class AsyncioOnIostreamPeer(AsyncioStreamsPeer):
    """The same asyncio streams code on ``iostream.asyncio.new_event_loop(poller)``.

    asyncio's own ``SelectorEventLoop`` on a selector over one of iostream's
    pollers: it measures the cost of that selector against asyncio's default
    loop (issue 11 item 7), so it runs the echo and lines workloads only.
    """

    name: ClassVar[str] = "asyncio-on-iostream"
    workloads: ClassVar[frozenset[str] | None] = frozenset({"echo", "lines", "own-lines"})

    @property
    def label(self) -> str:
        """``asyncio-on-iostream-<poller>``."""
        from iostream import pollers

        return f"{self.name}-{pollers.choose(self.poller).name}"

    @classmethod
    def unavailable(cls) -> str | None:
        """``iostream.asyncio`` is imported only when this peer runs."""
        try:
            from iostream.asyncio import new_event_loop  # noqa: F401
        except ImportError as exc:
            return f"iostream.asyncio cannot be imported: {exc}"
        return None

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        from iostream.asyncio import new_event_loop

        return new_event_loop(self.poller)
