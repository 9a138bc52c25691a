"""Listening sockets and accept handlers, as Tornado's ``tornado.netutil`` sets them up.

- :func:`bind_sockets` — listening TCP sockets for a port on every address a
  host name resolves to (IPv4 and IPv6; with port 0, the same free port on
  all of them), optionally with ``SO_REUSEPORT``;
- :func:`bind_unix_socket` — a listening UNIX socket (a path, or on Linux an
  abstract name starting with ``"\\0"``);
- :func:`add_accept_handler` — accept connections on a listening socket in an
  :class:`~iostream.IOLoop` and hand each one to a callback.

The sockets are made before any loop exists, so that a pre-forking server
(:func:`iostream.process.fork_processes`, ``TCPServer.start(n)``) can share
them between its workers.

Accepting, in one place (:func:`add_accept_handler`):

- at most :data:`ACCEPTS_PER_EVENT` connections per readiness event, so a
  flood of connects cannot starve the streams already open (and in a
  pre-forked server the other workers get their share);
- an error about the one connection (reset or aborted in the queue) skips it;
- running out of fds or buffers (EMFILE, ENFILE, ENOBUFS, ENOMEM) pauses
  accepting for :data:`ACCEPT_PAUSE` seconds instead of spinning on a socket
  that stays readable; the first such error of an episode is logged as a
  WARNING, the rest at DEBUG until an accept succeeds again. Any other
  error of the listening socket pauses the same way, logged as an ERROR
  with its traceback (Tornado lets it escape to the loop, which then calls
  the handler again at once, in a busy loop);
- once ``remove()`` has been called — even from inside the callback, for
  example by ``TCPServer.stop()`` in ``handle_stream`` — not one more
  ``accept`` is made, so a closed socket never yields a false EBADF.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from collections.abc import Callable
from typing import Any

from iostream._platform import (
    ABSTRACT_UNIX_SOCKETS,
    ACCEPT_CONNECTION_GONE_ERRNOS,
    ACCEPT_OUT_OF_RESOURCES_ERRNOS,
    REUSEADDR_ON_LISTENERS,
    SKIP_LINK_LOCAL_FOR_LOCALHOST,
    is_would_block,
)
from iostream.ioloop import IOLoop, app_log
from iostream.pollers import READ

__all__ = [
    "ACCEPTS_PER_EVENT",
    "ACCEPT_PAUSE",
    "DEFAULT_BACKLOG",
    "AcceptCallback",
    "add_accept_handler",
    "bind_sockets",
    "bind_unix_socket",
]

#: ``listen()`` backlog when none is given. Tornado uses 128 and asyncio 100;
#: 1024 lets a burst of connects queue while the loop is busy (the kernel
#: caps it at its own limit, ``net.core.somaxconn`` on Linux).
DEFAULT_BACKLOG = 1024

#: Connections accepted per readiness event at most (Tornado's bound).
ACCEPTS_PER_EVENT = 128

#: Seconds to stop accepting after ``accept`` ran out of fds or buffers.
ACCEPT_PAUSE = 0.1

#: ``callback(connection, address)`` given to :func:`add_accept_handler`.
AcceptCallback = Callable[[socket.socket, Any], object]

_FAMILIES = {
    socket.AF_UNSPEC: "AF_UNSPEC",
    socket.AF_INET: "AF_INET",
    socket.AF_INET6: "AF_INET6",
}


def _check_loop(io_loop: object) -> IOLoop:
    """Validate an ``io_loop`` argument; ``None`` means the current loop."""
    if io_loop is None:
        return IOLoop.current()
    if not isinstance(io_loop, IOLoop):
        raise TypeError(f"io_loop must be an IOLoop or None, not {type(io_loop).__name__}")
    return io_loop


def _check_port(port: object) -> int:
    """Validate a ``port`` argument (an int from 0 to 65535)."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
    return port


def _check_backlog(backlog: object) -> int:
    """Validate a ``backlog`` argument (an int >= 0)."""
    if not isinstance(backlog, int) or isinstance(backlog, bool) or backlog < 0:
        raise ValueError(f"backlog must be an int >= 0, got {backlog!r}")
    return backlog


def _check_bind_arguments(
    port: object,
    address: object,
    family: object,
    backlog: object,
    flags: object,
    reuse_port: object,
) -> None:
    """Validate the arguments of :func:`bind_sockets` (also ``TCPServer.bind``/``listen``)."""
    _check_port(port)
    if address is not None and not isinstance(address, str):
        raise TypeError(f"address must be a str or None, not {type(address).__name__}")
    if isinstance(family, bool) or family not in _FAMILIES:
        raise ValueError(f"family must be socket.AF_UNSPEC, AF_INET or AF_INET6, got {family!r}")
    _check_backlog(backlog)
    if flags is not None and (not isinstance(flags, int) or isinstance(flags, bool)):
        raise TypeError(f"flags must be an int (AI_* bits) or None, not {type(flags).__name__}")
    if not isinstance(reuse_port, bool):
        raise TypeError(f"reuse_port must be a bool, not {type(reuse_port).__name__}")
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port=True: this platform has no SO_REUSEPORT")


