"""asyncio streams (``StreamReader.readexactly`` / ``readuntil``), and the same on uvloop.

This is the baseline of every ratio. The reader keeps asyncio's default
buffer limit (64 KiB) unless a workload needs a longer line (the big
``read_until``), as a user would. The echo server is the documented idiom:
``readuntil``, ``write``, ``await drain()``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import ClassVar

from iostream.bench._jobs import ReadPhase
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

    def serve(self, stats: ServerStats, ready: Callable[[int], None]) -> None:
        """Echo lines with ``start_server``."""
        _aio.run(self._new_loop, _serve(stats, ready), None)


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
            return "uvloop is not installed (pip install 'iostream[bench]')"
        return None

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
