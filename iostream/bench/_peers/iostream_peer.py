"""iostream with its callback API, on a chosen poller.

Each read is issued from the previous read's callback (``read_until`` chained
from the callback), which is the path the stream's trampoline exists for. The
client of the ``own-*`` workloads connects with ``IOStream.connect`` and
writes each 64 KiB chunk with ``write(chunk, callback)``, the next chunk
written from that callback (it runs once the kernel has taken the chunk):
one write outstanding, the callback API's flow control. The echo server is
a :class:`~iostream.TCPServer` whose streams write each line back and read
the next one from the same callback.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from iostream.bench._jobs import ReadPhase, WritePhase
from iostream.bench._peers.base import BenchError, Peer, ServerStats

if TYPE_CHECKING:
    from iostream import IOLoop, IOStream


class IostreamPeer(Peer):
    """This library, on ``poller`` (``None``: the best available)."""

    name: ClassVar[str] = "iostream"

    @property
    def label(self) -> str:
        """``iostream-<poller>``."""
        return f"iostream-{self._poller_name()}"

    def _poller_name(self) -> str:
        from iostream import pollers

        return pollers.choose(self.poller).name

    @classmethod
    def unavailable(cls) -> str | None:
        """The stream layer may not be built yet in a development tree."""
        try:
            from iostream import IOLoop, IOStream, SSLIOStream, TCPServer  # noqa: F401
        except ImportError as exc:
            return f"iostream's stream layer cannot be imported: {exc}"
        return None

    def receive(
        self,
        sock: socket.socket,
        tls: ssl.SSLContext | None,
        phases: list[ReadPhase],
        timeout: float,
    ) -> None:
        """Run every phase as a chain of read callbacks."""
        from iostream import IOLoop, IOStream, SSLIOStream

        loop = IOLoop(self.poller)
        try:
            stream: IOStream
            if tls is None:
                stream = IOStream(sock, io_loop=loop)
            else:
                stream = SSLIOStream(sock, ssl_options=tls, server_side=True, io_loop=loop)
            _PhaseRunner(loop, stream, iter(phases)).run(timeout)
        finally:
            loop.close(all_fds=True)

    def send(self, port: int, phases: list[WritePhase], timeout: float) -> None:
        """Connect with ``IOStream.connect``; write each chunk from the previous one's callback."""
        from iostream import IOLoop, IOStream

        loop = IOLoop(self.poller)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            stream = IOStream(sock, io_loop=loop)
            runner = _WriteRunner(loop, stream, iter(phases))
            stream.connect(("127.0.0.1", port), runner.next_phase)
            runner.run(timeout)
        finally:
            loop.close(all_fds=True)

    def serve(self, stats: ServerStats, ready: Callable[[int], None]) -> None:
        """Echo lines with a :class:`~iostream.TCPServer`."""
        from iostream import IOLoop, StreamClosedError, TCPServer

        def handle_stream(stream: IOStream, address: object) -> None:
            stats.accepted += 1

            def on_line(line: bytes) -> None:
                try:
                    stream.write(line)
                    stream.read_until(b"\n", on_line)
                except StreamClosedError:
                    pass

            stream.read_until(b"\n", on_line)

        loop = IOLoop(self.poller)
        server = TCPServer(handle_stream, io_loop=loop)
        ready(server.listen(0, "127.0.0.1"))
        loop.start()


class _Runner:
    """Runs a loop until :meth:`_finish` or a fault; :meth:`run` raises on a fault."""

    def __init__(self, loop: IOLoop, stream: IOStream) -> None:
        self._loop = loop
        self._stream = stream
        self._done = False
        self._fault: str | None = None

    def _start(self) -> None:
        """Called once the loop runs."""

    def run(self, timeout: float) -> None:
        """Run the loop until every phase is done; raise :class:`BenchError` if not."""
        self._stream.set_close_callback(self._on_close)
        self._loop.call_later(timeout, self._stop, f"timed out after {timeout} s")
        self._loop.add_callback(self._start)
        self._loop.start()
        if not self._done:
            raise BenchError(self._fault or "stopped before the end")

    def _finish(self) -> None:
        self._done = True
        self._stop()

    def _stop(self, fault: str | None = None) -> None:
        if fault and not self._done and self._fault is None:
            self._fault = fault
        self._loop.stop()

    def _on_close(self) -> None:
        if not self._done:
            self._stop(f"stream closed before the end: {self._stream.error!r}")