def bind_sockets(
    port: int,
    address: str | None = None,
    family: int = socket.AF_UNSPEC,
    backlog: int = DEFAULT_BACKLOG,
    flags: int | None = None,
    reuse_port: bool = False,
) -> list[socket.socket]:
    """Make non-blocking listening sockets for *port* on *address*; return them all.

    *address* is an IP address or a host name; a name that resolves to
    several addresses (``"localhost"``: ``127.0.0.1`` and ``::1``) gets a
    socket on each. ``None`` or ``""`` means every interface (``0.0.0.0``
    and ``::``). *family* (``AF_INET``, ``AF_INET6``, default ``AF_UNSPEC``:
    both) restricts the addresses. With *port* 0 the kernel picks a free port
    for the first socket and the others are bound to that same port, so one
    number reaches the server over IPv4 and IPv6. IPv6 sockets are
    ``IPV6_V6ONLY``: IPv4 gets its own socket, the same on every OS.

    *backlog* is ``listen()``'s; *flags* are ``getaddrinfo``'s ``AI_*`` bits
    (default ``AI_PASSIVE``); *reuse_port* sets ``SO_REUSEPORT`` on each
    socket (``ValueError`` where the OS has none) so that several processes
    can bind the same port. ``SO_REUSEADDR`` is set on POSIX.

    All or nothing: if one address cannot be bound, the sockets already made
    are closed and the error is raised. As in Tornado, an address family the
    kernel does not support is skipped, and so is ``::1`` for ``"localhost"``
    where IPv6 is only half there (EADDRNOTAVAIL, as in many containers). An
    empty result (nothing could be bound) raises ``OSError``.
    """
    _check_bind_arguments(port, address, family, backlog, flags, reuse_port)
    if address == "":
        address = None
    if not socket.has_ipv6 and family == socket.AF_UNSPEC:
        # A Python built without IPv6 cannot make AF_INET6 sockets, but its
        # getaddrinfo still answers with IPv6 addresses (bpo-16208).
        family = socket.AF_INET
    if flags is None:
        flags = socket.AI_PASSIVE
    infos = socket.getaddrinfo(address, port, family, socket.SOCK_STREAM, 0, flags)
    # IPv4 first (AF_INET < AF_INET6), so its port is the one IPv6 reuses.
    infos.sort(key=lambda info: int(info[0]))
    sockets: list[socket.socket] = []
    seen: set[tuple[Any, ...]] = set()
    bound_port: int | None = None
    try:
        for af, socktype, proto, _canonname, sockaddr_ in infos:
            sockaddr: tuple[Any, ...] = tuple(sockaddr_)
            key = (int(af), sockaddr)
            if key in seen:
                continue
            seen.add(key)
            if (
                SKIP_LINK_LOCAL_FOR_LOCALHOST
                and address == "localhost"
                and af == socket.AF_INET6
                and len(sockaddr) == 4
                and sockaddr[3] != 0  # the scope id: a link-local address
            ):
                continue
            if port == 0 and bound_port is not None:
                sockaddr = (sockaddr[0], bound_port, *sockaddr[2:])
            sock = _listening_socket(af, socktype, proto, sockaddr, backlog, reuse_port, address)
            if sock is None:
                continue
            sockets.append(sock)
            bound_port = sock.getsockname()[1]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise OSError(
            errno.EADDRNOTAVAIL, f"bind_sockets: no address of {address!r} could be bound"
        )
    return sockets


