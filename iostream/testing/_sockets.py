"""The fault sockets: :class:`WindowsSocket`, :class:`ChaosSocket` and their :class:`Fault` tokens.

Each class is a real ``socket.socket`` subclass that owns a real fd, so
pollers, ``isinstance`` checks and asyncio's selector transports see an
ordinary socket; only the Python-level calls (``send``, ``sendall``,
``sendmsg``, ``sendto``, ``recv``, ``recv_into``, ``recvfrom``,
``recvfrom_into``, ``recvmsg``, ``recvmsg_into``; for WindowsSocket also
``connect``, ``connect_ex``, ``getsockopt``, ``makefile``) misbehave.
See the package docstring (:mod:`iostream.testing`) for the documents
they follow.

Both misbehave only as far as the socket's mode allows (see
:class:`WindowsSocket` and :class:`ChaosSocket`): a *blocking* socket
(``gettimeout() is None``) blocks where a non-blocking one would fail.
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import random
import re
import socket
import ssl
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, overload

from iostream._platform import WSAECONNABORTED, WSAECONNRESET, WSAENOBUFS, WSAEWOULDBLOCK

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = [
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
    "ChaosSocket",
    "Fault",
    "SendCall",
    "WindowsSocket",
    "format_schedule",
    "parse_schedule",
    "recording",
    "short",
    "wsa_error",
]

KiB = 1024

# Winsock codes, as Python on Windows puts them in both ``errno`` and
# ``winerror`` (``winerror_to_errno`` passes 10000-11999 through unchanged).
# The ones the library itself handles are named in iostream._platform; the
# stand-in also needs three that only show up in errors it emulates.
#: WSAETIMEDOUT: a connection attempt or an established connection timed out.
WSAETIMEDOUT = 10060
#: WSAECONNREFUSED: nothing listens at the address connected to.
WSAECONNREFUSED = 10061
#: WSAEMSGSIZE: a datagram too long for the protocol (POSIX EMSGSIZE).
WSAEMSGSIZE = 10040

#: The largest ``send`` the Windows stand-in accepts on a non-blocking stream socket.
#: This is Tornado's observed behaviour, not a documented Winsock rule:
#: tornado/iostream.py caps sends at 128 KiB because "On windows,
#: socket.send blows up if given a write buffer that's too large, instead of
#: just returning the number of bytes it was able to process". The stand-in
#: reproduces that worst case with WSAENOBUFS (10055, the "No buffer space is
#: available" error of Microsoft's ``send`` page); Microsoft's page itself
#: says a non-blocking send may write "between 1 and the requested length".
WINDOWS_SEND_LIMIT = 128 * KiB

# POSIX errno -> (Winsock code, the class Python on Windows raises for it).
_TO_WSA: dict[int, tuple[int, type[OSError]]] = {
    errno.EAGAIN: (WSAEWOULDBLOCK, BlockingIOError),
    errno.EWOULDBLOCK: (WSAEWOULDBLOCK, BlockingIOError),
    errno.EINPROGRESS: (WSAEWOULDBLOCK, BlockingIOError),
    errno.ECONNRESET: (WSAECONNRESET, ConnectionResetError),
    errno.EPIPE: (WSAECONNABORTED, ConnectionAbortedError),
    errno.ECONNABORTED: (WSAECONNABORTED, ConnectionAbortedError),
    errno.ECONNREFUSED: (WSAECONNREFUSED, ConnectionRefusedError),
    errno.ETIMEDOUT: (WSAETIMEDOUT, TimeoutError),
    errno.EMSGSIZE: (WSAEMSGSIZE, OSError),
}


def wsa_error(code: int, cls: type[OSError] = OSError, message: str = "") -> OSError:
    """An exception as Python on Windows raises it for Winsock error *code*.

    On Windows ``OSError(errno, strerror, None, winerror)`` sets both
    attributes; elsewhere the 4th argument is ignored, so ``winerror`` is
    set by hand (the library reads ``winerror`` first, then ``errno``).
    """
    message = message or f"[WinError {code}] (emulated Winsock error)"
    if sys.platform == "win32":
        return cls(code, message, None, code)
    exc = cls(code, message)
    # OSError has no `winerror` slot off Windows; an instance attribute does.
    exc.__dict__["winerror"] = code
    return exc


_T = TypeVar("_T")
#: What ``recvmsg`` and ``recvmsg_into`` return: data (or its size), ancillary
#: data, message flags, address.
_RecvMsg = tuple[bytes, list[tuple[int, int, bytes]], int, Any]
_RecvMsgInto = tuple[int, list[tuple[int, int, bytes]], int, Any]


def _as_bytes_view(data: Any) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _sendall(sock: socket.socket, data: ReadableBuffer, flags: int) -> None:
    """CPython's ``sendall`` loop, calling the Python-level ``sock.send``."""
    view = _as_bytes_view(data)
    while view.nbytes:
        try:
            sent = sock.send(view, flags)
        except InterruptedError:
            continue
        view = view[sent:]


def _nothing() -> None:
    """No-op default callback."""