class _PhaseRunner(_Runner):
    """Drives the read phases on one stream; :meth:`run` returns when all are done."""

    def __init__(self, loop: IOLoop, stream: IOStream, phases: Iterator[ReadPhase]) -> None:
        super().__init__(loop, stream)
        self._phases = phases

    def _start(self) -> None:
        self._next_phase()

    def _next_phase(self) -> None:
        phase = next(self._phases, None)
        if phase is None:
            self._finish()
            return
        stream = self._stream
        phase.begin()
        if phase.go:
            stream.write(phase.go)
        if phase.until:
            self._read_lines(phase)
        else:
            self._read_blocks(phase)

    def _read_lines(self, phase: ReadPhase) -> None:
        """``read_until(b"\\n", on_line)``, reissued from the callback as a user writes it."""
        stream = self._stream
        remaining = phase.count
        feed = phase.feed

        def on_line(data: bytes) -> None:
            nonlocal remaining
            feed(data)
            remaining -= 1
            if remaining:
                stream.read_until(b"\n", on_line)
            else:
                phase.end()
                self._next_phase()

        stream.read_until(b"\n", on_line)

    def _read_blocks(self, phase: ReadPhase) -> None:
        """``read_bytes(size, on_block)``, reissued from the callback."""
        stream = self._stream
        remaining = phase.count
        feed = phase.feed
        size = phase.size

        def on_block(data: bytes) -> None:
            nonlocal remaining
            feed(data)
            remaining -= 1
            if remaining:
                stream.read_bytes(size, on_block)
            else:
                phase.end()
                self._next_phase()

        stream.read_bytes(size, on_block)


class _WriteRunner(_Runner):
    """The own-workload client: per phase, read ``go``, then write the chunks one by one.

    :meth:`next_phase` is the connect callback; after the last phase it
    reads until the receiver closes (expecting nothing more).
    """

    def __init__(self, loop: IOLoop, stream: IOStream, phases: Iterator[WritePhase]) -> None:
        super().__init__(loop, stream)
        self._phases = phases

    def next_phase(self) -> None:
        """Start the next phase (or, after the last, wait for the receiver's close)."""
        stream = self._stream
        phase = next(self._phases, None)
        if phase is None:
            stream.set_close_callback(None)
            stream.read_until_close(self._on_end)
            return
        if phase.go:

            def on_go(data: bytes) -> None:
                phase.check_go(data)
                self._write(phase)

            stream.read_bytes(len(phase.go), on_go)
        else:
            self._write(phase)

    def _write(self, phase: WritePhase) -> None:
        """``write(chunk, callback)``, the next chunk written from the callback."""
        write = self._stream.write
        chunks = iter(phase.chunks)

        def on_written() -> None:
            chunk = next(chunks, None)
            if chunk is None:
                phase.end()
                self.next_phase()
            else:
                write(chunk, on_written)

        phase.begin()
        on_written()

    def _on_end(self, data: bytes) -> None:
        if data:
            self._stop(f"{len(data)} bytes after the last phase")
        else:
            self._finish()


