"""Platform quirks, each named once.

Every module that must behave differently on some operating system imports
the flag or the set it needs from here, so a reader can find every quirk of
a platform by searching for its name.
"""

from __future__ import annotations

import errno
import os
import ssl
import sys

#: True on Windows. Windows sockets (Winsock) differ from POSIX ones in ways
#: the stream layer must know about: a large ``send`` fails with WSAENOBUFS
#: instead of sending part, some error codes are not mapped to Python's
#: exception classes, and ``select`` is the only poller.
_WINDOWS: bool = sys.platform == "win32"

#: True on macOS. ``poll()`` on macOS is unreliable (it does not report on
#: devices and has had bugs with sockets), so the poll backend is not
#: offered there; kqueue is the native backend.
_MACOS: bool = sys.platform == "darwin"

#: Winsock error codes that Python does not turn into an exception class.
#: Python maps WSAEWOULDBLOCK (10035) to ``BlockingIOError`` and the common
#: connection errors to their classes, but a ``send`` larger than the
#: socket's buffer fails with WSAENOBUFS (10055), which arrives as a plain
#: ``OSError`` whose ``winerror``/``errno`` is 10055. It means "try again
#: with less", so the stream treats it as would-block.
WSAEWOULDBLOCK = 10035
WSAEINPROGRESS = 10036
WSAENOBUFS = 10055
WSAECONNRESET = 10054
WSAECONNABORTED = 10053

#: Error numbers that mean "not now, try again later" on a non-blocking
#: socket, whatever exception class carries them. ``BlockingIOError`` covers
#: EAGAIN/EWOULDBLOCK/EINPROGRESS/EALREADY on POSIX and WSAEWOULDBLOCK on
#: Windows; these numbers catch the cases that arrive as a plain ``OSError``
#: (WSAENOBUFS on an oversized Windows send, ENOBUFS on some BSDs when the
#: kernel is short of mbufs).
WOULD_BLOCK_ERRNOS: frozenset[int] = frozenset(
    {
        errno.EAGAIN,
        errno.EWOULDBLOCK,
        errno.EINPROGRESS,
        errno.EALREADY,
        WSAEWOULDBLOCK,
        WSAEINPROGRESS,
        WSAENOBUFS,
        errno.ENOBUFS,
    }
)

#: Error numbers that mean the peer went away: the stream closes with the
#: error set, but logs nothing (it is the peer's doing, not a bug).
CONNECTION_LOST_ERRNOS: frozenset[int] = frozenset(
    {
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.ENOTCONN,
        WSAECONNRESET,
        WSAECONNABORTED,
    }
)


def is_would_block(exc: OSError) -> bool:
    """Return True if *exc* only means "the socket is not ready yet".

    ``BlockingIOError`` always qualifies. A plain ``OSError`` qualifies when
    its ``errno`` (or, on Windows, ``winerror``) is in
    :data:`WOULD_BLOCK_ERRNOS`; this is how WSAENOBUFS from an oversized
    Windows ``send`` is recognised.
    """
    if isinstance(exc, BlockingIOError):
        return True
    code = getattr(exc, "winerror", None) or exc.errno
    return code in WOULD_BLOCK_ERRNOS


#: Error numbers a ``recv`` on a socket that has no connection answers with:
#: ENOTCONN everywhere; Windows says WSAENOTCONN, or WSAEINVAL for a socket
#: that was never bound. (Used to tell a fresh socket from an accepted one
#: whose peer is already gone.)
NOT_CONNECTED_ERRNOS: frozenset[int] = frozenset({errno.ENOTCONN, 10057, 10022})


def is_not_connected(exc: OSError) -> bool:
    """True if *exc* says the socket has no connection (see NOT_CONNECTED_ERRNOS)."""
    code = getattr(exc, "winerror", None) or exc.errno
    return code in NOT_CONNECTED_ERRNOS


def is_connection_lost(exc: BaseException) -> bool:
    """True if *exc* means the peer went away (reset, aborted, broken pipe,
    TLS EOF): logged at DEBUG only, it is not a bug."""
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return True
    if not isinstance(exc, OSError):
        return False
    code = getattr(exc, "winerror", None) or exc.errno
    return code in CONNECTION_LOST_ERRNOS


