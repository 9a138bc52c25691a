"""TCPServer: accept connections and hand each one over as a stream."""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Callable
from typing import Any

from iostream._platform import _WINDOWS, is_would_block
from iostream.ioloop import IOLoop, app_log
from iostream.pollers import READ
from iostream.stream import IOStream, SSLIOStream, check_stream_options, make_ssl_context

#: Connections accepted per readiness event at most, so that a flood of
#: connects cannot starve the streams already open.
ACCEPTS_PER_EVENT = 128

#: Seconds to stop accepting after the process ran out of fds (EMFILE):
#: the listening socket stays readable, and a level-triggered poller would
#: otherwise wake us in a busy loop that fails every accept.
FD_EXHAUSTED_PAUSE = 0.1

#: accept() errors that only concern the one connection (it was reset
#: before we took it), not the listening socket.
_CONNECTION_GONE = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.ECONNRESET})

#: accept() errors that mean "out of fds": pause, then try again.
_OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

StreamHandler = Callable[[IOStream, Any], object]


class TCPServer:
    """A non-blocking TCP server that makes an :class:`IOStream` per connection.

    ``handle_stream(stream, address)`` is the argument, or override the
    method. With *ssl_options* (an ``SSLContext`` or a dict with at least
    ``certfile``), connections become :class:`SSLIOStream`; ``handle_stream``
    may run before the handshake ends, and reads and writes wait for it.
    *stream_kwargs* go to every stream (``max_buffer_size`` ...). An
    exception in ``handle_stream`` is logged and the server keeps accepting.
    """

    def __init__(
        self,
        handle_stream: StreamHandler | None = None,
        io_loop: IOLoop | None = None,
        ssl_options: ssl.SSLContext | dict[str, Any] | None = None,
        **stream_kwargs: Any,
    ) -> None:
        if handle_stream is not None and not callable(handle_stream):
            raise TypeError(
                f"handle_stream must be callable or None, not {type(handle_stream).__name__}"
            )
        if io_loop is not None and not isinstance(io_loop, IOLoop):
            raise TypeError(f"io_loop must be an IOLoop or None, not {type(io_loop).__name__}")
        self._handler = handle_stream
        #: The loop the server and its streams run on.
        self.io_loop = io_loop if io_loop is not None else IOLoop.instance()
        #: The TLS context, or None for plain TCP.
        self.ssl_context = (
            make_ssl_context(ssl_options, server_side=True) if ssl_options is not None else None
        )
        check_stream_options(**stream_kwargs)
        self._stream_kwargs = stream_kwargs
        self._sockets: list[socket.socket] = []

    def listen(self, port: int, address: str = "127.0.0.1", backlog: int = 1024) -> int:
        """Listen on *address* and *port* (0: any free port); return the port.

        A host name or ``""`` (every interface) may resolve to several
        addresses: each gets a listening socket, all on the same port.
        """
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
        if not isinstance(address, str):
            raise TypeError(f"address must be a str, not {type(address).__name__}")
        infos = socket.getaddrinfo(
            address or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
        seen: set[tuple[Any, ...]] = set()
        bound_port = port
        bound: list[socket.socket] = []
        try:
            for family, type_, proto, _, sockaddr in infos:
                key = (family, sockaddr[0])
                if key in seen:
                    continue
                seen.add(key)
                address_port = (sockaddr[0], bound_port, *sockaddr[2:])
                sock = self._bind(family, type_, proto, address_port, backlog)
                bound.append(sock)
                bound_port = sock.getsockname()[1]
        except BaseException:
            # All or nothing: a failed bind leaves no half-open listener.
            for sock in bound:
                sock.close()
            raise
        for sock in bound:
            self.add_socket(sock)
        return bound_port

    @staticmethod
    def _bind(family: int, type_: int, proto: int, sockaddr: Any, backlog: int) -> socket.socket:
        sock = socket.socket(family, type_, proto)
        try:
            if not _WINDOWS:
                # POSIX: let a restarted server bind while old connections sit
                # in TIME_WAIT. (On Windows SO_REUSEADDR means something else:
                # it lets another process steal the port, so it stays off.)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setblocking(False)
            sock.bind(sockaddr)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return sock

    def add_socket(self, sock: socket.socket) -> None:
        """Accept connections on an already listening socket."""
        if not isinstance(sock, socket.socket):
            raise TypeError(f"sock must be a listening socket.socket, not {type(sock).__name__}")
        sock.setblocking(False)
        self.io_loop.add_handler(sock, self._on_readable, READ)
        self._sockets.append(sock)

    def stop(self) -> None:
        """Close the listening sockets. Idempotent; open streams stay open."""
        sockets, self._sockets = self._sockets, []
        for sock in sockets:
            self.io_loop.remove_handler(sock)
            sock.close()

    def handle_stream(self, stream: IOStream, address: Any) -> None:
        """Called with each new stream; override it or pass ``handle_stream``."""
        if self._handler is None:
            raise NotImplementedError("pass handle_stream= or override TCPServer.handle_stream")
        self._handler(stream, address)

    def _on_readable(self, sock: socket.socket, events: int) -> None:
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                connection, address = sock.accept()
            except InterruptedError:
                continue
            except OSError as exc:
                if is_would_block(exc):
                    return
                if exc.errno in _CONNECTION_GONE:
                    continue
                if exc.errno in _OUT_OF_FDS:
                    self._pause_accepting(sock, exc)
                    return
                raise
            self._start_stream(connection, address)

    def _pause_accepting(self, sock: socket.socket, exc: OSError) -> None:
        app_log.warning("accept() failed (%s); pausing for %.1fs", exc, FD_EXHAUSTED_PAUSE)
        self.io_loop.update_handler(sock, 0)

        def resume() -> None:
            if sock in self._sockets:
                self.io_loop.update_handler(sock, READ)

        self.io_loop.call_later(FD_EXHAUSTED_PAUSE, resume)

    def _start_stream(self, connection: socket.socket, address: Any) -> None:
        stream: IOStream | None = None
        try:
            if self.ssl_context is not None:
                stream = SSLIOStream(
                    connection,
                    ssl_options=self.ssl_context,
                    server_side=True,
                    io_loop=self.io_loop,
                    **self._stream_kwargs,
                )
            else:
                stream = IOStream(connection, io_loop=self.io_loop, **self._stream_kwargs)
            self.handle_stream(stream, address)
        except Exception as exc:
            app_log.exception("Error in handle_stream for connection from %r", address)
            # Nobody will serve this connection: close it rather than leave
            # the client hanging (and the stream registered in the loop).
            if stream is not None:
                stream.close(exc)
            else:
                connection.close()
