"""The test transport layer: sockets that misbehave on purpose, the way real kernels do.

Nothing here is part of the library. Each class is a real socket (a
``socket.socket`` or ``ssl.SSLSocket`` subclass wrapping a real loopback fd,
so the stream's ``isinstance`` checks and the pollers see an ordinary
socket) that overrides the calls the stream makes:

* :class:`WindowsSocket` — what Winsock does to a non-blocking socket, as
  Python on Windows reports it: a ``send`` of more than 128 KiB fails with
  WSAENOBUFS (``OSError`` with ``errno`` and ``winerror`` 10055) instead of
  sending part; would-block on ``send``/``recv``/``connect`` is a
  ``BlockingIOError`` whose ``errno`` and ``winerror`` are WSAEWOULDBLOCK
  (10035), not EAGAIN/EINPROGRESS; ``SO_ERROR`` and connection errors carry
  WSA codes. It records the size of every ``send`` it was handed.
* :class:`ChaosSocket` — a plain socket that follows a *schedule* of
  :class:`Fault` tokens, one per ``send`` (or ``recv``) call: send fewer
  bytes than asked, raise ``BlockingIOError`` / ``InterruptedError`` /
  ENOBUFS / WSAEWOULDBLOCK / WSAENOBUFS, return a short read. When the
  schedule runs out it behaves. It records every ``send`` call
  (:class:`SendCall`) so a test can check that each send starts exactly
  where the accepted bytes left off (:meth:`ChaosSocket.send_violations`).
* :class:`ChaosSSLSocket` — the TLS equivalent, made by a context whose
  ``sslsocket_class`` is set to it (:func:`chaos_context`): raises
  ``ssl.SSLWantReadError`` / ``ssl.SSLWantWriteError`` (and short reads) on a
  schedule *before* delegating, and checks OpenSSL's rule that a write
  retried after want-write/want-read starts with exactly the bytes of the
  failed one (:attr:`TLSChaos.violations`). Without a schedule it only
  records, so it also checks the retries after *real* want-writes.
  :class:`ChaosSSLIOStream` is an ``SSLIOStream`` whose ``_wrap_socket``
  hook attaches the schedule.

A schedule is a list of :class:`Fault` whose ``repr`` is short and readable
(``short(3)``, ``block``, ``want_write``): hypothesis prints the drawn lists
when a property fails, after shrinking them to a minimal failing schedule.
"""

from __future__ import annotations

import errno
import socket
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, overload

from iostream import SSLIOStream

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

KiB = 1024

#: Winsock codes, as Python on Windows puts them in both ``errno`` and
#: ``winerror`` (``winerror_to_errno`` passes 10000-11999 through unchanged).
WSAEWOULDBLOCK = 10035
WSAENOBUFS = 10055
WSAECONNABORTED = 10053
WSAECONNRESET = 10054
WSAETIMEDOUT = 10060
WSAECONNREFUSED = 10061

#: The largest ``send`` the Windows stand-in accepts. Winsock fails a
#: non-blocking ``send`` that does not fit its buffers with WSAENOBUFS rather
#: than sending part of it; 128 KiB is what Tornado (and SPEC) cap sends at.
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