def _rewrap(cls: type[socket.socket], sock: socket.socket) -> Any:
    """A *cls* instance owning *sock*'s fd (*sock* is detached), same blocking mode."""
    timeout = sock.gettimeout()
    new = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
    new.settimeout(timeout)
    return new


# ------------------------------------------------------------------ Windows


class WindowsSocket(socket.socket):
    """A socket that fails, blocks and reports errors the way Winsock does.

    Make one with :meth:`wrap` (takes over a real socket's fd) or like a
    socket: ``WindowsSocket(socket.AF_INET, socket.SOCK_STREAM)``.

    * on a **non-blocking** stream socket (``gettimeout() == 0.0``), a
      ``send``, ``sendmsg``, ``sendto`` or ``sendall`` of more than
      :data:`WINDOWS_SEND_LIMIT` bytes raises ``OSError(10055)``
      (WSAENOBUFS, ``winerror`` set) and sends nothing. That refusal is
      what Tornado observed on Windows (its 128 KiB cap: "socket.send
      blows up if given a write buffer that's too large"), the worst case
      a careful caller must survive; it is not what Microsoft's ``send``
      page describes, which says "On nonblocking stream oriented sockets,
      the number of bytes written can be between 1 and the requested
      length". A **blocking** socket (``gettimeout() is None``)
      sends it all: "If no buffer space is available within the transport
      system to hold the data to be transmitted, send will block unless the
      socket has been placed in a nonblocking mode" (Microsoft, ``send``). A
      socket with a timeout is non-blocking at the OS level (Python waits for
      writability itself), but whether Winsock refuses there is not
      established, and ``sendall`` with a timeout is common Windows code: the
      stand-in's choice is to let it send too. A datagram socket is not
      capped: Tornado's observation is of stream sends, and Microsoft's
      ``sendto`` page gives message-oriented sockets another rule ("If the
      data is too long to pass atomically through the underlying protocol,
      the error WSAEMSGSIZE is returned and no data is transmitted"), which
      the stand-in gets from the OS (EMSGSIZE, reported as 10040);
    * would-block on every send and receive call and on ``connect`` is
      ``BlockingIOError`` with ``errno == winerror == 10035`` (WSAEWOULDBLOCK:
      Windows has no EINPROGRESS for a non-blocking connect), and
      ``connect_ex`` returns 10035 where POSIX returns EINPROGRESS;
    * connection errors (on every send and receive call), ``connect_ex``
      results and ``SO_ERROR`` carry WSA codes (10054, 10061, ...);
    * ``makefile()`` files return None (not an exception) when a
      non-blocking read or write would block, as on Windows: there
      ``errno.EWOULDBLOCK`` is 10035, which ``socket.SocketIO`` takes for
      would-block (off Windows the stdlib only knows EAGAIN, so the stand-in
      supplies its own ``SocketIO``).

    ``send_sizes`` lists the size of every ``send`` it was handed;
    ``refused`` counts the WSAENOBUFS failures; ``would_blocks`` the
    WSAEWOULDBLOCK ones. :meth:`on_refusals` lets a test stop a loop that a
    stream would otherwise spin in for ever (every send refused).
    """

    send_sizes: list[int]
    refused: int
    would_blocks: int
    bytes_received: int

    def __init__(
        self,
        family: int = -1,
        type: int = -1,
        proto: int = -1,
        fileno: int | None = None,
    ) -> None:
        super().__init__(family, type, proto, fileno)
        self.send_sizes = []
        self.refused = 0
        self.would_blocks = 0
        self.bytes_received = 0
        self._refusal_limit: int | None = None
        self._on_refusals: Callable[[], object] = _nothing
        self._consecutive_refusals = 0

    @classmethod
    def wrap(cls, sock: socket.socket) -> WindowsSocket:
        """Take over *sock*'s fd (``sock`` is detached and unusable after)."""
        new: WindowsSocket = _rewrap(cls, sock)
        return new

    def on_refusals(self, limit: int, callback: Callable[[], object]) -> None:
        """Call ``callback()`` once *limit* sends in a row have been refused."""
        self._refusal_limit = limit
        self._on_refusals = callback

    def _translate(self, exc: OSError) -> OSError:
        code = exc.errno
        if code is None or getattr(exc, "winerror", None) is not None:
            return exc
        mapped = _TO_WSA.get(code)
        if mapped is None:
            return exc
        wsa, cls = mapped
        if wsa == WSAEWOULDBLOCK:
            self.would_blocks += 1
        return wsa_error(wsa, cls)

    def _winsock(self, call: Callable[..., _T], *args: Any) -> _T:
        """``call(*args)``, its would-block and connection errors as Winsock's."""
        try:
            return call(*args)
        except OSError as exc:
            raise self._translate(exc) from None

    def _refuse(self) -> None:
        # What Winsock does with a non-blocking send larger than its
        # buffers: fail the whole call, send nothing.
        self.refused += 1
        self._consecutive_refusals += 1
        limit = self._refusal_limit
        if limit is not None and self._consecutive_refusals == limit:
            self._on_refusals()
        raise wsa_error(WSAENOBUFS, OSError, "[WinError 10055] No buffer space available")

    def _admit(self, n: int) -> None:
        """Record a send of *n* bytes; refuse it (WSAENOBUFS) if over the limit."""
        self.send_sizes.append(n)
        if self._over_limit(n):
            self._refuse()
        self._consecutive_refusals = 0

    def _over_limit(self, n: int) -> bool:
        # Only a non-blocking socket is refused: "send will block unless the
        # socket has been placed in a nonblocking mode" (Microsoft, send);
        # and only a stream one: a datagram too long fails in the OS with
        # EMSGSIZE, translated to Winsock's WSAEMSGSIZE (Microsoft, sendto).
        return (
            n > WINDOWS_SEND_LIMIT and self.gettimeout() == 0.0 and self.type == socket.SOCK_STREAM
        )

    def send(self, data: ReadableBuffer, flags: int = 0, /) -> int:
        """Send *data*; non-blocking and over :data:`WINDOWS_SEND_LIMIT` bytes: WSAENOBUFS."""
        n = _as_bytes_view(data).nbytes
        self._admit(n)
        sent: int = self._winsock(super().send, data, flags)
        return sent

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        """``sendall`` through :meth:`send` (the C one would bypass the stand-in).

        As CPython's: ``send`` with all that remains until it is sent, EINTR
        retried; so a non-blocking ``sendall`` of more than
        :data:`WINDOWS_SEND_LIMIT` bytes fails with WSAENOBUFS (the refusal
        Tornado saw); a blocking one sends it all.
        """
        _sendall(self, data, flags)

    def sendmsg(
        self,
        buffers: Iterable[ReadableBuffer],
        ancdata: Iterable[tuple[int, int, ReadableBuffer]] = (),
        flags: int = 0,
        address: Any = None,
        /,
    ) -> int:
        """Like :meth:`send` for the buffers together (asyncio 3.12+ ``writelines``).

        The stand-in gives several buffers the same limit as one ``send`` of
        their total, on a non-blocking socket only (there is no ``sendmsg``
        on Windows at all; this exists so POSIX code paths that use it meet
        the same rule).
        """
        views = [_as_bytes_view(b) for b in buffers]
        n = sum(v.nbytes for v in views)
        self._admit(n)
        args = (views, ancdata, flags) if address is None else (views, ancdata, flags, address)
        sent: int = self._winsock(super().sendmsg, *args)
        return sent

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        """``recv_into`` with would-block and connection errors as Winsock codes."""
        n: int = self._winsock(super().recv_into, buffer, nbytes, flags)
        self.bytes_received += n
        return n

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        """``recv`` with would-block and connection errors as Winsock codes."""
        data: bytes = self._winsock(super().recv, bufsize, flags)
        self.bytes_received += len(data)
        return data

    def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Any]:
        """``recvfrom`` with would-block and connection errors as Winsock codes."""
        data, address = self._winsock(super().recvfrom, bufsize, flags)
        self.bytes_received += len(data)
        return data, address

    def recvfrom_into(
        self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0
    ) -> tuple[int, Any]:
        """``recvfrom_into`` with would-block and connection errors as Winsock codes."""
        n, address = self._winsock(super().recvfrom_into, buffer, nbytes, flags)
        self.bytes_received += n
        return n, address

    def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0, /) -> _RecvMsg:
        """``recvmsg`` with Winsock's codes (no such call on Windows: as :meth:`sendmsg`)."""
        result: _RecvMsg = self._winsock(super().recvmsg, bufsize, ancbufsize, flags)
        self.bytes_received += len(result[0])
        return result

    def recvmsg_into(
        self, buffers: Iterable[WriteableBuffer], ancbufsize: int = 0, flags: int = 0, /
    ) -> _RecvMsgInto:
        """``recvmsg_into`` with Winsock's codes (Windows has none: as :meth:`sendmsg`)."""
        result: _RecvMsgInto = self._winsock(super().recvmsg_into, buffers, ancbufsize, flags)
        self.bytes_received += result[0]
        return result

    @overload
    def sendto(self, data: ReadableBuffer, address: Any, /) -> int: ...

    @overload
    def sendto(self, data: ReadableBuffer, flags: int, address: Any, /) -> int: ...

    def sendto(self, data: ReadableBuffer, *args: Any) -> int:
        """``sendto(data, [flags,] address)``: :meth:`send`'s limit and Winsock's codes.

        The limit applies to a stream socket only (on one, Winsock ignores
        the address: ``sendto`` is ``send``); a datagram socket gets the
        OS's verdict, a too-long datagram failing with WSAEMSGSIZE (10040).
        A datagram longer than a receive buffer is cut short silently, as on
        POSIX; Winsock's ``recvfrom`` fails that call with WSAEMSGSIZE
        instead, which the stand-in does not emulate.
        """
        n = _as_bytes_view(data).nbytes
        self._admit(n)
        sent: int = self._winsock(super().sendto, data, *args)
        return sent

    def connect(self, address: Any, /) -> None:
        """``connect``; in progress is WSAEWOULDBLOCK, as on Windows."""
        # A non-blocking connect on Windows fails at once with WSAEWOULDBLOCK
        # (POSIX says EINPROGRESS); the outcome shows later as writability
        # (success) or in the exceptional set with SO_ERROR set (failure).
        self._winsock(super().connect, address)

    def connect_ex(self, address: Any, /) -> int:
        """``connect_ex``; the error code is Winsock's (10035 in progress, 10061 refused)."""
        code = super().connect_ex(address)
        mapped = _TO_WSA.get(code)
        if mapped is None:
            return code
        if mapped[0] == WSAEWOULDBLOCK:
            self.would_blocks += 1
        return mapped[0]

    def makefile(
        self,
        mode: str = "r",
        buffering: int | None = None,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> Any:
        """``socket.makefile``, whose files return None when Winsock would block.

        CPython's ``makefile``, with a ``SocketIO`` that takes 10035
        (WSAEWOULDBLOCK) for would-block as it does on Windows, where
        ``errno.EWOULDBLOCK`` is 10035: a read or write that would block
        returns None instead of raising.
        """
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        binary = "b" in mode
        rawmode: Literal["r", "w", "rw"] = "rw" if reading and writing else "r" if reading else "w"
        raw = _WinsockIO(self, rawmode)
        # As CPython's makefile: the fd stays open until its files are closed.
        counted: Any = self
        counted._io_refs += 1
        if buffering is None or buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buffer: Any
        if reading and writing:
            buffer = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if binary:
            return buffer
        text = io.TextIOWrapper(buffer, encoding, errors, newline)
        text.mode = mode  # type: ignore[misc]
        return text

    @overload
    def getsockopt(self, level: int, optname: int, /) -> int: ...

    @overload
    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...

    def getsockopt(self, level: int, optname: int, buflen: int | None = None, /) -> int | bytes:
        """``getsockopt``; a nonzero ``SO_ERROR`` is the Winsock code."""
        if buflen is not None:
            return super().getsockopt(level, optname, buflen)
        value = super().getsockopt(level, optname)
        if level == socket.SOL_SOCKET and optname == socket.SO_ERROR and value:
            # Winsock's SO_ERROR is a WSA code (10061 for a refused connect).
            return _TO_WSA.get(value, (value, OSError))[0]
        return value


class _WinsockIO(socket.SocketIO):
    """``SocketIO`` for which WSAEWOULDBLOCK (10035) is would-block, as on Windows."""

    def readinto(self, b: WriteableBuffer) -> int | None:
        """``SocketIO.readinto``; None when the read would block."""
        try:
            return super().readinto(b)
        except BlockingIOError as exc:
            if exc.errno == WSAEWOULDBLOCK:
                return None
            raise

    def write(self, b: ReadableBuffer) -> int | None:
        """``SocketIO.write``; None when the write would block."""
        try:
            return super().write(b)
        except BlockingIOError as exc:
            if exc.errno == WSAEWOULDBLOCK:
                return None
            raise


# ------------------------------------------------------------------ faults


class Fault:
    """One step of a fault schedule: what the next ``send`` / ``recv`` call does.

    Kinds (``arg`` only for ``short``):

    ``ok``          behave (delegate unchanged)
    ``short``       send at most ``arg`` bytes / receive at most ``arg`` bytes
    ``block``       ``BlockingIOError(EAGAIN)``, nothing transferred
    ``eintr``       ``InterruptedError(EINTR)``, nothing transferred
    ``nobufs``      ``OSError(ENOBUFS)`` (BSD, short of mbufs) — send only
    ``wsa_block``   ``BlockingIOError(10035)`` with ``winerror`` (Windows)
    ``wsa_nobufs``  ``OSError(10055)`` with ``winerror`` (Windows) — send only
    ``want_read``   ``ssl.SSLWantReadError`` (TLS sockets only)
    ``want_write``  ``ssl.SSLWantWriteError`` (TLS sockets only)

    Not a dataclass on purpose: hypothesis prints dataclasses field by
    field, and a failing schedule should read ``[short(3), block, eintr]``.
    """

    __slots__ = ("arg", "kind")

    KINDS: ClassVar[frozenset[str]] = frozenset(
        {
            "ok",
            "short",
            "block",
            "eintr",
            "nobufs",
            "wsa_block",
            "wsa_nobufs",
            "want_read",
            "want_write",
        }
    )

    def __init__(self, kind: str, arg: int = 0) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(self.KINDS)}")
        if kind == "short" and arg < 1:
            raise ValueError(f"short() needs arg >= 1, got {arg}")
        self.kind = kind
        self.arg = arg

    def __repr__(self) -> str:
        return f"short({self.arg})" if self.kind == "short" else self.kind

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fault) and (self.kind, self.arg) == (other.kind, other.arg)

    def __hash__(self) -> int:
        return hash((self.kind, self.arg))

    def exception(self) -> OSError | None:
        """The exception this fault raises, or None (``ok``, ``short``)."""
        kind = self.kind
        if kind == "block":
            return BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable (chaos)")
        if kind == "eintr":
            return InterruptedError(errno.EINTR, "Interrupted system call (chaos)")
        if kind == "nobufs":
            return OSError(errno.ENOBUFS, "No buffer space available (chaos)")
        if kind == "wsa_block":
            return wsa_error(WSAEWOULDBLOCK, BlockingIOError)
        if kind == "wsa_nobufs":
            return wsa_error(WSAENOBUFS, OSError)
        if kind == "want_read":
            return ssl.SSLWantReadError(ssl.SSL_ERROR_WANT_READ, "want read (chaos)")
        if kind == "want_write":
            return ssl.SSLWantWriteError(ssl.SSL_ERROR_WANT_WRITE, "want write (chaos)")
        return None


