"""The TLS fault socket: :class:`ChaosSSLSocket`, its plan :class:`TLSChaos`, the stream.

OpenSSL's rule for a non-blocking ``SSL_write`` (``SSL_write(3)``, "WARNINGS"
and ``SSL_get_error(3)``): after it fails with ``SSL_ERROR_WANT_READ`` or
``SSL_ERROR_WANT_WRITE``, the call must be repeated *with the same
arguments*. :class:`ChaosSSLSocket` injects those conditions on a schedule
and records every retry that breaks the rule.
"""

from __future__ import annotations

import math
import random
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iostream.stream import SSLIOStream
from iostream.testing._sockets import (
    EINTR,
    OK,
    Fault,
    _as_bytes_view,
    _recorders,
    format_schedule,
    short,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = ["ChaosSSLIOStream", "ChaosSSLSocket", "TLSChaos", "chaos_context"]

KiB = 1024

WANT_READ = Fault("want_read")
WANT_WRITE = Fault("want_write")


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

    ``send_faults`` (``send``, ``sendall``, ``write``) / ``recv_faults``
    (``recv``, ``recv_into``, ``read``) / ``handshake_faults`` are consumed
    one token per call. A ``want_read`` in ``handshake_faults`` is only
    injected when OpenSSL's last real answer was want-read too (a spurious
    want-read while OpenSSL has something to *send* would stall both peers —
    no real TLS stack does that); otherwise it is skipped. Likewise a
    ``want_read`` or ``want_write`` for a receive (scheduled or drawn from
    the seed) is not raised while OpenSSL holds decrypted bytes
    (``pending() > 0``): ``SSL_read`` returns those first. The token is
    consumed all the same (the schedule does not depend on timing), the call
    behaves as ``ok``, and ``log`` shows it as ``<tls recv [want_read -> ok:
    99 B pending]>``.
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
    #: Bytes returned by ``recv``, ``recv_into`` and ``read`` so far (decrypted).
    bytes_received: int = 0
    #: With a seed, calls past the explicit schedules draw their faults from
    #: ``random.Random`` seeded with it: a send gets ``want_write`` or
    #: ``eintr``, a receive ``want_read`` or a short read, each call with
    #: probability *want_rate* (handshakes are left alone).
    seed: int | str | None = None
    #: Probability of a drawn fault per call (with ``seed``).
    want_rate: float = 0.2
    # The last send that failed with want-read/want-write: the next send must
    # start with exactly its bytes (OpenSSL's retry rule).
    _retry: _Retry | None = None
    _last_handshake_want_read: bool = False

    _send_rng: random.Random | None = field(default=None, repr=False)
    _recv_rng: random.Random | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        rate = self.want_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError(f"want_rate must be a number from 0 to 1, got {rate!r}")
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, str))):
            raise TypeError(f"seed must be an int, a str or None, not {type(seed).__name__}")
        if seed is not None:
            self._send_rng = random.Random(f"{seed}:tls-send")
            self._recv_rng = random.Random(f"{seed}:tls-recv")
        self.send_faults = deque(self.send_faults)
        self.recv_faults = deque(self.recv_faults)
        self.handshake_faults = deque(self.handshake_faults)
        for recorder in _recorders:
            recorder.append(self)

    def _next_send_fault(self) -> Fault:
        if self.send_faults:
            return self.send_faults.popleft()
        rng = self._send_rng
        if rng is None or rng.random() >= self.want_rate:
            return OK
        return WANT_WRITE if rng.random() < 0.8 else EINTR

    def _next_recv_fault(self, size: int) -> Fault | None:
        if self.recv_faults:
            return self.recv_faults.popleft()
        rng = self._recv_rng
        if rng is None or rng.random() >= self.want_rate:
            return None
        if rng.random() < 0.5 or size < 2:
            return WANT_READ
        return short(max(1, min(size - 1, int(2 ** rng.uniform(0, math.log2(size))))))

    def describe(self, limit: int = 200) -> str:
        """A readable record: faults still pending, broken retries, the call trace."""
        seed = "" if self.seed is None else f" seed={self.seed!r}"
        lines = [
            f"TLSChaos{seed}: {len(self.send_sizes)} send calls, "
            f"{self.injected_send_wants} want-* injected on send, "
            f"{self.real_send_wants} raised by OpenSSL"
        ]
        for name in ("send_faults", "recv_faults", "handshake_faults"):
            pending: deque[Fault] = getattr(self, name)
            if pending:
                lines.append(f"  {name} not reached: {format_schedule(list(pending), limit)}")
        for violation in self.violations:
            lines.append(f"  VIOLATION: {violation}")
        trace = self.log[-limit:]
        if trace:
            skipped = len(self.log) - len(trace)
            lines.append(
                "  trace" + (f" (last {len(trace)} of {len(self.log)})" if skipped else "") + ":"
            )
            lines.extend(f"    {entry}" for entry in trace)
        return "\n".join(lines)