def _as_bytes_view(data: Any) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


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

    * ``send`` of more than :data:`WINDOWS_SEND_LIMIT` bytes raises
      ``OSError(10055)`` (WSAENOBUFS, ``winerror`` set) and sends nothing;
    * would-block on ``send``, ``recv``, ``recv_into`` and ``connect`` is
      ``BlockingIOError`` with ``errno == winerror == 10035`` (WSAEWOULDBLOCK:
      Windows has no EINPROGRESS for a non-blocking connect);
    * connection errors and ``SO_ERROR`` carry WSA codes (10054, 10061, ...).

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
        self._on_refusals: Any = None
        self._consecutive_refusals = 0

    @classmethod
    def wrap(cls, sock: socket.socket) -> WindowsSocket:
        """Take over *sock*'s fd (``sock`` is detached and unusable after)."""
        new: WindowsSocket = _rewrap(cls, sock)
        return new

    def on_refusals(self, limit: int, callback: Any) -> None:
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

    def send(self, data: ReadableBuffer, flags: int = 0, /) -> int:
        n = _as_bytes_view(data).nbytes
        self.send_sizes.append(n)
        if n > WINDOWS_SEND_LIMIT:
            # What Winsock does with a non-blocking send larger than its
            # buffers: fail the whole call, send nothing.
            self.refused += 1
            self._consecutive_refusals += 1
            limit = self._refusal_limit
            if limit is not None and self._consecutive_refusals == limit:
                self._on_refusals()
            raise wsa_error(WSAENOBUFS, OSError, "[WinError 10055] No buffer space available")
        self._consecutive_refusals = 0
        try:
            return super().send(data, flags)
        except OSError as exc:
            raise self._translate(exc) from None

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        try:
            n = super().recv_into(buffer, nbytes, flags)
        except OSError as exc:
            raise self._translate(exc) from None
        self.bytes_received += n
        return n

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        try:
            data = super().recv(bufsize, flags)
        except OSError as exc:
            raise self._translate(exc) from None
        self.bytes_received += len(data)
        return data

    def connect(self, address: Any, /) -> None:
        # A non-blocking connect on Windows fails at once with WSAEWOULDBLOCK
        # (POSIX says EINPROGRESS); the outcome shows later as writability
        # (success) or in the exceptional set with SO_ERROR set (failure).
        try:
            super().connect(address)
        except OSError as exc:
            raise self._translate(exc) from None

    @overload
    def getsockopt(self, level: int, optname: int, /) -> int: ...

    @overload
    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...

    def getsockopt(self, level: int, optname: int, buflen: int | None = None, /) -> int | bytes:
        if buflen is not None:
            return super().getsockopt(level, optname, buflen)
        value = super().getsockopt(level, optname)
        if level == socket.SOL_SOCKET and optname == socket.SO_ERROR and value:
            # Winsock's SO_ERROR is a WSA code (10061 for a refused connect).
            return _TO_WSA.get(value, (value, OSError))[0]
        return value


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
    """A real socket that misbehaves on a schedule (see :class:`Fault`).

    ``send_faults`` and ``recv_faults`` are consumed one token per call
    (``recv_into`` and ``recv`` share ``recv_faults``); once empty, calls
    behave. ``sends`` records every ``send`` call; ``log`` is a readable
    trace of every call (for failure messages).
    """

    send_faults: deque[Fault]
    recv_faults: deque[Fault]
    sends: list[SendCall]
    log: list[str]
    bytes_received: int

    def __init__(
        self,
        family: int = -1,
        type: int = -1,
        proto: int = -1,
        fileno: int | None = None,
    ) -> None:
        super().__init__(family, type, proto, fileno)
        self.send_faults = deque()
        self.recv_faults = deque()
        self.sends = []
        self.log = []
        self.bytes_received = 0

    @classmethod
    def wrap(
        cls,
        sock: socket.socket,
        send_faults: Iterable[Fault] = (),
        recv_faults: Iterable[Fault] = (),
    ) -> ChaosSocket:
        """Take over *sock*'s fd (``sock`` is detached) with these schedules."""
        new: ChaosSocket = _rewrap(cls, sock)
        new.send_faults.extend(send_faults)
        new.recv_faults.extend(recv_faults)
        return new

    def send(self, data: ReadableBuffer, flags: int = 0, /) -> int:
        view = _as_bytes_view(data)
        fault = self.send_faults.popleft() if self.send_faults else OK
        call = SendCall(view.nbytes, view[:PREFIX].tobytes(), fault)
        self.sends.append(call)
        try:
            exc = fault.exception()
            if exc is not None:
                raise exc
            if fault.kind == "short" and fault.arg < view.nbytes:
                call.sent = super().send(view[: fault.arg], flags)
            else:
                call.sent = super().send(view, flags)
        except OSError as exc:
            call.error = type(exc).__name__
            self.log.append(repr(call))
            raise
        self.log.append(repr(call))
        return call.sent

    def _recv_fault(self, size: int) -> int:
        """Apply the next recv fault: raise, or return the size to ask for."""
        fault = self.recv_faults.popleft() if self.recv_faults else OK
        if fault.kind in ("nobufs", "wsa_nobufs", "want_read", "want_write"):
            fault = OK  # send-side (or TLS) faults: meaningless on a plain recv
        exc = fault.exception()
        if exc is not None:
            self.log.append(f"<recv {size} B [{fault!r}] -> {type(exc).__name__}>")
            raise exc
        if fault.kind == "short":
            size = min(size, fault.arg)
        self.log.append(f"<recv {size} B [{fault!r}]>")
        return size

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        if not nbytes:
            nbytes = _as_bytes_view(buffer).nbytes
        n = super().recv_into(buffer, self._recv_fault(nbytes), flags)
        self.bytes_received += n
        return n

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        data = super().recv(self._recv_fault(bufsize), flags)
        self.bytes_received += len(data)
        return data

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


