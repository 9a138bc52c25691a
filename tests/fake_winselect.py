"""A stand-in for Winsock's ``select()``, so SelectPoller's Windows logic runs on Linux.

It follows Microsoft's "select function (winsock2.h)" documentation
(https://learn.microsoft.com/en-us/windows/win32/api/winsock2/nf-winsock2-select)
and CPython's ``select.select`` on Windows, on real sockets (readiness
comes from ``select.poll`` underneath):

- "Any two of the parameters, readfds, writefds, or exceptfds, can be given
  as null. At least one must be non-null" — with all three sets empty the
  call fails with WSAEINVAL (10022) instead of sleeping: here
  ``OSError(10022)``.
- An fd_set holds at most FD_SETSIZE sockets, 64 in winsock2.h and 512 as
  CPython builds it; CPython raises ``ValueError("too many file
  descriptors in select()")`` for more.
- writefds: "If processing a connect call (nonblocking), connection has
  succeeded." exceptfds: "If processing a connect call (nonblocking),
  connection attempt failed." — a failed connect is *only* in the
  exceptional set, never writable (nor readable).
- readfds: data to read, a connection closed/reset/terminated, or a pending
  accept on a listening socket.
- A closed socket in a set fails the whole call with WSAENOTSOCK (10038).
"""

from __future__ import annotations

import os
import select
import socket
import time
import types
from collections.abc import Iterable
from typing import Any

WSAEINVAL = 10022
WSAENOTSOCK = 10038
FD_SETSIZE = 512

_POLLRDHUP: int = getattr(select, "POLLRDHUP", 0x2000)

#: What a SelectPoller is given as its ``_select`` (the names it uses of the
#: ``select`` module): ``monkeypatch.setattr(SelectPoller, "_select", ws.STAND_IN)``.
STAND_IN: Any = None  # set below, once select_ exists

#: Every call, as (readers, writers, excepts, timeout), for tests.
calls: list[tuple[list[int], list[int], list[int], float | None]] = []


def _fd(obj: Any) -> int:
    return obj if isinstance(obj, int) else int(obj.fileno())


def _connect_failed(fd: int, bits: int) -> bool:
    """A TCP socket whose connect failed: in error or hung up, and never connected.

    Linux cannot peek at SO_ERROR without clearing it, so "never connected"
    is read from TCP_INFO: ``tcpi_options`` (byte 5) holds the options the
    handshake agreed on (loopback always agrees on some), and stays 0 for a
    connect that got no SYN-ACK. A connection reset after it was up has them.
    """
    if not bits & (select.POLLERR | select.POLLHUP):
        return False
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return False
    try:
        if sock.type != socket.SOCK_STREAM or sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_ACCEPTCONN
        ):
            return False
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except OSError:
        return False
    finally:
        sock.detach()
    return info[5] == 0


def select_(
    rlist: Iterable[Any], wlist: Iterable[Any], xlist: Iterable[Any], timeout: float | None = None
) -> tuple[list[Any], list[Any], list[Any]]:
    """Winsock's select(), on Linux sockets."""
    r = [_fd(o) for o in rlist]
    w = [_fd(o) for o in wlist]
    x = [_fd(o) for o in xlist]
    calls.append((r, w, x, timeout))
    if not r and not w and not x:
        raise OSError(WSAEINVAL, "An invalid argument was supplied")
    if max(len(r), len(w), len(x)) > FD_SETSIZE:
        raise ValueError("too many file descriptors in select()")
    if timeout is not None and timeout < 0:
        raise ValueError("timeout must be non-negative")
    for fd in {*r, *w, *x}:
        try:
            os.fstat(fd)
        except OSError:
            raise OSError(
                WSAENOTSOCK, "An operation was attempted on something that is not a socket"
            ) from None
    masks: dict[int, int] = {}
    for fd in r:
        masks[fd] = masks.get(fd, 0) | select.POLLIN | _POLLRDHUP
    for fd in w:
        masks[fd] = masks.get(fd, 0) | select.POLLOUT
    for fd in x:
        masks[fd] = masks.get(fd, 0) | select.POLLPRI
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pollobj = select.poll()
        for fd, mask in masks.items():
            pollobj.register(fd, mask)
        wait = None if deadline is None else max(deadline - time.monotonic(), 0.0) * 1000.0
        revents = dict(pollobj.poll(wait))
        rr: list[int] = []
        ww: list[int] = []
        xx: list[int] = []
        for fd, bits in revents.items():
            if _connect_failed(fd, bits):
                if fd in x:
                    xx.append(fd)
                else:
                    # Winsock never reports it, so it must not end the wait.
                    del masks[fd]
                continue
            if fd in r and bits & (select.POLLIN | _POLLRDHUP | select.POLLHUP | select.POLLERR):
                rr.append(fd)
            if fd in w and bits & select.POLLOUT:
                ww.append(fd)
            if fd in x and bits & select.POLLPRI:
                xx.append(fd)
        if rr or ww or xx or (deadline is not None and time.monotonic() >= deadline):
            return rr, ww, xx


STAND_IN = types.SimpleNamespace(select=select_)
