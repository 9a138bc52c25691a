"""asyncio Protocol: ``data_received`` with a buffer, the fast way to use asyncio.

Fixed-size reads are cut out of one pending-bytes buffer; lines come from
``bytes.split(b"\\n")`` and go one by one to the phase's per-line function,
without their delimiter (as Twisted's ``LineReceiver`` does), so
``keeps_delimiter`` is ``False``. The client of the ``own-*`` workloads is
``create_connection`` with ``transport.write(chunk)`` per 64 KiB chunk,
waiting only while the transport has called ``pause_writing`` (the
Protocol's flow control).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import ClassVar

from iostream.bench._jobs import ReadPhase, WritePhase
from iostream.bench._peers import _aio
from iostream.bench._peers.base import BACKLOG, BenchError, Peer, ServerStats


class PhaseProtocol(asyncio.Protocol):
    """Runs the receive phases from ``data_received``; *finished* completes at the end."""

    def __init__(self, phases: list[ReadPhase], finished: asyncio.Future[None]) -> None:
        self._phases: Iterator[ReadPhase] = iter(phases)
        self._finished = finished
        self._phase: ReadPhase | None = None
        self._remaining = 0
        self._pending = bytearray()
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the first phase."""
        self._transport = transport
        self._next_phase()

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail unless every phase finished."""
        self._fail(f"connection lost before the end: {exc!r}")

    def _fail(self, message: str) -> None:
        if not self._finished.done():
            self._finished.set_exception(BenchError(message))

    def _next_phase(self) -> None:
        if self._phase is not None:
            self._phase.end()
        phase = self._phase = next(self._phases, None)
        if phase is None:
            if not self._finished.done():
                self._finished.set_result(None)
            return
        self._remaining = phase.count
        phase.begin()
        if phase.go:
            assert isinstance(self._transport, asyncio.WriteTransport)
            self._transport.write(phase.go)

    def data_received(self, data: bytes) -> None:
        """Dispatch *data* to the current phase's framing."""
        phase = self._phase
        if phase is None:
            self._fail(f"{len(data)} bytes after the last phase")
        elif phase.until:
            self._lines(data)
        else:
            self._blocks(data, phase.size)

    def _deliver(self, item: bytes) -> None:
        assert self._phase is not None
        self._phase.feed(item)
        self._remaining -= 1
        if not self._remaining:
            self._next_phase()

    def _blocks(self, data: bytes, size: int) -> None:
        pending = self._pending
        if not pending and len(data) == size:
            self._deliver(data)
            return
        pending += data
        offset = 0
        with memoryview(pending) as view:
            while True:
                phase = self._phase
                if phase is None or phase.until or len(pending) - offset < phase.size:
                    break
                self._deliver(view[offset : offset + phase.size].tobytes())
                offset += phase.size
        del pending[:offset]
        self._redispatch(until=False)

    def _lines(self, data: bytes) -> None:
        pending = self._pending
        if pending:
            pending += data
            if data.find(b"\n") < 0:
                return  # a long line: keep buffering, join once it ends
            data = bytes(pending)
            pending.clear()
        parts = data.split(b"\n")
        rest = parts.pop()
        index, total = 0, len(parts)
        while index < total:
            phase = self._phase
            if phase is None or not phase.until:
                self._pending += b"\n".join(parts[index:]) + b"\n"
                break
            take = min(self._remaining, total - index)
            feed = phase.feed
            for line in parts if take == total else parts[index : index + take]:
                feed(line)
            index += take
            self._remaining -= take
            if not self._remaining:
                self._next_phase()
        self._pending += rest
        self._redispatch(until=True)

    def _same_mode(self, until: bool) -> bool:
        return self._phase is not None and self._phase.until == until

    def _redispatch(self, until: bool) -> None:
        """Hand bytes left by a phase of one kind to the next phase, of the other kind."""
        if self._pending and not self._same_mode(until):
            data = bytes(self._pending)
            self._pending.clear()
            self.data_received(data)