# ------------------------------------------------------------------ TLS


@dataclass(frozen=True)
class _Retry:
    """What a failed TLS send was handed: its size and its bytes (all of them
    up to :data:`_RETRY_FULL`; above that, samples — a big send is retried
    thousands of times under a tiny socket buffer, and copying it all each
    time would dominate the test)."""

    nbytes: int
    samples: tuple[tuple[int, bytes], ...]

    @classmethod
    def of(cls, view: memoryview) -> _Retry:
        n = view.nbytes
        if n <= _RETRY_FULL:
            return cls(n, ((0, view.tobytes()),))
        step = n // 16
        offsets = [0, *(i * step for i in range(1, 16)), n - 4096]
        return cls(n, tuple((o, view[o : o + 4096].tobytes()) for o in offsets))

    def mismatch(self, view: memoryview) -> str:
        """Why *view* is not a valid retry of this send ('' if it is)."""
        if view.nbytes < self.nbytes:
            return f"{view.nbytes} bytes handed, the failed send had {self.nbytes}"
        for offset, expected in self.samples:
            got = view[offset : offset + len(expected)]
            if got != expected:
                return (
                    f"different bytes at offset {offset}: {got[:16].tobytes()!r}..., "
                    f"the failed send had {expected[:16]!r}..."
                )
        return ""


#: Failed TLS sends up to this size are remembered whole.
_RETRY_FULL = 256 * KiB


@dataclass
class TLSChaos:
    """The schedule and the record of one :class:`ChaosSSLSocket`.

    ``send_faults`` / ``recv_faults`` / ``handshake_faults`` are consumed one
    token per call. A ``want_read`` in ``handshake_faults`` is only injected
    when OpenSSL's last real answer was want-read too (a spurious want-read
    while OpenSSL has something to *send* would stall both peers — no real
    TLS stack does that); otherwise it is skipped.
    """

    send_faults: deque[Fault] = field(default_factory=deque)
    recv_faults: deque[Fault] = field(default_factory=deque)
    handshake_faults: deque[Fault] = field(default_factory=deque)
    #: Readable trace of every call.
    log: list[str] = field(default_factory=list)
    #: Broken OpenSSL retry rules (must stay empty).
    violations: list[str] = field(default_factory=list)
    #: Want-read / want-write raised by OpenSSL itself (not injected) on send.
    real_send_wants: int = 0
    #: Want-read / want-write injected on send.
    injected_send_wants: int = 0
    #: Bytes of every send OpenSSL accepted, in order (when ``keep_sent``).
    sent: bytearray = field(default_factory=bytearray)
    #: Keep a copy of the accepted bytes in ``sent``.
    keep_sent: bool = False
    #: The size of every send call, in order.
    send_sizes: list[int] = field(default_factory=list)
    #: Bytes returned by ``recv_into`` so far (decrypted).
    bytes_received: int = 0
    # The last send that failed with want-read/want-write: the next send must
    # start with exactly its bytes (OpenSSL's retry rule).
    _retry: _Retry | None = None
    _last_handshake_want_read: bool = False


