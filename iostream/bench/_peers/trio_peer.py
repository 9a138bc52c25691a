"""trio streams: ``SocketStream.send_all`` / ``receive_some``, with a reader a trio user writes.

trio has no ``read_until`` or ``read_exactly``; a trio user keeps a
``bytearray`` and calls ``receive_some()`` (its default size, 64 KiB) until
the buffer holds what they need. :class:`_BufferedReader` is that helper:
``read_exactly(n)`` (a full-size chunk with an empty buffer is returned
as is, without a copy) and ``read_until(delimiter)`` (which resumes the
search where the previous one stopped, so a long line is not rescanned).

Connections are trio's own: ``open_tcp_stream`` for the client of the
``own-*`` workloads, ``serve_tcp`` for the echo server, and a
``SocketStream`` around the harness's accepted socket for the receiver
(``SSLStream`` on top for tls-bulk). trio's ``SocketStream`` turns on
``TCP_NODELAY`` and sets ``TCP_NOTSENT_LOWAT`` to 16 KiB on every TCP
stream (see bench/README.md, "The write path"). The client writes each
64 KiB chunk with ``await send_all(chunk)``.
"""

from __future__ import annotations

import math
import socket
import ssl
from collections.abc import Callable
from typing import Any, ClassVar

from iostream.bench._jobs import ReadPhase, WritePhase
from iostream.bench._peers.base import BACKLOG, BenchError, Peer, ServerStats


class _Closed(Exception):
    """The other side closed before the bytes asked for arrived."""


class _BufferedReader:
    """``read_exactly`` and ``read_until`` over a trio stream's ``receive_some``."""

    def __init__(self, stream: Any) -> None:
        self._receive_some = stream.receive_some
        self._buffer = bytearray()
        self._scanned = 0

    async def _fill(self) -> None:
        data = await self._receive_some()
        if not data:
            raise _Closed(f"closed with {len(self._buffer)} bytes buffered")
        self._buffer += data

    async def read_exactly(self, size: int) -> bytes:
        """Return the next *size* bytes."""
        buffer = self._buffer
        if not buffer:
            data: bytes = await self._receive_some()
            if len(data) == size:
                return data
            if not data:
                raise _Closed(f"closed while {size} bytes were due")
            buffer += data
        while len(buffer) < size:
            await self._fill()
        out = bytes(buffer[:size])
        del buffer[:size]
        self._scanned = 0
        return out

    async def read_until(self, delimiter: bytes, max_size: int) -> bytes:
        """Return the bytes up to and including the next *delimiter* (at most *max_size*)."""
        buffer = self._buffer
        while True:
            index = buffer.find(delimiter, self._scanned)
            if index >= 0:
                end = index + len(delimiter)
                out = bytes(buffer[:end])
                del buffer[:end]
                self._scanned = 0
                return out
            if len(buffer) > max_size:
                raise BenchError(f"no delimiter within {max_size} bytes")
            self._scanned = max(0, len(buffer) - len(delimiter) + 1)
            await self._fill()


class TrioPeer(Peer):
    """trio's ``SocketStream`` with the buffered reader above."""

    name: ClassVar[str] = "trio"

    @classmethod
    def unavailable(cls) -> str | None:
        """trio is optional (the ``bench`` extra)."""
        try:
            import trio  # noqa: F401
        except ImportError:
            return "trio is not installed (python -m pip install 'trio>=0.22')"
        return None

    def receive(
        self,
        sock: socket.socket,
        tls: ssl.SSLContext | None,
        phases: list[ReadPhase],
        timeout: float,
    ) -> None:
        """Read every phase with ``read_exactly`` / ``read_until``."""
        import trio

        async def main() -> None:
            stream: Any = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            if tls is not None:
                stream = trio.SSLStream(stream, tls, server_side=True)
            reader = _BufferedReader(stream)
            limit = max([2**16] + [2 * p.size for p in phases if p.until])
            try:
                for phase in phases:
                    phase.begin()
                    if phase.go:
                        await stream.send_all(phase.go)
                    feed = phase.feed
                    if phase.until:
                        read_until = reader.read_until
                        for _ in range(phase.count):
                            feed(await read_until(b"\n", limit))
                    else:
                        read_exactly, size = reader.read_exactly, phase.size
                        for _ in range(phase.count):
                            feed(await read_exactly(size))
                    phase.end()
            except (_Closed, trio.BrokenResourceError) as exc:
                raise BenchError(f"trio stream failed: {exc!r}") from exc
            finally:
                await stream.aclose()

        _run(main, timeout)

    def send(self, port: int, phases: list[WritePhase], timeout: float) -> None:
        """Connect with ``open_tcp_stream``; ``await send_all(chunk)`` per chunk."""
        import trio

        async def main() -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            reader = _BufferedReader(stream)
            try:
                for phase in phases:
                    if phase.go:
                        phase.check_go(await reader.read_exactly(len(phase.go)))
                    phase.begin()
                    send_all = stream.send_all
                    for chunk in phase.chunks:
                        await send_all(chunk)
                    phase.end()
                extra = await stream.receive_some()
            except (_Closed, trio.BrokenResourceError) as exc:
                raise BenchError(f"trio stream failed: {exc!r}") from exc
            finally:
                await stream.aclose()
            if extra:
                raise BenchError(f"{len(extra)} bytes after the last phase")

        _run(main, timeout)

    def serve(self, stats: ServerStats, ready: Callable[[int], None]) -> None:
        """Echo lines with ``serve_tcp``: ``read_until``, then ``await send_all``."""
        import trio

        async def handle(stream: Any) -> None:
            stats.accepted += 1
            reader = _BufferedReader(stream)
            try:
                while True:
                    await stream.send_all(await reader.read_until(b"\n", 2**16))
            except (_Closed, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                await stream.aclose()

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(
                    lambda task_status: trio.serve_tcp(
                        handle,
                        0,
                        host="127.0.0.1",
                        backlog=BACKLOG,
                        task_status=task_status,
                    )
                )
                ready(listeners[0].socket.getsockname()[1])

        _run(main, None)


def _run(main: Callable[[], Any], timeout: float | None) -> None:
    """``trio.run(main)`` under a deadline; a timeout becomes :class:`BenchError`."""
    import trio

    async def bounded() -> None:
        with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
            await main()
        if scope.cancelled_caught:
            raise BenchError(f"timed out after {timeout} s")

    trio.run(bounded)
