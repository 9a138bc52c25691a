"""Tornado 6 IOStream: ``await read_bytes`` / ``await read_until`` (Tornado 6 has no callbacks).

Tornado runs on asyncio's default event loop. The echo server is Tornado's
``TCPServer`` with the documented coroutine idiom: ``read_until``, then
``await write``. The client of the ``own-*`` workloads is ``TCPClient().connect``
with ``await stream.write(chunk)`` per 64 KiB chunk (Tornado's flow control:
the Future resolves once the chunk has been handed to the kernel).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any, ClassVar

from iostream.bench._jobs import ReadPhase, WritePhase
from iostream.bench._peers import _aio
from iostream.bench._peers.base import BACKLOG, BenchError, Peer, ServerStats


class TornadoPeer(Peer):
    """Tornado's IOStream and TCPServer."""

    name: ClassVar[str] = "tornado"

    @classmethod
    def unavailable(cls) -> str | None:
        """Tornado is optional (the ``bench`` extra)."""
        try:
            import tornado
        except ImportError:
            return "tornado is not installed (python -m pip install 'tornado>=6')"
        if tornado.version_info < (6,):
            return f"tornado {tornado.version} is older than 6"
        return None

    def receive(
        self,
        sock: socket.socket,
        tls: ssl.SSLContext | None,
        phases: list[ReadPhase],
        timeout: float,
    ) -> None:
        """Read every phase with ``read_bytes`` / ``read_until``."""
        _aio.run(asyncio.new_event_loop, _receive(sock, tls, phases), timeout)

    def send(self, port: int, phases: list[WritePhase], timeout: float) -> None:
        """Connect with ``TCPClient``; ``await write(chunk)`` per chunk."""
        _aio.run(asyncio.new_event_loop, _send(port, phases), timeout)

    def serve(self, stats: ServerStats, ready: Callable[[int], None]) -> None:
        """Echo lines with a Tornado ``TCPServer``."""
        _aio.run(asyncio.new_event_loop, _serve(stats, ready), None)


async def _send(port: int, phases: list[WritePhase]) -> None:
    from tornado.iostream import StreamClosedError
    from tornado.tcpclient import TCPClient

    stream = await TCPClient().connect("127.0.0.1", port)
    try:
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
        raise BenchError(f"tornado stream closed: {exc!r} {stream.error!r}") from exc
    finally:
        stream.close()
    if extra:
        raise BenchError(f"{len(extra)} bytes after the last phase")


async def _receive(
    sock: socket.socket, tls: ssl.SSLContext | None, phases: list[ReadPhase]
) -> None:
    from tornado.iostream import IOStream, SSLIOStream, StreamClosedError

    stream: Any
    if tls is None:
        stream = IOStream(sock)
    else:
        wrapped = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        stream = SSLIOStream(wrapped, ssl_options=tls)
    try:
        for phase in phases:
            phase.begin()
            if phase.go:
                stream.write(phase.go)
            feed = phase.feed
            if phase.until:
                read_until = stream.read_until
                for _ in range(phase.count):
                    feed(await read_until(b"\n"))
            else:
                read_bytes = stream.read_bytes
                size = phase.size
                for _ in range(phase.count):
                    feed(await read_bytes(size))
            phase.end()
    except StreamClosedError as exc:
        raise BenchError(f"tornado stream closed: {exc!r} {stream.error!r}") from exc
    finally:
        stream.close()


async def _serve(stats: ServerStats, ready: Callable[[int], None]) -> None:
    from tornado.iostream import IOStream, StreamClosedError
    from tornado.netutil import bind_sockets
    from tornado.tcpserver import TCPServer

    class EchoServer(TCPServer):
        async def handle_stream(self, stream: IOStream, address: Any) -> None:
            stats.accepted += 1
            try:
                while True:
                    line = await stream.read_until(b"\n")
                    await stream.write(line)
            except StreamClosedError:
                pass

    sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET, backlog=BACKLOG)
    EchoServer().add_sockets(sockets)
    ready(sockets[0].getsockname()[1])
    await asyncio.Event().wait()