class IostreamAwaitPeer(IostreamPeer):
    """This library with its awaitable API: ``await stream.read_until(...)`` in coroutines.

    The same streams on the same :class:`~iostream.IOLoop` (``poller``), driven
    by coroutines run with ``IOLoop.run_sync``: ``await read_bytes`` /
    ``await read_until`` to read, ``await write(chunk)`` per 64 KiB chunk in
    the own-workload client (the Future resolves once the kernel has taken
    it), and an echo server whose ``handle_stream`` is a coroutine
    (``await read_until``, then ``await write``) — Tornado 6's idiom.
    """

    name: ClassVar[str] = "iostream-await"

    @property
    def label(self) -> str:
        """``iostream-await-<poller>``."""
        return f"iostream-await-{self._poller_name()}"

    @classmethod
    def unavailable(cls) -> str | None:
        """The awaitable API needs ``IOLoop.run_sync`` and Futures from the stream methods."""
        reason = super().unavailable()
        if reason is None:
            from iostream import IOLoop

            if not hasattr(IOLoop, "run_sync"):
                return "this iostream has no IOLoop.run_sync (no awaitable API)"
        return reason

    def receive(
        self,
        sock: socket.socket,
        tls: ssl.SSLContext | None,
        phases: list[ReadPhase],
        timeout: float,
    ) -> None:
        """Read every phase with ``await read_bytes`` / ``await read_until``."""
        from iostream import IOLoop, IOStream, SSLIOStream, StreamClosedError

        loop = IOLoop(self.poller)

        async def main() -> None:
            stream: IOStream
            if tls is None:
                stream = IOStream(sock, io_loop=loop)
            else:
                stream = SSLIOStream(sock, ssl_options=tls, server_side=True, io_loop=loop)
            try:
                for phase in phases:
                    phase.begin()
                    if phase.go:
                        await stream.write(phase.go)
                    feed = phase.feed
                    if phase.until:
                        read_until = stream.read_until
                        for _ in range(phase.count):
                            feed(await read_until(b"\n"))
                    else:
                        read_bytes, size = stream.read_bytes, phase.size
                        for _ in range(phase.count):
                            feed(await read_bytes(size))
                    phase.end()
            except StreamClosedError as exc:
                raise BenchError(f"stream closed before the end: {stream.error!r}") from exc
            finally:
                stream.close()

        _run_sync(loop, main, timeout)

    def send(self, port: int, phases: list[WritePhase], timeout: float) -> None:
        """``await connect``; per phase ``await read_bytes(go)``, ``await write(chunk)``."""
        from iostream import IOLoop, IOStream, StreamClosedError

        loop = IOLoop(self.poller)

        async def main() -> None:
            stream = IOStream(socket.socket(socket.AF_INET, socket.SOCK_STREAM), io_loop=loop)
            try:
                await stream.connect(("127.0.0.1", port))
                for phase in phases:
                    if phase.go:
                        phase.check_go(await stream.read_bytes(len(phase.go)))
                    phase.begin()
                    write = stream.write
                    for chunk in phase.chunks:
                        await write(chunk)
                    phase.end()
                extra = await stream.read_until_close()
            except StreamClosedError as exc:
                raise BenchError(f"stream closed before the end: {stream.error!r}") from exc
            finally:
                stream.close()
            if extra:
                raise BenchError(f"{len(extra)} bytes after the last phase")

        _run_sync(loop, main, timeout)

    def serve(self, stats: ServerStats, ready: Callable[[int], None]) -> None:
        """Echo lines with a :class:`~iostream.TCPServer` whose handler is a coroutine."""
        from iostream import IOLoop, StreamClosedError, TCPServer

        async def handle_stream(stream: IOStream, address: object) -> None:
            stats.accepted += 1
            try:
                while True:
                    await stream.write(await stream.read_until(b"\n"))
            except StreamClosedError:
                pass

        loop = IOLoop(self.poller)
        server = TCPServer(handle_stream, io_loop=loop)
        ready(server.listen(0, "127.0.0.1"))
        loop.start()


def _run_sync(loop: IOLoop, main: Callable[[], Coroutine[Any, Any, None]], timeout: float) -> None:
    """``loop.run_sync(main, timeout)``; a timeout becomes :class:`BenchError`; closes *loop*."""
    try:
        loop.run_sync(main, timeout)
    except TimeoutError:
        raise BenchError(f"timed out after {timeout} s") from None
    finally:
        loop.close(all_fds=True)
