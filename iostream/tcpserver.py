"""TCPServer: accept connections and hand each one over as a stream.

Three ways to start a server, as in Tornado:

1. ``listen``, one process::

       server = TCPServer(handle_stream)
       port = server.listen(8888)
       IOLoop.current().start()

2. ``add_sockets``, several processes sharing sockets made before the fork::

       sockets = bind_sockets(8888)
       fork_processes(0)                 # one worker per CPU
       server = TCPServer(handle_stream)
       server.add_sockets(sockets)
       IOLoop.current().start()

3. ``bind``/``start``, the same in two calls::

       server = TCPServer(handle_stream)
       server.bind(8888)
       server.start(0)                   # forks; the workers go on from here
       IOLoop.current().start()

Accepting (bounded batches, errors of one connection skipped, pausing when
out of fds or buffers, nothing more after ``stop()``) is
:func:`iostream.netutil.add_accept_handler`'s; forking and restarting
workers is :func:`iostream.process.fork_processes`'s.

A connection whose peer is already gone when it is accepted (reset while it
waited in the listen queue) costs nothing and logs nothing above DEBUG: a
plain stream is handed to ``handle_stream`` and closes at once with the
error; a TLS connection that cannot even be wrapped (the ssl module asks for
the peer's address and fails) is closed without calling ``handle_stream``,
as in Tornado.
"""

from __future__ import annotations

import inspect
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any

from iostream._platform import TLS_WRAP_PEER_GONE_ERRNOS
from iostream.ioloop import IOLoop, app_log
from iostream.netutil import (
    ACCEPT_PAUSE,
    ACCEPTS_PER_EVENT,
    DEFAULT_BACKLOG,
    _check_loop,
    add_accept_handler,
    bind_sockets,
)
from iostream.process import fork_processes
from iostream.stream import IOStream, SSLIOStream, check_stream_options, make_ssl_context

__all__ = ["ACCEPTS_PER_EVENT", "FD_EXHAUSTED_PAUSE", "StreamHandler", "TCPServer"]

#: Seconds accepting pauses after ``accept`` ran out of fds or buffers
#: (the same value as :data:`iostream.netutil.ACCEPT_PAUSE`; kept here
#: under its old name).
FD_EXHAUSTED_PAUSE = ACCEPT_PAUSE

#: ``handle_stream(stream, address)``: may return an awaitable, which the
#: loop runs (its exception is logged).
StreamHandler = Callable[[IOStream, Any], object]