#: Winsock error codes that Python's ``OSError`` constructor does not turn into
#: the matching subclass (it maps POSIX errno values; on Windows a socket's
#: ``SO_ERROR`` is a WSA code). Used to give a failed connect its class.
_WSA_EXCEPTION_CLASSES: dict[int, type[OSError]] = {
    10061: ConnectionRefusedError,  # WSAECONNREFUSED
    10060: TimeoutError,  # WSAETIMEDOUT
    WSAECONNRESET: ConnectionResetError,
    WSAECONNABORTED: ConnectionAbortedError,
}


def error_from_code(code: int) -> OSError:
    """An exception of the right class for the socket error number *code*.

    ``OSError(errno, msg)`` already returns ``ConnectionRefusedError`` and
    friends for POSIX numbers; Winsock numbers are mapped here.
    """
    try:
        message = os.strerror(code)
    except ValueError:
        message = f"socket error {code}"
    exc_class = _WSA_EXCEPTION_CLASSES.get(code)
    if exc_class is not None:
        return exc_class(code, message)
    return OSError(code, message)


# -- listening sockets and accept() (used by iostream.netutil, iostream.tcpserver)

WSAEMFILE = 10024


def _errnos(*names: str) -> frozenset[int]:
    """The numbers of the errno *names* this platform defines (others are skipped)."""
    return frozenset(getattr(errno, name) for name in names if hasattr(errno, name))


#: accept() errors about the one connection being taken, not the listening
#: socket: go on with the next. A connection reset or aborted while it sat in
#: the listen queue gives ECONNABORTED on FreeBSD and macOS (Linux hands it
#: out, and the reset shows on the new socket). Linux also passes pending
#: network errors of the new connection up as an error of accept() itself
#: (accept(2), "Error handling": EPROTO, ENOPROTOOPT, ENETDOWN, EHOSTDOWN,
#: ENONET, EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH, ETIMEDOUT) and tells the
#: caller to retry as for EAGAIN.
ACCEPT_CONNECTION_GONE_ERRNOS: frozenset[int] = _errnos(
    "ECONNABORTED",
    "ECONNRESET",
    "EPROTO",
    "ENOPROTOOPT",
    "ENETDOWN",
    "EHOSTDOWN",
    "ENONET",
    "EHOSTUNREACH",
    "EOPNOTSUPP",
    "ENETUNREACH",
    "ETIMEDOUT",
) | {WSAECONNRESET, WSAECONNABORTED}

#: accept() errors that mean the process or the kernel ran out of fds or
#: memory (EMFILE, ENFILE; ENOBUFS and ENOMEM on Linux and the BSDs; their
#: Winsock codes). The connection stays queued, so the listening socket stays
#: readable and a level-triggered poller reports it again at once: the
#: server must pause accepting, not retry in a busy loop. ENOBUFS is also in
#: :data:`WOULD_BLOCK_ERRNOS` (a BSD send short of mbufs), so accept code
#: checks this set *before* :func:`is_would_block`.
ACCEPT_OUT_OF_RESOURCES_ERRNOS: frozenset[int] = _errnos(
    "EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"
) | {WSAEMFILE, WSAENOBUFS}

#: Errors from wrapping an accepted socket in TLS (``SSLContext.wrap_socket``
#: asks ``getpeername`` and reads ahead) that mean the peer reset the
#: connection before or just after it was accepted: close it quietly. macOS
#: answers ``getpeername`` on such a socket with EINVAL; Linux with ENOTCONN,
#: which the ssl module swallows before its read-ahead then fails with
#: ECONNRESET.
TLS_WRAP_PEER_GONE_ERRNOS: frozenset[int] = CONNECTION_LOST_ERRNOS | {errno.EINVAL}

#: Set SO_REUSEADDR on listening sockets. POSIX: it lets a restarted server
#: bind its port while old connections sit in TIME_WAIT. Windows: it would let
#: another process bind the same port and steal connections (Windows has
#: SO_EXCLUSIVEADDRUSE for the POSIX meaning), so it stays off there.
REUSEADDR_ON_LISTENERS: bool = not _WINDOWS

#: macOS: ``getaddrinfo("localhost")`` also gives the link-local ``fe80::1%lo0``;
#: binding it makes the application firewall ask the user for permission
#: (again and again). bind_sockets skips link-local addresses for "localhost".
SKIP_LINK_LOCAL_FOR_LOCALHOST: bool = _MACOS

#: Linux only: a UNIX socket name that starts with NUL is in the abstract
#: namespace (no file; gone with the last socket). Other systems would treat
#: it as an (invalid or empty) path.
ABSTRACT_UNIX_SOCKETS: bool = sys.platform.startswith("linux")
