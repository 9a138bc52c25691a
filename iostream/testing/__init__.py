"""Fault injection for your own protocols: sockets that misbehave the way real kernels do.

Code on non-blocking sockets has two classic bugs that a Linux laptop hides:
assuming ``send`` sends everything, and assuming one ``recv`` is one message.
Loopback TCP on Linux almost never sends short, never returns WSAENOBUFS,
and delivers small writes whole. The sockets here make the other cases
happen, on purpose and reproducibly, on any OS:

:class:`WindowsSocket`
    reports errors as Winsock does, as Python on Windows shows them.
    Microsoft's ``send`` documentation lists WSAENOBUFS (10055, "No buffer
    space is available") and WSAEWOULDBLOCK (10035, "the socket is marked
    as nonblocking and the requested operation would block"); its
    ``connect`` documentation: "With a nonblocking socket, the connection
    attempt cannot be completed immediately. In this case, connect will
    return SOCKET_ERROR, and WSAGetLastError will return WSAEWOULDBLOCK" —
    not EINPROGRESS. The stand-in reports would-block (``connect_ex``
    included), connection errors and ``SO_ERROR`` with WSA codes (``errno``
    and ``winerror`` both set, as Python on Windows does). On a non-blocking
    socket it also fails a ``send`` of more than :data:`WINDOWS_SEND_LIMIT`
    (128 KiB) to a stream socket with WSAENOBUFS and sends nothing. That is *not* what
    Microsoft's page says ("On nonblocking stream oriented sockets, the
    number of bytes written can be between 1 and the requested length"): it
    is the behaviour Tornado observed and caps its Windows sends for ("On
    windows, socket.send blows up if given a write buffer that's too large,
    instead of just returning the number of bytes it was able to process"),
    kept here as the worst case a careful caller must survive. A blocking
    socket is never refused: "If no buffer space is available within the
    transport system to hold the data to be transmitted, send will block
    unless the socket has been placed in a nonblocking mode."
:class:`ChaosSocket`
    short sends, short reads, would-block (EAGAIN) and EINTR — everything
    POSIX ``send(2)``/``recv(2)`` allow ("the number of bytes sent" may be
    less than asked; EAGAIN "the socket is marked nonblocking and the
    requested operation would block"; EINTR "a signal occurred") — on an
    explicit schedule of :class:`Fault` tokens, a seeded random one
    (``ChaosSocket(seed=...)``), or both, with a readable record of what
    was applied (:meth:`ChaosSocket.describe`) that replays the run. While
    the socket is blocking it injects nothing (and consumes no token); with
    a timeout, only what Python lets through (short transfers, ENOBUFS).
:class:`ChaosSSLSocket` / :class:`ChaosSSLIOStream` / :class:`TLSChaos`
    TLS: ``ssl.SSLWantReadError`` / ``ssl.SSLWantWriteError`` injected on a
    schedule, and OpenSSL's rule checked on every retry — ``SSL_write(3)``:
    "When an SSL_write() operation has to be repeated because of
    SSL_ERROR_WANT_READ or SSL_ERROR_WANT_WRITE, it must be repeated with
    the same arguments" (:attr:`TLSChaos.violations`). ``send``/``write``
    and ``recv``/``recv_into``/``read`` all go through it; no want-* is
    injected on a receive while OpenSSL holds decrypted bytes.

Helpers put them under streams (:func:`stream_pair`, :func:`socket_pair`)
and run a loop until something happens (:func:`run_until`,
:func:`run_sync`, :class:`Waiter`). The pytest plugin
(:mod:`iostream.testing.pytest_plugin`, installed as the ``pytest11`` entry
point ``iostream.testing.pytest_plugin``) offers them as fixtures, parametrized over every poller;
:mod:`iostream.testing.strategies` has Hypothesis strategies for fault
schedules, so a failing schedule is shrunk to a minimal one.

The sockets are ``socket.socket`` subclasses over real fds, so they also
work under asyncio's *selector* transports (``asyncio.open_connection(
sock=...)``) and any plain non-blocking code; see the documentation page
"Testing your protocol" for what does not (the Windows proactor loop,
uvloop).
"""

from __future__ import annotations

from iostream.testing._helpers import (
    DEFAULT_TIMEOUT,
    KINDS,
    LoopTimeout,
    StreamKind,
    Waiter,
    catch_escaped,
    run_sync,
    run_until,
    socket_pair,
    stream_pair,
    tls_contexts,
    wait_with_progress,
)
from iostream.testing._sockets import (
    OK,
    PREFIX,
    WINDOWS_SEND_LIMIT,
    WSAECONNABORTED,
    WSAECONNREFUSED,
    WSAECONNRESET,
    WSAEMSGSIZE,
    WSAENOBUFS,
    WSAETIMEDOUT,
    WSAEWOULDBLOCK,
    ChaosSocket,
    Fault,
    SendCall,
    WindowsSocket,
    format_schedule,
    parse_schedule,
    recording,
    short,
    wsa_error,
)
from iostream.testing._tls import ChaosSSLIOStream, ChaosSSLSocket, TLSChaos, chaos_context

__all__ = [
    "DEFAULT_TIMEOUT",
    "KINDS",
    "OK",
    "PREFIX",
    "WINDOWS_SEND_LIMIT",
    "WSAECONNABORTED",
    "WSAECONNREFUSED",
    "WSAECONNRESET",
    "WSAEMSGSIZE",
    "WSAENOBUFS",
    "WSAETIMEDOUT",
    "WSAEWOULDBLOCK",
    "ChaosSSLIOStream",
    "ChaosSSLSocket",
    "ChaosSocket",
    "Fault",
    "LoopTimeout",
    "SendCall",
    "StreamKind",
    "TLSChaos",
    "Waiter",
    "WindowsSocket",
    "catch_escaped",
    "chaos_context",
    "format_schedule",
    "parse_schedule",
    "recording",
    "run_sync",
    "run_until",
    "short",
    "socket_pair",
    "stream_pair",
    "tls_contexts",
    "wait_with_progress",
    "wsa_error",
]