def _listening_socket(
    af: int,
    socktype: int,
    proto: int,
    sockaddr: Any,
    backlog: int,
    reuse_port: bool,
    address: str | None,
) -> socket.socket | None:
    """One bound, listening, non-blocking socket; None for an address to skip."""
    try:
        sock = socket.socket(af, socktype, proto)
    except OSError as exc:
        if exc.errno == errno.EAFNOSUPPORT:
            return None
        raise
    try:
        if REUSEADDR_ON_LISTENERS:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            except OSError as exc:
                if exc.errno != errno.ENOPROTOOPT:
                    raise
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if af == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
            # Linux lets an IPv6 socket take IPv4 too, so [::]:p and
            # 0.0.0.0:p would clash; elsewhere two sockets are needed anyway.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL and address == "localhost" and sockaddr[0] == "::1":
                sock.close()
                return None
            raise
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_unix_socket(
    file: str | os.PathLike[str], mode: int = 0o600, backlog: int = DEFAULT_BACKLOG
) -> socket.socket:
    """Make a non-blocking listening UNIX socket at *file*; return it.

    A socket file already at *file* (left by an earlier run) is replaced;
    any other file there raises ``ValueError`` and is left alone. The new
    file gets permissions *mode*. On Linux a name starting with ``"\\0"``
    is an abstract socket: no file, no *mode*. Returns one socket (not a
    list, unlike :func:`bind_sockets`).
    """
    if not isinstance(file, (str, os.PathLike)):
        raise TypeError(f"file must be a str or os.PathLike, not {type(file).__name__}")
    path = os.fspath(file)
    if not isinstance(path, str) or not path:
        raise ValueError(f"file must be a non-empty str path, got {file!r}")
    if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o7777:
        raise ValueError(f"mode must be an int permission mask such as 0o600, got {mode!r}")
    _check_backlog(backlog)
    if not hasattr(socket, "AF_UNIX"):
        raise OSError(errno.EAFNOSUPPORT, "bind_unix_socket: no AF_UNIX sockets on this platform")
    abstract = path.startswith("\0")
    if abstract and not ABSTRACT_UNIX_SOCKETS:
        raise ValueError("file: abstract UNIX socket names (starting with '\\0') are Linux only")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if not abstract:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                pass
            else:
                if not stat.S_ISSOCK(st.st_mode):
                    raise ValueError(f"file {path!r} exists and is not a socket")
                os.remove(path)
        sock.bind(path)
        if not abstract:
            os.chmod(path, mode)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def add_accept_handler(
    sock: socket.socket, callback: AcceptCallback, io_loop: IOLoop | None = None
) -> Callable[[], None]:
    """Accept connections on the listening *sock*; call ``callback(connection, address)``.

    *io_loop* ``None`` means ``IOLoop.current()`` now. Returns ``remove()``,
    which stops accepting (idempotent; it does not close *sock*). Calling
    it from inside *callback* stops the current batch too. See the module
    docstring for the per-event bound and the error policy. An exception
    from *callback* propagates to the loop, which logs it; the connections
    still queued are accepted on the next event.
    """
    if not isinstance(sock, socket.socket):
        raise TypeError(f"sock must be a listening socket.socket, not {type(sock).__name__}")
    if not callable(callback):
        raise TypeError(f"callback must be callable, not {type(callback).__name__}")
    loop = _check_loop(io_loop)
    handler = _AcceptHandler(sock, callback, loop)
    sock.setblocking(False)
    loop.add_handler(sock, handler.on_readable, READ)
    return handler.remove


class _AcceptHandler:
    """The state of one :func:`add_accept_handler`: removed? paused? warned?"""

    def __init__(self, sock: socket.socket, callback: AcceptCallback, io_loop: IOLoop) -> None:
        self.sock = sock
        self.callback = callback
        self.io_loop = io_loop
        self.removed = False
        self.resume_handle: Any = None
        # True from the first out-of-resources error until an accept succeeds:
        # one WARNING per episode, not one per pause.
        self.exhausted = False

    def on_readable(self, fd: object, events: int) -> None:
        sock = self.sock
        for _ in range(ACCEPTS_PER_EVENT):
            if self.removed:
                return
            try:
                connection, address = sock.accept()
            except InterruptedError:
                continue
            except OSError as exc:
                # Out of resources before would-block: ENOBUFS is in both.
                if exc.errno in ACCEPT_OUT_OF_RESOURCES_ERRNOS:
                    self.pause(exc)
                    return
                if is_would_block(exc):
                    return
                if exc.errno in ACCEPT_CONNECTION_GONE_ERRNOS:
                    continue
                # Anything else is about the listening socket, and it would be
                # reported again at once: log it and pause, never spin.
                self.pause(exc, unexpected=True)
                return
            self.exhausted = False
            self.callback(connection, address)

    def pause(self, exc: OSError, unexpected: bool = False) -> None:
        if self.exhausted:
            app_log.debug("accept() failed again (%s); pausing %.2fs", exc, ACCEPT_PAUSE)
        else:
            self.exhausted = True
            app_log.log(
                logging.ERROR if unexpected else logging.WARNING,
                "accept() failed on %r (%s); not accepting for %.2fs",
                _name_of(self.sock),
                exc,
                ACCEPT_PAUSE,
                exc_info=exc if unexpected else None,
            )
        self.io_loop.update_handler(self.sock, 0)
        self.resume_handle = self.io_loop.call_later(ACCEPT_PAUSE, self.resume)

    def resume(self) -> None:
        self.resume_handle = None
        if not self.removed:
            self.io_loop.update_handler(self.sock, READ)

    def remove(self) -> None:
        """Stop accepting on the socket (idempotent; the socket stays open)."""
        if self.removed:
            return
        self.removed = True
        if self.resume_handle is not None:
            self.io_loop.remove_timeout(self.resume_handle)
            self.resume_handle = None
        self.io_loop.remove_handler(self.sock)


def _name_of(sock: socket.socket) -> Any:
    try:
        return sock.getsockname()
    except OSError:
        return sock