class ChaosSSLSocket(ssl.SSLSocket):
    """An ``SSLSocket`` that injects want-read/want-write and checks retries.

    Made by ``context.wrap_socket`` when ``context.sslsocket_class`` is this
    class (:func:`chaos_context`); ``chaos`` is attached afterwards (by
    :class:`ChaosSSLIOStream`). With ``chaos`` None it is a plain SSLSocket.
    """

    chaos: TLSChaos | None = None

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        plan = self.chaos
        if plan is None:
            return super().send(data, flags)
        view = _as_bytes_view(data)
        plan.send_sizes.append(view.nbytes)
        retry = plan._retry
        # OpenSSL (SSL_write): after WANT_WRITE/WANT_READ the call must be
        # repeated with the same bytes (a moved buffer is accepted, and more
        # bytes after them, but not fewer or different ones).
        if retry is not None:
            problem = retry.mismatch(view)
            if problem:
                plan.violations.append(f"send retried after want-*: {problem}")
        fault = plan.send_faults.popleft() if plan.send_faults else OK
        exc = fault.exception() if fault.kind in ("want_read", "want_write", "eintr") else None
        if exc is not None:
            plan.injected_send_wants += isinstance(exc, ssl.SSLError)
            if isinstance(exc, ssl.SSLError):
                plan._retry = _Retry.of(view)
            plan.log.append(f"<tls send {view.nbytes} B [{fault!r}]>")
            raise exc
        try:
            sent = super().send(view, flags)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError) as real:
            plan.real_send_wants += 1
            plan._retry = _Retry.of(view)
            plan.log.append(f"<tls send {view.nbytes} B -> real {type(real).__name__}>")
            raise
        plan._retry = None
        if plan.keep_sent:
            plan.sent += view[:sent]
        plan.log.append(f"<tls send {view.nbytes} B -> {sent}>")
        return sent

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        plan = self.chaos
        if plan is not None and plan.recv_faults:
            fault = plan.recv_faults.popleft()
            exc = fault.exception() if fault.kind in ("want_read", "want_write", "eintr") else None
            plan.log.append(f"<tls recv [{fault!r}]>")
            if exc is not None:
                raise exc
            if fault.kind == "short":
                size = nbytes or _as_bytes_view(buffer).nbytes
                nbytes = min(size, fault.arg)
        n = super().recv_into(buffer, nbytes, flags)
        if plan is not None:
            plan.bytes_received += n
        return n

    def do_handshake(self, block: bool = False) -> None:
        plan = self.chaos
        if plan is not None and plan.handshake_faults:
            fault = plan.handshake_faults.popleft()
            if fault.kind in ("want_write", "eintr") or (
                fault.kind == "want_read" and plan._last_handshake_want_read
            ):
                plan.log.append(f"<tls handshake [{fault!r}]>")
                exc = fault.exception()
                assert exc is not None
                raise exc
        try:
            super().do_handshake(block)
        except ssl.SSLWantReadError:
            if plan is not None:
                plan._last_handshake_want_read = True
            raise
        except ssl.SSLWantWriteError:
            if plan is not None:
                plan._last_handshake_want_read = False
            raise


def chaos_context(context: ssl.SSLContext) -> ssl.SSLContext:
    """Make *context* create :class:`ChaosSSLSocket` objects (returns it)."""
    context.sslsocket_class = ChaosSSLSocket
    return context


class ChaosSSLIOStream(SSLIOStream):
    """An ``SSLIOStream`` whose TLS socket is a :class:`ChaosSSLSocket` with ``chaos``.

    Pass ``chaos=TLSChaos(...)`` (consumed by the constructor); the
    ``ssl_options`` context gets its ``sslsocket_class`` set.
    """

    def __init__(self, *args: Any, chaos: TLSChaos | None = None, **kwargs: Any) -> None:
        #: The schedule and record of this stream's TLS socket.
        self.chaos = chaos if chaos is not None else TLSChaos()
        options = kwargs.get("ssl_options")
        if isinstance(options, ssl.SSLContext):
            chaos_context(options)
        super().__init__(*args, **kwargs)

    def _wrap_socket(self, sock: socket.socket) -> ssl.SSLSocket:
        wrapped = super()._wrap_socket(sock)
        if not isinstance(wrapped, ChaosSSLSocket):
            raise TypeError(
                "ChaosSSLIOStream needs an ssl_options SSLContext (its sslsocket_class "
                f"is set to ChaosSSLSocket); the wrapped socket is a {type(wrapped).__name__}"
            )
        wrapped.chaos = self.chaos
        return wrapped


# ------------------------------------------------------------------ waiting


def wait_with_progress(
    waiter: Any,
    progress: Callable[[], int],
    stall: float = 10.0,
    limit: float = 120.0,
) -> Any:
    """``waiter.wait()``, failing as soon as *progress()* stops moving.

    *waiter* is a ``support.Waiter`` (or subclass). A big transfer may take a
    while, but a stuck one shows at once: no new byte for *stall* seconds
    fails the test (``LoopTimeout``), as does *limit* seconds in all.
    Returns what ``waiter.wait`` returns.
    """
    from support import LoopTimeout

    deadline = time.monotonic() + limit
    last = progress()
    while waiter.calls < waiter.expected:
        try:
            return waiter.wait(timeout=stall)
        except LoopTimeout:
            now = progress()
            if now == last:
                raise LoopTimeout(
                    f"no progress for {stall}s (stuck at {now}): "
                    f"{waiter.calls} of {waiter.expected} events"
                ) from None
            if time.monotonic() > deadline:
                raise
            last = now
    return waiter.values[-1] if waiter.values else None