class TCPServer:
    """A non-blocking TCP server that makes an :class:`IOStream` per connection.

    ``handle_stream(stream, address)`` is the argument, or override the
    method; it may be a coroutine function (the loop runs what it returns
    and logs its exception; accepting does not wait for it). *io_loop*
    ``None`` means ``IOLoop.current()`` at construction. With *ssl_options*
    (an ``SSLContext`` or a dict with at least ``certfile``), connections
    become :class:`SSLIOStream`; ``handle_stream`` may run before the
    handshake ends, and reads and writes wait for it. *stream_kwargs* go to
    every stream (``max_buffer_size`` ...). An exception in
    ``handle_stream`` is logged and the server keeps accepting.
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
        self._handler = handle_stream
        #: The loop the server and its streams run on.
        self.io_loop = _check_loop(io_loop)
        #: The TLS context, or None for plain TCP.
        self.ssl_context = (
            make_ssl_context(ssl_options, server_side=True) if ssl_options is not None else None
        )
        check_stream_options(**stream_kwargs)
        self._stream_kwargs = stream_kwargs
        # Accepting sockets, each with the function that stops accepting on it.
        self._sockets: list[tuple[socket.socket, Callable[[], None]]] = []
        # Bound by bind() and waiting for start().
        self._pending_sockets: list[socket.socket] = []
        self._started = False

    # -- setting up ---------------------------------------------------------

    def listen(
        self,
        port: int,
        address: str | None = "127.0.0.1",
        family: int = socket.AF_UNSPEC,
        backlog: int = DEFAULT_BACKLOG,
        flags: int | None = None,
        reuse_port: bool = False,
    ) -> int:
        """Accept connections on *port* (0: a free one) at *address*; return the port.

        Takes effect at once (no :meth:`start` needed). The arguments are
        :func:`~iostream.netutil.bind_sockets`'s, but *address* defaults to
        ``"127.0.0.1"`` (loopback only); pass ``""`` or ``None`` for every
        interface (Tornado's default). A name that resolves to several
        addresses gets a socket on each, all on the returned port. May be
        called again for more ports.
        """
        sockets = bind_sockets(
            port, address, family=family, backlog=backlog, flags=flags, reuse_port=reuse_port
        )
        try:
            self.add_sockets(sockets)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return _port_of(sockets)

    def bind(
        self,
        port: int,
        address: str | None = None,
        family: int = socket.AF_UNSPEC,
        backlog: int = DEFAULT_BACKLOG,
        flags: int | None = None,
        reuse_port: bool = False,
    ) -> int:
        """Bind listening sockets now; accept on them once :meth:`start` runs. Return the port.

        The arguments are :func:`~iostream.netutil.bind_sockets`'s (*address*
        ``None``: every interface). May be called several times before
        :meth:`start`; after it, the sockets accept at once.
        """
        sockets = bind_sockets(
            port, address, family=family, backlog=backlog, flags=flags, reuse_port=reuse_port
        )
        if self._started:
            try:
                self.add_sockets(sockets)
            except BaseException:
                for sock in sockets:
                    sock.close()
                raise
        else:
            self._pending_sockets.extend(sockets)
        return _port_of(sockets)

    def start(self, num_processes: int | None = 1, max_restarts: int | None = None) -> None:
        """Start accepting on the sockets of :meth:`bind`, in this process or in workers.

        *num_processes* 1 (the default): here. Otherwise the process forks
        that many workers (``None`` or ``0``: one per CPU) with
        :func:`~iostream.process.fork_processes`, which restarts a worker
        that dies with an error (up to *max_restarts* times); ``start``
        returns in each worker, which then serves on the shared sockets, and
        never returns in the supervising parent. Make no other IOLoop and
        start no thread before it. ``RuntimeError`` if called twice.
        """
        if num_processes is not None and (
            not isinstance(num_processes, int) or isinstance(num_processes, bool)
        ):
            raise TypeError(
                f"num_processes must be an int or None, not {type(num_processes).__name__}"
            )
        if self._started:
            raise RuntimeError("TCPServer.start() was already called")
        self._started = True
        if num_processes != 1:
            fork_processes(num_processes, max_restarts)
        sockets, self._pending_sockets = self._pending_sockets, []
        self.add_sockets(sockets)

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        """Accept connections on these listening sockets (from :func:`bind_sockets`, say).

        The server owns them from now on: :meth:`stop` closes them.
        """
        if isinstance(sockets, socket.socket):
            raise TypeError("sockets must be an iterable of sockets; use add_socket for one")
        socks = list(sockets)
        for sock in socks:
            if not isinstance(sock, socket.socket):
                raise TypeError(
                    f"sockets must hold listening socket.socket objects, not {type(sock).__name__}"
                )
            if sock.fileno() < 0:
                raise ValueError("sockets: a socket is closed (fileno() is -1)")
        for sock in socks:
            remove = add_accept_handler(sock, self._handle_connection, self.io_loop)
            self._sockets.append((sock, remove))

    def add_socket(self, sock: socket.socket) -> None:
        """Accept connections on one listening socket (see :meth:`add_sockets`)."""
        if not isinstance(sock, socket.socket):
            raise TypeError(f"sock must be a listening socket.socket, not {type(sock).__name__}")
        self.add_sockets([sock])

    def stop(self) -> None:
        """Stop accepting and close the listening sockets. Idempotent; open streams stay open.

        Safe from inside ``handle_stream``: connections still queued are not
        accepted (their clients see the listening socket close), and
        nothing is logged.
        """
        sockets, self._sockets = self._sockets, []
        pending, self._pending_sockets = self._pending_sockets, []
        for sock, remove in sockets:
            remove()
            sock.close()
        for sock in pending:
            sock.close()

    # -- serving ------------------------------------------------------------

    def handle_stream(self, stream: IOStream, address: Any) -> object:
        """Called with each new stream; override it or pass ``handle_stream``.

        May return an awaitable (a coroutine function's result): the loop
        runs it and logs its exception.
        """
        if self._handler is None:
            raise NotImplementedError("pass handle_stream= or override TCPServer.handle_stream")
        return self._handler(stream, address)

    def _handle_connection(self, connection: socket.socket, address: Any) -> None:
        """add_accept_handler's callback: one accepted socket."""
        if self.ssl_context is not None and not _has_peer(connection):
            # Reset while it waited in the listen queue: the ssl module could
            # not even wrap it (it asks getpeername and fails, leaving the
            # fd to the garbage collector). Nobody to talk TLS to.
            app_log.debug("TLS connection from %r reset before it was accepted", address)
            connection.close()
            return
        try:
            stream = self._make_stream(connection)
        except Exception as exc:
            connection.close()
            if _peer_gone(exc):
                # Reset between the check above and the wrap. Drop the
                # traceback: its frames hold the half-made ssl socket, whose
                # fd is then freed now rather than by a later collection.
                exc.__traceback__ = None
                app_log.debug("connection from %r gone before it was set up: %s", address, exc)
            else:
                app_log.exception("Cannot set up the connection from %r", address)
            return
        try:
            result = self.handle_stream(stream, address)
            if result is not None and inspect.isawaitable(result):
                awaitable = result
                self.io_loop.spawn_callback(lambda: awaitable)
        except Exception as exc:
            app_log.exception("Error in handle_stream for connection from %r", address)
            # Nobody will serve this connection: close it rather than leave
            # the client hanging (and the stream registered in the loop).
            stream.close(exc)

    def _make_stream(self, connection: socket.socket) -> IOStream:
        if self.ssl_context is not None:
            return SSLIOStream(
                connection,
                ssl_options=self.ssl_context,
                server_side=True,
                io_loop=self.io_loop,
                **self._stream_kwargs,
            )
        return IOStream(connection, io_loop=self.io_loop, **self._stream_kwargs)


def _peer_gone(exc: BaseException) -> bool:
    """True if *exc*, raised while setting up a stream, means the peer already left."""
    if isinstance(exc, ssl.SSLError):
        # The peer closed (or reset) in the middle of the first bytes.
        return isinstance(exc, ssl.SSLEOFError)
    return isinstance(exc, OSError) and exc.errno in TLS_WRAP_PEER_GONE_ERRNOS


def _has_peer(sock: socket.socket) -> bool:
    """False if *sock*'s peer is gone: ``getpeername`` fails (ENOTCONN; EINVAL on macOS)."""
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def _port_of(sockets: list[socket.socket]) -> int:
    port: int = sockets[0].getsockname()[1]
    return port