class ChaosSSLSocket(ssl.SSLSocket):
    """An ``SSLSocket`` that injects want-read/want-write and checks retries.

    Made by ``context.wrap_socket`` when ``context.sslsocket_class`` is this
    class (:func:`chaos_context`); ``chaos`` is attached afterwards (by
    :class:`ChaosSSLIOStream`). With ``chaos`` None it is a plain SSLSocket.

    Every way in and out goes through the fault path: ``send``, ``sendall``
    (CPython's loop over ``send``) and ``write`` take the next token of
    ``chaos.send_faults``; ``recv``, ``recv_into`` and ``read`` the next of
    ``chaos.recv_faults``; all are recorded in ``chaos.log`` (``<tls send
    ...>``, ``<tls write ...>``, ``<tls recv ...>``, ``<tls read ...>``). A
    call the stdlib makes from inside another (``recv`` calls ``read``)
    takes no second token.

    A want-read or want-write drawn for a *receive* while OpenSSL holds
    decrypted bytes (``pending() > 0``) is not raised: ``SSL_read`` returns
    buffered data without touching the socket, so a real ``SSLSocket``
    never does that, and code that reads until want-read and then waits for
    the fd to be readable would wait for ever. The token is still consumed
    (the schedule stays the same whatever the timing); the call behaves as
    ``ok`` and the log says so: ``<tls recv [want_read -> ok: 99 B pending]>``.
    """

    chaos: TLSChaos | None = None
    # True while a call is inside the fault path: the stdlib's nested call
    # (SSLSocket.recv -> self.read) must not take a second token.
    _chaos_busy: bool = False

    # -- sending -------------------------------------------------------------

    def _chaos_send(self, verb: str, data: ReadableBuffer, call: Callable[[Any], int]) -> int:
        """Run ``call(data)`` after the next send fault; check OpenSSL's retry rule."""
        plan = self.chaos
        if plan is None or self._chaos_busy:
            return call(data)
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
        fault = plan._next_send_fault()
        exc = fault.exception() if fault.kind in ("want_read", "want_write", "eintr") else None
        if exc is not None:
            plan.injected_send_wants += isinstance(exc, ssl.SSLError)
            if isinstance(exc, ssl.SSLError):
                plan._retry = _Retry.of(view)
            plan.log.append(f"<tls {verb} {view.nbytes} B [{fault!r}]>")
            raise exc
        self._chaos_busy = True
        try:
            sent = call(view)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError) as real:
            plan.real_send_wants += 1
            plan._retry = _Retry.of(view)
            plan.log.append(f"<tls {verb} {view.nbytes} B -> real {type(real).__name__}>")
            raise
        finally:
            self._chaos_busy = False
        plan._retry = None
        if plan.keep_sent:
            plan.sent += view[:sent]
        plan.log.append(f"<tls {verb} {view.nbytes} B -> {sent}>")
        return sent

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        """``SSLSocket.send``, after the next send fault; checks OpenSSL's retry rule."""
        return self._chaos_send("send", data, lambda view: ssl.SSLSocket.send(self, view, flags))

    def write(self, data: ReadableBuffer) -> int:
        """``SSLSocket.write``, through the same fault path as :meth:`send`."""
        return self._chaos_send("write", data, lambda view: ssl.SSLSocket.write(self, view))

    # -- receiving -----------------------------------------------------------

    def _chaos_recv(self, verb: str, size: int) -> int | None:
        """Apply the next recv fault: raise, or return the smaller size to ask for (None: as is)."""
        plan = self.chaos
        if plan is None:
            return None
        fault = plan._next_recv_fault(size)
        if fault is None:
            return None
        if fault.kind in ("want_read", "want_write"):
            pending = self.pending()
            if pending > 0:
                # SSL_read hands out decrypted bytes before it reads the
                # socket: no want-* while any are waiting.
                plan.log.append(f"<tls {verb} [{fault!r} -> ok: {pending} B pending]>")
                return None
        plan.log.append(f"<tls {verb} [{fault!r}]>")
        exc = fault.exception() if fault.kind in ("want_read", "want_write", "eintr") else None
        if exc is not None:
            raise exc
        if fault.kind == "short":
            return min(size, fault.arg)
        return None

    def _chaos_receive(self, verb: str, size: int, call: Callable[[int], Any]) -> Any:
        """Run ``call(n)`` after the next recv fault (*n*: *size*, or a short
        fault's count); count what it received (bytes, or a count)."""
        plan = self.chaos
        assert plan is not None
        limit = self._chaos_recv(verb, size)
        self._chaos_busy = True
        try:
            got = call(size if limit is None else limit)
        finally:
            self._chaos_busy = False
        plan.bytes_received += got if isinstance(got, int) else len(got)
        return got

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        """``SSLSocket.recv_into``, after the next recv fault."""
        if self.chaos is None or self._chaos_busy:
            return super().recv_into(buffer, nbytes, flags)
        size = nbytes or _as_bytes_view(buffer).nbytes
        n: int = self._chaos_receive(
            "recv", size, lambda n: ssl.SSLSocket.recv_into(self, buffer, n, flags)
        )
        return n

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        """``SSLSocket.recv``, after the next recv fault."""
        if self.chaos is None or self._chaos_busy:
            return super().recv(buflen, flags)
        data: bytes = self._chaos_receive(
            "recv", buflen, lambda n: ssl.SSLSocket.recv(self, n, flags)
        )
        return data

    def read(self, len: int = 1024, buffer: WriteableBuffer | None = None) -> bytes:
        """``SSLSocket.read`` (a count when *buffer* is given), after the next recv fault."""
        if self.chaos is None or self._chaos_busy:
            return super().read(len, buffer)
        size = len
        if buffer is not None:
            room = _as_bytes_view(buffer).nbytes
            size = room if size <= 0 or size > room else size
        got: bytes = self._chaos_receive(
            "read", size, lambda n: ssl.SSLSocket.read(self, n, buffer)
        )
        return got

    def do_handshake(self, block: bool = False) -> None:
        """``SSLSocket.do_handshake``, after the next handshake fault."""
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