OK = Fault("ok")


def short(n: int) -> Fault:
    """A ``short`` fault: transfer at most *n* bytes."""
    return Fault("short", n)


BLOCK = Fault("block")
EINTR = Fault("eintr")
WSA_BLOCK = Fault("wsa_block")
WSA_NOBUFS = Fault("wsa_nobufs")

_TOKEN = re.compile(r"\s*(?:(short)\((\d+)\)|([a-z_]+))\s*")


def parse_schedule(text: str) -> list[Fault]:
    """The schedule that :func:`format_schedule` (and a failure report) printed.

    ``parse_schedule("[short(3), block, eintr]")`` gives
    ``[short(3), Fault("block"), Fault("eintr")]``; the brackets are optional.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    inner = text.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    faults: list[Fault] = []
    if not inner.strip():
        return faults
    for item in inner.split(","):
        match = _TOKEN.fullmatch(item)
        if match is None:
            raise ValueError(f"text: {item.strip()!r} is not a fault (e.g. short(3), block)")
        faults.append(short(int(match[2])) if match[1] else Fault(match[3]))
    return faults


def format_schedule(schedule: Sequence[Fault], limit: int = 200) -> str:
    """``[short(3), block]``: *schedule* without its trailing ``ok`` tokens.

    At most *limit* tokens are shown; a longer schedule ends with a note of
    how many were left out (so the text no longer replays it all).
    """
    end = len(schedule)
    while end and schedule[end - 1] == OK:
        end -= 1
    shown = ", ".join(repr(fault) for fault in schedule[: min(end, limit)])
    more = f", ... {end - limit} more" if end > limit else ""
    return f"[{shown}{more}]"


def _checked_schedule(faults: Iterable[Fault], name: str) -> list[Fault]:
    if isinstance(faults, (str, bytes)):
        raise TypeError(f"{name} must be an iterable of Fault (see parse_schedule), not a str")
    items = list(faults)
    for item in items:
        if not isinstance(item, Fault):
            raise TypeError(f"{name} must hold Fault objects, not {type(item).__name__}")
    return items


def _truncated(views: list[memoryview], limit: int) -> list[memoryview]:
    """The first *limit* bytes of the buffers *views*, as views."""
    out: list[memoryview] = []
    for view in views:
        if limit <= 0:
            break
        out.append(view[:limit])
        limit -= view.nbytes
    return out


#: Faults a socket in timeout mode (``gettimeout() > 0``) never shows its caller:
#: Python waits for readiness after would-block and retries EINTR (PEP 475)
#: itself; ``wsa_nobufs`` is left out as :class:`WindowsSocket` leaves out its
#: refusal there. ``short`` and ``nobufs`` do reach the caller.
_TIMEOUT_HIDES = frozenset({"block", "wsa_block", "eintr", "wsa_nobufs"})

#: Lists that every new ChaosSocket / TLSChaos is appended to (see :func:`recording`).
_recorders: list[list[Any]] = []


@contextlib.contextmanager
def recording() -> Iterator[list[Any]]:
    """Collect every :class:`ChaosSocket` and ``TLSChaos`` created inside the block.

    Yields the list they are appended to. The pytest plugin uses it to show
    their :meth:`~ChaosSocket.describe` in the report of a failing test.
    """
    found: list[Any] = []
    _recorders.append(found)
    try:
        yield found
    finally:
        _recorders.remove(found)


#: Number of leading bytes of each send kept in :class:`SendCall`.
PREFIX = 64


@dataclass
class SendCall:
    """One ``send`` call as the socket saw it."""

    #: Bytes the caller handed to ``send``.
    nbytes: int
    #: Their first :data:`PREFIX` bytes.
    prefix: bytes
    #: The fault applied.
    fault: Fault
    #: Bytes the call reported sent; -1 if it raised.
    sent: int = -1
    #: Name of the exception raised, if any.
    error: str = ""

    def __repr__(self) -> str:
        outcome = self.error or f"sent {self.sent}"
        return f"<send {self.nbytes} B [{self.fault!r}] -> {outcome}>"


class ChaosSocket(socket.socket):
    """A real socket that misbehaves on a schedule, a seed, or both.

    ``ChaosSocket(family, type, proto, fileno, *, seed=None, ...)`` or
    :meth:`wrap` (takes over a connected socket's fd). Each ``send`` /
    ``sendmsg`` / ``sendto`` call takes the next token of ``send_faults``,
    each ``recv`` / ``recv_into`` / ``recvfrom`` / ``recvfrom_into`` /
    ``recvmsg`` / ``recvmsg_into`` call the next of ``recv_faults`` (see
    :class:`Fault`); on a datagram socket a ``short`` token is spent as
    ``ok`` (POSIX moves a message whole or not at all).
    When a schedule runs out the socket behaves, unless *seed* is given:
    then every further call draws its fault from a :class:`random.Random`
    seeded with *seed* (sends and receives from separate streams of it), with
    the rates given, so the same seed and the same calls give the same
    faults on every run and every OS:

    * *short_rate*: a short send / short read (at most a log-uniformly drawn
      number of bytes, fewer than asked);
    * *block_rate*: ``BlockingIOError(EAGAIN)``, nothing transferred;
    * *eintr_rate*: ``InterruptedError(EINTR)``, nothing transferred.

    With ``windows=True`` the would-blocks are Winsock's (``wsa_block``:
    ``errno == winerror == 10035``), half of the send ones are
    ``wsa_nobufs`` (10055) instead, and *eintr_rate*'s share goes through
    unfaulted (non-blocking Winsock calls are never interrupted).

    Faults follow the socket's mode *at each call*, since POSIX allows
    EAGAIN and short transfers only on a non-blocking socket ("the socket
    is marked nonblocking"), and a socket is often wrapped before a stream
    makes it non-blocking:

    * non-blocking (``gettimeout() == 0.0``): every fault, as scheduled;
    * blocking (``gettimeout() is None``): no fault at all, and neither the
      schedules nor the seed are consumed (the calls are not in
      ``send_record`` / ``recv_record``, so the schedule starts with the
      first non-blocking call, and a replay is exact); sends are still
      listed in ``sends`` (fault ``ok``) and ``log`` ("blocking socket: no
      fault");
    * timeout mode (``gettimeout() > 0``: non-blocking at the OS level,
      Python waits for readiness itself): a token is consumed and recorded
      per call, but only what such a call can return reaches the caller:
      ``short(n)`` and ``nobufs``. ``block``, ``wsa_block`` and ``eintr``
      behave as ``ok`` (Python would have waited, or retried), and so does
      ``wsa_nobufs`` (as :class:`WindowsSocket` does not refuse there); the
      log says ``block -> ok: timeout mode``.

    The record: ``sends`` (:class:`SendCall` for every send), ``log`` (one
    line per call), ``send_record`` / ``recv_record`` (the fault applied to
    each call, ``ok`` included: a schedule that replays this run exactly)
    and :meth:`describe`, a readable summary to put in a failure message
    (the pytest plugin adds it to the report of a failing test by itself).
    """

    send_faults: deque[Fault]
    recv_faults: deque[Fault]
    sends: list[SendCall]
    log: list[str]
    bytes_received: int
    send_record: list[Fault]
    recv_record: list[Fault]
    seed: int | str | None

    def __init__(
        self,
        family: int = -1,
        type: int = -1,
        proto: int = -1,
        fileno: int | None = None,
        *,
        seed: int | str | None = None,
        send_faults: Iterable[Fault] = (),
        recv_faults: Iterable[Fault] = (),
        short_rate: float = 0.3,
        block_rate: float = 0.15,
        eintr_rate: float = 0.05,
        windows: bool = False,
    ) -> None:
        rates = {"short_rate": short_rate, "block_rate": block_rate, "eintr_rate": eintr_rate}
        for name, rate in rates.items():
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
                raise ValueError(f"{name} must be a number from 0 to 1, got {rate!r}")
        if short_rate + block_rate + eintr_rate > 1:
            raise ValueError(
                "short_rate + block_rate + eintr_rate must be at most 1, got "
                f"{short_rate} + {block_rate} + {eintr_rate}"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, str))):
            raise TypeError(f"seed must be an int, a str or None, not {seed.__class__.__name__}")
        super().__init__(family, type, proto, fileno)
        self.send_faults = deque(_checked_schedule(send_faults, "send_faults"))
        self.recv_faults = deque(_checked_schedule(recv_faults, "recv_faults"))
        self.sends = []
        self.log = []
        self.bytes_received = 0
        self.send_record = []
        self.recv_record = []
        self.seed = seed
        self._rates = (float(short_rate), float(block_rate), float(eintr_rate))
        self._windows = bool(windows)
        self._send_rng = None if seed is None else random.Random(f"{seed}:send")
        self._recv_rng = None if seed is None else random.Random(f"{seed}:recv")
        for recorder in _recorders:
            recorder.append(self)

    @classmethod
    def wrap(
        cls,
        sock: socket.socket,
        send_faults: Iterable[Fault] = (),
        recv_faults: Iterable[Fault] = (),
        **options: Any,
    ) -> ChaosSocket:
        """Take over *sock*'s fd (``sock`` is detached) with these schedules.

        *options* are the keyword arguments of the constructor (``seed``,
        the rates, ``windows``).
        """
        timeout = sock.gettimeout()
        new = cls(
            sock.family,
            sock.type,
            sock.proto,
            fileno=sock.detach(),
            send_faults=send_faults,
            recv_faults=recv_faults,
            **options,
        )
        new.settimeout(timeout)
        return new

    # -- drawing faults ----------------------------------------------------

    def _draw(self, rng: random.Random, size: int, sending: bool) -> Fault:
        short_rate, block_rate, eintr_rate = self._rates
        r = rng.random()
        if r < block_rate:
            if not self._windows:
                return BLOCK
            if sending and rng.random() < 0.5:
                return WSA_NOBUFS
            return WSA_BLOCK
        if r < block_rate + eintr_rate:
            # Windows: non-blocking Winsock calls never fail with an
            # interruption (WSAEINTR is for a blocking call cancelled by
            # WSACancelBlockingCall): the draw is spent, the call goes through.
            return OK if self._windows else EINTR
        if r < block_rate + eintr_rate + short_rate and size > 1:
            # Log-uniform: as many 1..10-byte pieces as 1..10 KiB ones.
            return short(max(1, min(size - 1, int(2 ** rng.uniform(0, math.log2(size))))))
        return OK

    def _next_send_fault(self, size: int) -> Fault:
        if self.send_faults:
            fault = self.send_faults.popleft()
        elif self._send_rng is not None:
            fault = self._draw(self._send_rng, size, sending=True)
        else:
            fault = OK
        self.send_record.append(fault)
        return fault

    def _whole_messages(self) -> bool:
        """A datagram (or seqpacket) socket: no ``short`` fault can apply.

        POSIX moves a message whole or not at all: send "shall fail and no
        data shall be transmitted" if the message is too long, and a receive
        buffer too small for a message has "the excess bytes ... discarded"
        (``send``, ``recv``). A short transfer there is not something an OS
        does, and a short receive would lose the rest: the token is spent as
        ``ok``.
        """
        return self.type != socket.SOCK_STREAM

    # -- the socket calls ----------------------------------------------------

    def _send_call(self, total: int, head: bytes, transmit: Callable[[int | None], int]) -> int:
        """One send of *total* bytes: ``transmit(limit)`` after the fault the mode allows.

        *limit* is None (send everything handed) or the byte count of a
        ``short`` fault. Blocking: no fault, no token. Timeout mode: a token,
        applied only if Python would let it through (:data:`_TIMEOUT_HIDES`).
        """
        timeout = self.gettimeout()
        note = ""
        if timeout is None:
            drawn = applied = OK
            note = " (blocking socket: no fault)"
        else:
            drawn = applied = self._next_send_fault(total)
            if timeout > 0 and drawn.kind in _TIMEOUT_HIDES:
                applied = OK
                note = f" ({drawn!r} -> ok: timeout mode)"
            elif drawn.kind == "short" and self._whole_messages():
                applied = OK
                note = f" ({drawn!r} -> ok: a message socket sends whole messages)"
        call = SendCall(total, head, drawn)
        self.sends.append(call)
        try:
            exc = applied.exception()
            if exc is not None:
                raise exc
            short_by = applied.kind == "short" and applied.arg < total
            call.sent = transmit(applied.arg if short_by else None)
        except OSError as exc:
            call.error = type(exc).__name__
            self.log.append(repr(call) + note)
            raise
        self.log.append(repr(call) + note)
        return call.sent

    def send(self, data: ReadableBuffer, flags: int = 0, /) -> int:
        """Send *data* as the next fault says (recorded in ``sends``)."""
        view = _as_bytes_view(data)
        base_send = super().send
        return self._send_call(
            view.nbytes,
            view[:PREFIX].tobytes(),
            lambda limit: base_send(view if limit is None else view[:limit], flags),
        )

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        """``sendall`` through :meth:`send`, so every call follows the schedule.

        As CPython's: ``send`` until everything is sent, EINTR retried
        (PEP 475); any other error propagates with part of the data perhaps
        sent, which is why ``sendall`` on a non-blocking socket is a bug
        this socket shows at once (a ``block`` fault).
        """
        _sendall(self, data, flags)

    def sendmsg(
        self,
        buffers: Iterable[ReadableBuffer],
        ancdata: Iterable[tuple[int, int, ReadableBuffer]] = (),
        flags: int = 0,
        address: Any = None,
        /,
    ) -> int:
        """Like :meth:`send` for the buffers together (asyncio 3.12+ ``writelines``)."""
        views = [_as_bytes_view(b) for b in buffers]
        total = sum(v.nbytes for v in views)
        head = b"".join(v[:PREFIX].tobytes() for v in views)[:PREFIX]
        base_sendmsg = super().sendmsg

        def transmit(limit: int | None) -> int:
            parts = views if limit is None else _truncated(views, limit)
            if address is None:
                return base_sendmsg(parts, ancdata, flags)
            return base_sendmsg(parts, ancdata, flags, address)

        return self._send_call(total, head, transmit)

    def _recv_fault(self, size: int) -> int:
        """Apply the next recv fault the mode allows: raise, or return the size to ask for."""
        timeout = self.gettimeout()
        if timeout is None:
            self.log.append(f"<recv {size} B (blocking socket: no fault)>")
            return size
        if self.recv_faults:
            fault = self.recv_faults.popleft()
        elif self._recv_rng is not None:
            fault = self._draw(self._recv_rng, size, sending=False)
        else:
            fault = OK
        self.recv_record.append(fault)
        if fault.kind in ("nobufs", "wsa_nobufs", "want_read", "want_write"):
            fault = OK  # send-side (or TLS) faults: meaningless on a plain recv
        if timeout > 0 and fault.kind in _TIMEOUT_HIDES:
            self.log.append(f"<recv {size} B [{fault!r} -> ok: timeout mode]>")
            return size
        exc = fault.exception()
        if exc is not None:
            self.log.append(f"<recv {size} B [{fault!r}] -> {type(exc).__name__}>")
            raise exc
        if fault.kind == "short":
            if self._whole_messages():
                self.log.append(f"<recv {size} B [{fault!r} -> ok: a message socket]>")
                return size
            size = min(size, fault.arg)
        self.log.append(f"<recv {size} B [{fault!r}]>")
        return size

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        """``recv_into`` as the next recv fault says."""
        if not nbytes:
            nbytes = _as_bytes_view(buffer).nbytes
        n = super().recv_into(buffer, self._recv_fault(nbytes), flags)
        self.bytes_received += n
        return n

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        """``recv`` as the next recv fault says."""
        data = super().recv(self._recv_fault(bufsize), flags)
        self.bytes_received += len(data)
        return data

    def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Any]:
        """``recvfrom`` as the next recv fault says."""
        data, address = super().recvfrom(self._recv_fault(bufsize), flags)
        self.bytes_received += len(data)
        return data, address

    def recvfrom_into(
        self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0
    ) -> tuple[int, Any]:
        """``recvfrom_into`` as the next recv fault says."""
        if not nbytes:
            nbytes = _as_bytes_view(buffer).nbytes
        n, address = super().recvfrom_into(buffer, self._recv_fault(nbytes), flags)
        self.bytes_received += n
        return n, address

    def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0, /) -> _RecvMsg:
        """``recvmsg`` as the next recv fault says (a short one limits *bufsize*)."""
        result = super().recvmsg(self._recv_fault(bufsize), ancbufsize, flags)
        self.bytes_received += len(result[0])
        return result

    def recvmsg_into(
        self, buffers: Iterable[WriteableBuffer], ancbufsize: int = 0, flags: int = 0, /
    ) -> _RecvMsgInto:
        """``recvmsg_into`` as the next recv fault says (a short one fills fewer bytes)."""
        views = [_as_bytes_view(b) for b in buffers]
        total = sum(v.nbytes for v in views)
        size = self._recv_fault(total)
        result = super().recvmsg_into(
            views if size >= total else _truncated(views, size), ancbufsize, flags
        )
        self.bytes_received += result[0]
        return result

    @overload
    def sendto(self, data: ReadableBuffer, address: Any, /) -> int: ...

    @overload
    def sendto(self, data: ReadableBuffer, flags: int, address: Any, /) -> int: ...

    def sendto(self, data: ReadableBuffer, *args: Any) -> int:
        """``sendto(data, [flags,] address)`` as the next send fault says (in ``sends``)."""
        view = _as_bytes_view(data)
        base_sendto: Callable[..., int] = super().sendto
        return self._send_call(
            view.nbytes,
            view[:PREFIX].tobytes(),
            lambda limit: base_sendto(view if limit is None else view[:limit], *args),
        )

    # -- the record ----------------------------------------------------------

    def describe(self, limit: int = 200) -> str:
        """A readable record of the faults applied so far, and how to replay them.

        Trailing ``ok`` tokens are dropped (an exhausted schedule behaves);
        a schedule longer than *limit* tokens is cut, saying how much.
        """
        seed = "" if self.seed is None else f" seed={self.seed!r}"
        lines = [
            f"{type(self).__name__}{seed}: {len(self.send_record)} send calls, "
            f"{len(self.recv_record)} recv calls"
        ]
        shown = {
            name: format_schedule(record, limit)
            for name, record in (
                ("send_faults", self.send_record),
                ("recv_faults", self.recv_record),
            )
        }
        for name, text in shown.items():
            lines.append(f"  {name}: {text}")
        send_text, recv_text = shown["send_faults"], shown["recv_faults"]
        lines.append(
            f'  replay: ChaosSocket.wrap(sock, send_faults=parse_schedule("{send_text}"), '
            f'recv_faults=parse_schedule("{recv_text}"))'
        )
        return "\n".join(lines)

    def send_violations(self, payload: bytes) -> list[str]:
        """Check every send against the byte stream *payload* this socket carried.

        Each ``send`` must be handed bytes that start exactly where the bytes
        accepted so far end (nothing skipped, nothing resent), and no more
        than remain; the accepted bytes must add up to *payload*. Returns the
        violations found (empty: all good).
        """
        problems: list[str] = []
        offset = 0
        for i, call in enumerate(self.sends):
            expected = payload[offset : offset + len(call.prefix)]
            if call.prefix != expected:
                problems.append(
                    f"send #{i} {call!r} starts with {call.prefix[:16]!r}..., "
                    f"expected the bytes at offset {offset}: {expected[:16]!r}..."
                )
            if call.nbytes > len(payload) - offset:
                problems.append(
                    f"send #{i} {call!r} was handed {call.nbytes} bytes, "
                    f"only {len(payload) - offset} were left to send"
                )
            if call.sent > 0:
                offset += call.sent
        if offset != len(payload):
            problems.append(f"the sends accepted {offset} bytes, the stream carried {len(payload)}")
        return problems