class SendProtocol(asyncio.Protocol):
    """The own-workload client: buffers what arrives, honours ``pause_writing``."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed = False
        self.transport: asyncio.WriteTransport | None = None
        self._resumed: asyncio.Future[None] | None = None
        self._arrived: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        """Buffer *data* and wake :meth:`wait_data`."""
        self.received += data
        self._wake_reader()

    def eof_received(self) -> bool:
        """Note the end and close."""
        self.closed = True
        self._wake_reader()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Note the end; wake every waiter."""
        self.closed = True
        self._wake_reader()
        self.resume_writing()

    def _wake_reader(self) -> None:
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)

    def pause_writing(self) -> None:
        """The transport's buffer passed its high-water mark: writes wait."""
        self._resumed = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        """The buffer drained below its low-water mark."""
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)
        self._resumed = None

    @property
    def paused(self) -> bool:
        """Whether the transport asked for writes to wait."""
        return self._resumed is not None

    async def writable(self) -> None:
        """Return once writing is not paused."""
        if self._resumed is not None:
            await self._resumed

    async def wait_data(self, size: int) -> bytes:
        """Return the first *size* bytes received (all of them at the close if *size* < 0)."""
        while (size < 0 or len(self.received) < size) and not self.closed:
            self._arrived = asyncio.get_running_loop().create_future()
            await self._arrived
        if size < 0:
            size = len(self.received)
        elif len(self.received) < size:
            raise BenchError(f"connection closed while {size} bytes were due")
        data = bytes(self.received[:size])
        del self.received[:size]
        return data


class EchoProtocol(asyncio.Protocol):
    """Echoes each line, one ``write`` per line."""

    def __init__(self, stats: ServerStats) -> None:
        self._stats = stats
        self._tail = b""
        self._transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the connection."""
        assert isinstance(transport, asyncio.WriteTransport)
        self._transport = transport
        self._stats.accepted += 1

    def data_received(self, data: bytes) -> None:
        """Split into lines and echo each."""
        if self._tail:
            data = self._tail + data
        parts = data.split(b"\n")
        self._tail = parts.pop()
        for line in parts:
            self.line_received(line)

    def line_received(self, line: bytes) -> None:
        """Echo one line (given without its delimiter)."""
        assert self._transport is not None
        self._transport.writelines((line, b"\n"))


class AsyncioProtocolPeer(Peer):
    """asyncio Protocol on the default (selector) event loop."""

    name: ClassVar[str] = "asyncio-protocol"
    keeps_delimiter: ClassVar[bool] = False
    read_protocol: ClassVar[type[PhaseProtocol]] = PhaseProtocol
    echo_protocol: ClassVar[type[EchoProtocol]] = EchoProtocol

    def receive(
        self,
        sock: socket.socket,
        tls: ssl.SSLContext | None,
        phases: list[ReadPhase],
        timeout: float,
    ) -> None:
        """Run the phases in a :class:`PhaseProtocol`."""
        _aio.run(asyncio.new_event_loop, self._receive(sock, tls, phases), timeout)

    async def _receive(
        self, sock: socket.socket, tls: ssl.SSLContext | None, phases: list[ReadPhase]
    ) -> None:
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.connect_accepted_socket(
            lambda: self.read_protocol(phases, finished), sock, ssl=tls
        )
        try:
            await finished
        finally:
            transport.close()

    def send(self, port: int, phases: list[WritePhase], timeout: float) -> None:
        """Connect with ``create_connection``; ``transport.write`` per chunk, paused as told."""
        _aio.run(asyncio.new_event_loop, self._send(port, phases), timeout)

    async def _send(self, port: int, phases: list[WritePhase]) -> None:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_connection(SendProtocol, "127.0.0.1", port)
        try:
            for phase in phases:
                if phase.go:
                    phase.check_go(await protocol.wait_data(len(phase.go)))
                phase.begin()
                write, writable = transport.write, protocol.writable
                for chunk in phase.chunks:
                    write(chunk)
                    if protocol.paused:
                        await writable()
                phase.end()
            extra = await protocol.wait_data(-1)
        finally:
            transport.close()
        if extra:
            raise BenchError(f"{len(extra)} bytes after the last phase")

    def serve(self, stats: ServerStats, ready: Callable[[int], None]) -> None:
        """Echo lines with ``create_server``."""
        _aio.run(asyncio.new_event_loop, self._serve(stats, ready), None)

    async def _serve(self, stats: ServerStats, ready: Callable[[int], None]) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: self.echo_protocol(stats), "127.0.0.1", 0, backlog=BACKLOG
        )
        ready(server.sockets[0].getsockname()[1])
        await server.serve_forever()
