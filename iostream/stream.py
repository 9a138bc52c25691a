"""The stream core: BaseIOStream, and IOStream / SSLIOStream on sockets.

Layout (Tornado's ``BaseIOStream`` seam; h11's "transitions in one place"):

* :class:`BaseIOStream` holds everything that does not depend on what the
  bytes travel over: the buffers, the pending read, the trampoline, the
  events to watch, closing, Futures. It reaches the fd only through four
  methods, the *transport seam*: ``read_from_fd(view) -> int | None``
  (bytes received, 0 at EOF, None if it would block), ``write_to_fd(view)
  -> int`` (bytes sent, 0 if it would block), ``get_fd_error() -> OSError |
  None`` and ``close_fd()``. Errors other than "not now" are raised.
* :class:`IOStream`: a socket (connect, TCP_NODELAY, SO_ERROR).
* :class:`SSLIOStream`: TLS over that socket: the seam methods map
  OpenSSL's want-read / want-write, plus the handshake. ``start_tls``
  turns an idle IOStream into one.
* :class:`iostream.pipe.PipeIOStream`: the seam on a pipe fd.
* :mod:`iostream._reads` (the pending reads), :mod:`iostream._buffer` (the
  byte queues, with their cost tables), :mod:`iostream._tls` (how
  ``ssl_options`` become a context).

State (:class:`StreamState`), every transition made here::

    NEW --connect()--> CONNECTING --> [HANDSHAKING -->] OPEN --> CLOSED
      \\_____________ (an error or close(), from any state) ____/

* ``NEW``: a socket not connected yet. Nothing is watched; reads, writes
  and a close callback may be set up and wait for ``connect``.
* ``CONNECTING``: watched for WRITE; reads and writes wait.
* ``HANDSHAKING`` (TLS only): watched for READ or WRITE as OpenSSL asks.
* ``OPEN``: data flows. ``CLOSED``: final; ``error`` says why (None for a
  clean close); buffered data still satisfies reads.

What is watched is decided by one rule, :meth:`BaseIOStream._wanted_events`:
in ``OPEN``, READ while a read is pending or (with a close callback, on an
fd that can be read) the buffer has room, WRITE while bytes are queued or the transport must write
to go on (``_needs_write``: TLS renegotiation); ERROR always.

Invariants between the helper fields:

* at most one read is pending: ``_pending`` (waiting for data) or
  ``_completed_read`` (its data taken, its callback not yet run), never both;
* ``_events`` is None exactly when the stream is not registered with the
  loop (NEW, CLOSED, parked after a hang-up, or never needed);
* ``_bytes_sent <= _bytes_queued``; ``_write_buffer.size`` is their
  difference while OPEN; each write callback runs once ``_bytes_sent``
  reaches the total it was queued at;
* while a read has a ``target`` (a direct read), the read buffer is empty;
* ``_draining`` is True only inside :meth:`_drain`; user code runs only
  from there (or from a loop callback), so callbacks never recurse.

Callbacks never recurse. Everything the stream calls back — read, write,
connect and close callbacks — runs from one loop, :meth:`BaseIOStream._drain`
(the trampoline), entered from the I/O handler or from one scheduled loop
callback. A read issued inside a callback only records the pending read;
the trampoline satisfies it on its next turn, so a million reads chained on
buffered data run in a flat loop. A read or write issued from outside a
callback never calls back before it returns.

Futures. Each method that takes a callback returns an awaitable Future
(from ``io_loop.create_future()``) when given none. A Future resolves with
what the callback would get; it fails with :class:`StreamClosedError`
(``real_error`` is what closed the stream). The read whose own limit closed
the stream fails with an error that is both a :class:`StreamClosedError`
(as in Tornado) and an :class:`UnsatisfiableReadError` /
:class:`StreamBufferFullError` (as docs/guarantees.md lists), so either ``except`` works. The
TLS handshake's own Futures fail with the ``ssl.SSLError`` itself. A Future
failed by a close is marked retrieved: nobody awaiting it logs nothing.
Setting a Future's result runs no user code, so a read that the buffer
satisfies resolves its Future at once (no trampoline turn).

Cancellation: cancelling the Future of a pending read (``asyncio.wait_for``
timing out, a task cancelled) withdraws that read; bytes it had not taken
stay buffered for the next read, and the stream stays open. (A read whose
Future already has its result owns those bytes: cancelling the awaiting
task after that loses them, as in asyncio and Tornado.) A cancelled
``read_into`` lets go of the caller's buffer before the awaiting code
resumes (a done callback of its Future withdraws it): the stream never
writes into it again, and the bytes it had received move to the stream's
buffer. Cancelling a write or connect Future changes nothing on the wire.

Back-pressure and read-ahead (what is received, and when). The stream
receives only while someone wants the data:

* a read is pending: ``recv`` calls of up to ``read_chunk_size`` bytes (256
  KiB once a large message is accumulating), never past
  ``max_buffer_size``; after each, the pending read takes what it can. Once
  it completes and no read follows from its callback, receiving stops;
* no read pending, but a close callback is set: the stream keeps
  receiving until the buffer holds ``max_buffer_size`` bytes (that is how
  an idle stream notices the peer's close: docs/guarantees.md), then stops;
* no read pending and no close callback: no ``recv`` at all.

When receiving stops, READ is no longer watched (lazily: it is dropped at
the first READ event that finds no read pending, which receives nothing;
see :meth:`BaseIOStream._update_events`): the kernel's buffers fill and TCP
flow control pushes back on the peer. A stream closes with
:class:`StreamBufferFullError` only when the buffer holds
``max_buffer_size`` bytes and the pending read still cannot complete (a
``read_until_close`` whose data is exactly ``max_buffer_size`` bytes asks
for one byte more first: EOF there means exactly the limit, no overflow).
Memory per connection is therefore bounded by ``max_buffer_size`` (the
read buffer; with no close callback and no read pending, nothing is read
ahead) plus ``max_write_buffer_size`` (what the application queued) plus
the one ``recv`` scratch buffer of ``SCRATCH_SIZE`` bytes shared by every
stream of a thread.

Hot-path inlinings, each justified by a benchmark figure (``python
bench/callgrind.py lines iostream``: user-space instructions per line
received, load independent; bench/RESULTS.md). Keep each copy in step with
the code it duplicates:

=================================  ============================================
inlined where                      why (figure)
=================================  ============================================
``ReadBuffer.take_through``'s      the line fast path runs once per line; the
head form, in ``read_until``       call cost about a tenth of a line
``_completed`` (queue the          measured in this restructuring: 7,367
callback, or resolve the Future),  instructions per line with the call, 6,967
in ``read_until``'s fast path      inlined (6,879 before the restructuring)
``_scratch.view`` attribute read   a thread-local read, not a call, per recv
in ``_handle_read``
recycled ``_ReadUntil`` object     a line protocol waits for data after nearly
(``_spare_read_until``)            every line: one allocation saved each time
``_resolved`` (a done Future), in  ``await read_until`` on buffered lines, with
``read_until``'s fast path; and    the argument check below: 1.29 M to 1.78 M
``IOLoop.create_future`` a         lines/s (500,000 lines over a socketpair,
``functools.partial`` of           3 runs each; the partial alone about +6%)
``asyncio.Future`` on the native
loop
``_send`` in ``_send_now``;        the echo path, one Python call less each per
``ReadBuffer.append``'s empty      message (``tests/test_stream_cost.py``
form in ``_handle_read``;          counts them: 16 to 11 calls per message with
``take_through``'s head form in    callbacks, 26 to 17 awaited, with the
``_ReadUntil.complete``;           loop's two below). Callgrind
``_start_read``'s callback and     (``bench/callgrind.py echo``): 33,624 to
awaited cases in ``read_until``;   30,113 instructions per round trip with
and ``_update_events`` answering   callbacks, 51,695 to 44,675 awaited. The
"no change" without                benchmark (``--workloads echo``): 1.10x to
``_wanted_events`` (the rule's     1.38x of asyncio streams (0.89x to 1.17x of
commonest answer, not a copy of    uvloop streams); awaited 0.97x to 1.10x
the rule)
``add_callback`` in                as above: every Task step of a coroutine on
``IOLoop.call_soon``;              this loop is a ``call_soon`` callback
``_run_callback`` in the loop's
callback queue (iostream.ioloop)
=================================  ============================================

Not hot-path copies, but fixed for the same figures: ``read_until(delim)``
without a callback used to take the slow argument check on every call
(``callable(None)`` is false); and READ is unwatched lazily
(:meth:`BaseIOStream._update_events`): an awaited request/response used to
cost two ``epoll_ctl`` per message, which took the await echo server from
0.75x to 0.93x of asyncio streams (``python -m iostream bench --workloads
echo``).

Not inlined: the transport seam. ``_handle_read`` calls ``read_from_fd``
once per ``recv`` (not per line), which the figures above include. ``await
read_until`` on buffered lines still costs about 1.6x the callback chain
(560 against 355 ns per line here): one Future per read, about 150 ns to
make and resolve, plus resuming the coroutine.

Costs are linear in the bytes moved; see :mod:`iostream._buffer`.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import functools
import logging
import mmap
import numbers
import re
import socket
import ssl
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, overload

from iostream._buffer import ReadBuffer, WriteBuffer
from iostream._errors import (
    StreamBufferFullError,
    StreamClosedError,
    UnsatisfiableReadError,
    read_closed_error,
)
from iostream._platform import (
    _WINDOWS,
    WSAENOBUFS,
    error_from_code,
    is_connection_lost,
    is_not_connected,
    is_would_block,
)
from iostream._reads import (
    DataCallback,
    _PendingRead,
    _ReadBytes,
    _ReadInto,
    _ReadUntil,
    _ReadUntilClose,
    _ReadUntilRegex,
)
from iostream._tls import make_ssl_context
from iostream.ioloop import IOLoop, app_log
from iostream.pollers import ERROR, READ, WRITE

__all__ = [
    "DIRECT_READ_THRESHOLD",
    "MAX_RECVS_PER_EVENT",
    "SCRATCH_SIZE",
    "WINDOWS_WRITE_CHUNK_SIZE",
    "BaseIOStream",
    "IOStream",
    "SSLIOStream",
    "StreamBufferFullError",
    "StreamClosedError",
    "StreamState",
    "UnsatisfiableReadError",
    "check_stream_options",
    "make_ssl_context",
]

#: The send cap Windows needs: a ``send`` larger than the socket buffer does
#: not send part of it, it fails with WSAENOBUFS. 128 KiB always fits.
WINDOWS_WRITE_CHUNK_SIZE = 128 * 1024

#: A ``read_bytes`` at least this large (and within ``max_buffer_size``) is
#: received straight into one buffer of its final size: no intermediate
#: chunks, no re-joining, and ``recv`` calls as large as the kernel allows.
DIRECT_READ_THRESHOLD = 1024 * 1024

#: Size of the per-thread scratch buffer ``recv_into`` fills. Shared by all
#: streams of a thread (the data is copied out at once), so an idle
#: connection costs no read buffer at all.
SCRATCH_SIZE = 256 * 1024

#: How many full ``recv`` calls one readiness event may do before the loop
#: gets to serve other fds.
MAX_RECVS_PER_EVENT = 16


class StreamState(enum.Enum):
    """The states of a stream (module docstring: the transitions)."""

    NEW = "new"
    CONNECTING = "connecting"
    HANDSHAKING = "handshaking"
    OPEN = "open"
    CLOSED = "closed"

    def __str__(self) -> str:
        return self.value


# Module-level names: a global lookup is cheaper than an attribute lookup.
_NEW = StreamState.NEW
_CONNECTING = StreamState.CONNECTING
_HANDSHAKING = StreamState.HANDSHAKING
_OPEN = StreamState.OPEN
_CLOSED = StreamState.CLOSED
_READ_ERROR = READ | ERROR

_scratch = threading.local()


def _scratch_view() -> memoryview:
    """This thread's reusable receive buffer (made on first use)."""
    try:
        view: memoryview = _scratch.view
    except AttributeError:
        view = _scratch.view = memoryview(bytearray(SCRATCH_SIZE))
    return view


def _checked_delimiter(delimiter: object, callback: object) -> bytes:
    """Validate read_until's arguments the slow way; return the delimiter as bytes."""
    if isinstance(delimiter, (bytearray, memoryview)):
        delimiter = bytes(delimiter)
    if not isinstance(delimiter, bytes):
        raise TypeError(f"delimiter must be bytes, not {type(delimiter).__name__}")
    if not delimiter:
        raise ValueError("delimiter must not be empty")
    _check_callback(callback, "callback", optional=True)
    return delimiter


def _check_callback(value: object, name: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not callable(value):
        raise TypeError(f"{name} must be callable, not {type(value).__name__}")


def _check_size(value: object, name: str, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


#: The size options of a stream: name -> (smallest value, None allowed).
_STREAM_OPTIONS = {
    "max_buffer_size": (1, False),
    "read_chunk_size": (1, False),
    "max_write_buffer_size": (0, True),
    "write_chunk_size": (1, True),
}
#: The switches of a stream (bool options).
_STREAM_SWITCHES = frozenset({"nodelay"})


def check_stream_options(**options: Any) -> None:
    """Validate IOStream's size options (also for TCPServer's ``stream_kwargs``).

    Raises :class:`TypeError` for an unknown name or a wrong type, and
    :class:`ValueError` for a value too small, naming the option.
    """
    for name, value in options.items():
        if name in _STREAM_SWITCHES:
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
            continue
        if name not in _STREAM_OPTIONS:
            known = ", ".join(sorted([*_STREAM_OPTIONS, *_STREAM_SWITCHES]))
            raise TypeError(f"unknown stream option {name!r}; known: {known}")
        minimum, optional = _STREAM_OPTIONS[name]
        _check_size(value, name, minimum, optional=optional)


class _FutureCallback:
    """A callback that resolves a Future (write, connect, handshake ones).

    ``handshake``: a TLS handshake Future, failed with the ``ssl.SSLError``
    itself rather than :class:`StreamClosedError`.
    """

    __slots__ = ("future", "handshake", "value")

    def __init__(self, future: asyncio.Future[Any], value: Any = None, handshake: bool = False):
        self.future = future
        self.value = value
        self.handshake = handshake

    def __call__(self) -> None:
        future = self.future
        if not future.done():
            future.set_result(self.value)


def _fail_future(future: asyncio.Future[Any], exc: BaseException) -> None:
    """Fail *future* (unless done or cancelled), marked retrieved: a Future
    nobody awaits logs nothing for a stream that closed."""
    if not future.done():
        future.set_exception(exc)
        future.exception()


def _resolved(loop: IOLoop, value: Any) -> asyncio.Future[Any]:
    future = loop.create_future()
    future.set_result(value)
    return future


# -- the stream core ----------------------------------------------------------------


class BaseIOStream:
    """What every stream shares; subclasses supply the transport seam.

    ``BaseIOStream(io_loop=None, max_buffer_size=104857600,
    read_chunk_size=65536, max_write_buffer_size=None,
    write_chunk_size=None)``. *io_loop* ``None`` means
    :meth:`IOLoop.current` at construction. The read buffer never holds
    more than *max_buffer_size* bytes (module docstring: back-pressure);
    *read_chunk_size* is the size of one ``recv``. A ``write`` that would
    queue more than *max_write_buffer_size* bytes raises
    :class:`StreamBufferFullError`. The fd is never handed more than
    *write_chunk_size* bytes at once; ``None`` means 128 KiB on Windows,
    where a larger send fails rather than sending part, and no cap
    elsewhere.

    Subclasses implement :meth:`fileno`, :meth:`close_fd`,
    :meth:`read_from_fd`, :meth:`write_to_fd` and :meth:`get_fd_error`.
    """

    #: A short read means the fd had no more (not so for TLS, where one
    #: read returns at most one record).
    _short_read_drains = True

    #: False for an fd that can only be written (a pipe's write end): no
    #: read-ahead for a close callback, and a hang-up on it is final. A
    #: class attribute (PipeIOStream sets it per stream): one more instance
    #: attribute took IOStream past CPython's 30 shared dict keys, and an
    #: idle connection from 3.5 to 4.8 KiB (``bench --workloads memory``).
    _readable = True

    def __init__(
        self,
        io_loop: IOLoop | None = None,
        max_buffer_size: int = 104857600,
        read_chunk_size: int = 65536,
        max_write_buffer_size: int | None = None,
        write_chunk_size: int | None = None,
    ) -> None:
        if io_loop is not None and not isinstance(io_loop, IOLoop):
            raise TypeError(f"io_loop must be an IOLoop or None, not {type(io_loop).__name__}")
        check_stream_options(
            max_buffer_size=max_buffer_size,
            read_chunk_size=read_chunk_size,
            max_write_buffer_size=max_write_buffer_size,
            write_chunk_size=write_chunk_size,
        )
        #: The loop this stream runs on.
        self.io_loop = io_loop if io_loop is not None else IOLoop.current()
        #: The read buffer's limit in bytes.
        self.max_buffer_size = int(max_buffer_size)
        #: Bytes asked of one ``recv``.
        self.read_chunk_size = min(int(read_chunk_size), self.max_buffer_size)
        #: The write buffer's limit in bytes, or None.
        self.max_write_buffer_size = max_write_buffer_size
        if write_chunk_size is None and _WINDOWS:
            write_chunk_size = WINDOWS_WRITE_CHUNK_SIZE
        #: The most bytes one ``send`` is handed, or None for no cap.
        self.write_chunk_size = write_chunk_size
        #: The exception that closed the stream, or None.
        self.error: BaseException | None = None
        self._state = _OPEN
        self._fd = -1
        # The peer's address, for log messages (None until known).
        self._peer: Any = None
        self._read_buffer = ReadBuffer()
        self._pending: _PendingRead | None = None
        # A read whose data was taken from the buffer at once, waiting for
        # the trampoline to call it back: it still counts as pending.
        self._completed_read: tuple[Callable[[Any], object], Any] | None = None
        self._spare_read_until: _ReadUntil | None = None
        self._write_buffer = WriteBuffer()
        # Write callbacks, with the total of bytes ever queued when each was
        # added: it runs once that many bytes have been sent.
        self._write_callbacks: deque[tuple[int, Callable[[], object]]] = deque()
        self._bytes_queued = 0
        self._bytes_sent = 0
        self._connect_callback: Callable[[], object] | None = None
        self._log_connect_error = False
        self._close_callback: Callable[[], object] | None = None
        self._ready: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._draining = False
        self._drain_scheduled = False
        self._events: int | None = None  # None: not registered with the loop
        # The transport must write before it can go on (TLS: OpenSSL said
        # want-write during a read or the handshake).
        self._needs_write = False
        # A hang-up arrived while the stream was not receiving: watch the fd
        # again only once READ or WRITE is wanted (else the poller would
        # report the hang-up on every iteration).
        self._parked = False
        # READ is unwatched lazily (see _update_events): True once a READ
        # event found nobody wanting the data, so the next update drops it.
        self._read_unwanted = False

    # -- the transport seam --------------------------------------------------

    def fileno(self) -> int:
        """The fd (as it was when the stream was made).

        The stream registers itself with the loop, so
        ``IOLoop.close(all_fds=True)`` closes it through :meth:`close`.
        """
        return self._fd

    def close_fd(self) -> None:
        """Close the fd (the transport's part of :meth:`close`)."""
        raise NotImplementedError

    def read_from_fd(self, view: memoryview) -> int | None:
        """Read into *view*: the count, 0 at EOF, None if it would block."""
        raise NotImplementedError

    def write_to_fd(self, view: memoryview) -> int:
        """Write from *view*: the count sent, 0 if it would block."""
        raise NotImplementedError

    def get_fd_error(self) -> OSError | None:
        """The fd's pending error (a failed connect, a reset), if any."""
        return None

    # -- reads ----------------------------------------------------------------

    @overload
    def read_until(
        self, delimiter: bytes, callback: None = None, max_bytes: int | None = None
    ) -> asyncio.Future[bytes]: ...
    @overload
    def read_until(
        self, delimiter: bytes, callback: DataCallback, max_bytes: int | None = None
    ) -> None: ...
    def read_until(
        self,
        delimiter: bytes,
        callback: DataCallback | None = None,
        max_bytes: int | None = None,
    ) -> asyncio.Future[bytes] | None:
        """The bytes up to and including *delimiter*.

        Calls ``callback(data)``, or returns a Future of it without one.
        With *max_bytes*, the stream closes with
        :class:`UnsatisfiableReadError` if the delimiter is not within that
        many bytes.
        """
        if (
            type(delimiter) is not bytes
            or not delimiter
            or (callback is not None and not callable(callback))
        ):
            delimiter = _checked_delimiter(delimiter, callback)
        if self._pending is not None or self._completed_read is not None:
            self._check_no_read()
        if max_bytes is None:
            buffer = self._read_buffer
            if buffer.size:
                # Satisfied by what is buffered (the line-protocol fast path):
                # take the data now, call back from the trampoline.
                if buffer._acc is None:
                    # ReadBuffer.take_through's head form, inlined: this runs
                    # once per line, and the call costs a tenth of the line.
                    head = buffer._head
                    pos = buffer._pos
                    index = head.find(delimiter, pos)
                    if index >= 0:
                        stop = index + len(delimiter)
                        remaining = buffer.size - (stop - pos)
                        buffer.size = remaining
                        if remaining:
                            buffer._pos = stop
                        else:
                            buffer._head = b""
                            buffer._pos = 0
                        # (_completed, inlined: once per line.)
                        if callback is None:
                            # (_resolved, inlined: once per awaited line.)
                            done = self.io_loop.create_future()
                            done.set_result(head[pos:stop])
                            return done
                        self._completed_read = (callback, head[pos:stop])
                        if not self._draining:
                            self._schedule_drain()
                        return None
                    data = None
                else:
                    data = buffer.take_through(delimiter, 0)
                if data is not None:
                    return self._completed(callback, data)
        else:
            _check_size(max_bytes, "max_bytes", 1)
        future = None
        if callback is None:
            future = self.io_loop.create_future()
            callback = future.set_result
        read = self._spare_read_until
        if read is None:
            read = _ReadUntil(delimiter, callback, max_bytes, future)
        else:
            # Recycle the last one (a line protocol waits for data after
            # nearly every line: this saves an allocation each time).
            self._spare_read_until = None
            read.callback = callback
            read.future = future
            read.delimiter = delimiter
            read.max_bytes = max_bytes
            read.scanned = 0
        if self._state is _CLOSED or (not self._draining and self._read_buffer.size):
            self._start_read(read)
        else:
            # (_start_read's two commonest cases, inlined: a protocol reading
            # its next message from the last one's callback, or a coroutine
            # awaiting it with nothing buffered.)
            self._pending = read
            if not self._draining:
                self._update_events()
        return future

    @overload
    def read_until_regex(
        self,
        regex: bytes | re.Pattern[bytes],
        callback: None = None,
        max_bytes: int | None = None,
    ) -> asyncio.Future[bytes]: ...
    @overload
    def read_until_regex(
        self,
        regex: bytes | re.Pattern[bytes],
        callback: DataCallback,
        max_bytes: int | None = None,
    ) -> None: ...
    def read_until_regex(
        self,
        regex: bytes | re.Pattern[bytes],
        callback: DataCallback | None = None,
        max_bytes: int | None = None,
    ) -> asyncio.Future[bytes] | None:
        """The bytes up to and including the first match of *regex*.

        *regex* is a bytes pattern or a compiled one. Each arriving chunk
        re-runs the search from the start of the buffer (a regex cannot
        resume), as in Tornado: use :meth:`read_until` for plain
        delimiters. *max_bytes* as for :meth:`read_until`.
        """
        if isinstance(regex, bytes):
            pattern = re.compile(regex)
        elif isinstance(regex, re.Pattern) and isinstance(regex.pattern, bytes):
            pattern = regex
        else:
            raise TypeError(
                f"regex must be a bytes pattern or a compiled bytes pattern, not {regex!r}"
            )
        _check_callback(callback, "callback", optional=True)
        _check_size(max_bytes, "max_bytes", 1, optional=True)
        callback, future = self._callback_or_future(callback)
        self._start_read(_ReadUntilRegex(pattern, callback, max_bytes, future))
        return future

    @overload
    def read_bytes(
        self,
        num_bytes: int,
        callback: None = None,
        streaming_callback: DataCallback | None = None,
        partial: bool = False,
    ) -> asyncio.Future[bytes]: ...
    @overload
    def read_bytes(
        self,
        num_bytes: int,
        callback: DataCallback,
        streaming_callback: DataCallback | None = None,
        partial: bool = False,
    ) -> None: ...
    def read_bytes(
        self,
        num_bytes: int,
        callback: DataCallback | None = None,
        streaming_callback: DataCallback | None = None,
        partial: bool = False,
    ) -> asyncio.Future[bytes] | None:
        """The next *num_bytes* bytes.

        With *streaming_callback*, data goes to it as it arrives and the
        result is ``b""``. With *partial*, the read completes with whatever
        is available: at least one byte, at most *num_bytes*.
        """
        _check_size(num_bytes, "num_bytes", 0)
        _check_callback(callback, "callback", optional=True)
        _check_callback(streaming_callback, "streaming_callback", optional=True)
        if self._pending is not None or self._completed_read is not None:
            self._check_no_read()
        if not num_bytes:
            # Nothing to wait for, even on a closed stream.
            return self._completed(callback, b"")
        callback, future = self._callback_or_future(callback)
        read = _ReadBytes(int(num_bytes), callback, streaming_callback, future, bool(partial))
        self._start_read(read)
        return future

    @overload
    def read_into(
        self, buf: Any, callback: None = None, partial: bool = False
    ) -> asyncio.Future[int]: ...
    @overload
    def read_into(
        self, buf: Any, callback: Callable[[int], object], partial: bool = False
    ) -> None: ...
    def read_into(
        self, buf: Any, callback: Callable[[int], object] | None = None, partial: bool = False
    ) -> asyncio.Future[int] | None:
        """Fill the writable buffer *buf*; the result is the byte count.

        Received bytes go straight into *buf* (``recv_into`` on it: no
        intermediate copy); bytes already buffered are copied in once.
        Without *partial* the read completes when *buf* is full; with it,
        as soon as at least one byte is in. Do not touch *buf* until then.
        If the stream closes first, the bytes received so far go back to
        the read buffer (nothing is lost) and the read fails.
        """
        try:
            view = memoryview(buf)
        except TypeError:
            raise TypeError(
                f"buf must be a writable bytes-like object, not {type(buf).__name__}"
            ) from None
        if view.readonly:
            raise TypeError(f"buf must be writable; this {type(buf).__name__} is read-only")
        if not view.c_contiguous:
            raise ValueError("buf must be C-contiguous")
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        _check_callback(callback, "callback", optional=True)
        if self._pending is not None or self._completed_read is not None:
            self._check_no_read()
        buffer = self._read_buffer
        size = len(view)
        if buffer.size >= size or (partial and buffer.size) or not size:
            # Satisfied by what is buffered: one copy into the caller's buffer.
            return self._completed(callback, buffer.take_into(view))
        if self._state is _CLOSED:
            raise StreamClosedError(real_error=self.error)
        callback, future = self._callback_or_future(callback)
        read = _ReadInto(view, callback, future, bool(partial))
        # Invariant: while a read has a target, the read buffer is empty.
        read.filled = buffer.take_into(view)
        self._start_read(read)
        if future is not None and self._pending is read:
            # Cancellation must free the caller's buffer before the caller
            # runs again (it may reuse it): Future callbacks run in the order
            # added, so this one runs before the awaiting task resumes.
            future.add_done_callback(functools.partial(self._read_into_done, read))
        return future

    def _read_into_done(self, read: _ReadInto, future: asyncio.Future[int]) -> None:
        """A read_into's Future is done: if cancelled while pending, withdraw it now."""
        if future.cancelled() and self._pending is read:
            self._withdraw(read)
            if not self._draining:
                self._update_events()

    @overload
    def read_until_close(
        self, callback: None = None, streaming_callback: DataCallback | None = None
    ) -> asyncio.Future[bytes]: ...
    @overload
    def read_until_close(
        self, callback: DataCallback, streaming_callback: DataCallback | None = None
    ) -> None: ...
    def read_until_close(
        self,
        callback: DataCallback | None = None,
        streaming_callback: DataCallback | None = None,
    ) -> asyncio.Future[bytes] | None:
        """Everything until the peer closes.

        With *streaming_callback*, data goes to it as it arrives and the
        result is what did not (``b""`` when everything streamed). On a
        closed stream, delivers what is buffered, whatever closed it.
        """
        _check_callback(callback, "callback", optional=True)
        _check_callback(streaming_callback, "streaming_callback", optional=True)
        callback, future = self._callback_or_future(callback)
        self._start_read(_ReadUntilClose(callback, streaming_callback, future))
        return future

    # -- writes ----------------------------------------------------------------

    @overload
    def write(
        self, data: bytes | bytearray | memoryview, callback: None = None
    ) -> asyncio.Future[None]: ...
    @overload
    def write(
        self, data: bytes | bytearray | memoryview, callback: Callable[[], object]
    ) -> None: ...
    def write(
        self, data: bytes | bytearray | memoryview, callback: Callable[[], object] | None = None
    ) -> asyncio.Future[None] | None:
        """Queue *data* (any bytes-like object) and send it as the fd allows.

        *callback* (or the returned Future, without one) runs once this data
        and everything written before it has been handed to the kernel.
        Raises :class:`StreamClosedError` on a closed stream, and
        :class:`StreamBufferFullError` (queuing nothing) if the write would
        pass ``max_write_buffer_size``.

        Large writes (16 KiB or more) are queued as views of the caller's
        object, not copied: do not change a ``bytearray`` you passed to
        ``write`` before its callback runs.
        """
        if callback is not None and not callable(callback):
            _check_callback(callback, "callback")
        if self._state is _CLOSED:
            raise StreamClosedError(real_error=self.error)
        if isinstance(data, bytes):
            size = len(data)
        else:
            data = self._as_view(data)
            size = data.nbytes
        buffer = self._write_buffer
        limit = self.max_write_buffer_size
        if limit is not None and buffer.size + size > limit:
            raise StreamBufferFullError(
                f"write of {size} bytes would pass max_write_buffer_size={limit} "
                f"({buffer.size} bytes queued)"
            )
        future = None
        if callback is None:
            future = self.io_loop.create_future()
        if size:
            self._bytes_queued += size
            if buffer.size == 0 and self._state is _OPEN:
                rest = self._send_now(data, size)
                if self._state is _CLOSED:
                    # The send failed: `error` says why. (The callback never runs.)
                    if future is not None:
                        _fail_future(future, StreamClosedError(real_error=self.error))
                    return future
                if rest is not None:
                    buffer.append(rest)
            else:
                buffer.append(data)
        all_sent = self._bytes_sent >= self._bytes_queued and self._state is _OPEN
        if future is not None and all_sent and not self._write_callbacks and not self._ready:
            # Runs no user code: resolve now. (Not while an earlier write's
            # callback waits in _ready: an awaited done Future resumes its
            # coroutine at once, which would pass that callback.)
            future.set_result(None)
        else:
            if future is not None:
                callback = _FutureCallback(future)
            self._write_callbacks.append((self._bytes_queued, callback))  # type: ignore[arg-type]
            if all_sent:
                # (Not before the connection exists: an empty write while
                # connecting waits for it, and never runs if it fails.)
                self._ready_write_callbacks()
        if not self._draining:
            if self._ready:
                self._schedule_drain()
            self._update_events()
        return future

    # -- closing ----------------------------------------------------------------

    def set_close_callback(self, callback: Callable[[], object] | None) -> None:
        """Call *callback* (no arguments) once, when the stream closes.

        While a close callback is set, an idle stream keeps listening, so it
        notices the peer's close (buffering up to ``max_buffer_size``).
        """
        _check_callback(callback, "callback", optional=True)
        self._close_callback = callback
        if self._state is _CLOSED:
            if callback is not None:
                self._schedule_drain()
        elif not self._draining:
            self._update_events()

    def close(self, exc_info: BaseException | bool | tuple[Any, ...] | None = None) -> None:
        """Close the stream and its fd. Idempotent; never raises.

        *exc_info*: an exception to record as ``error`` (``True``: the one
        being handled). Reads that buffered data satisfies still complete,
        then pending Futures fail and the close callback runs (once).
        """
        if self._state is _CLOSED:
            return
        if exc_info is True:
            exc_info = sys.exc_info()[1]
        elif isinstance(exc_info, tuple):  # Tornado's (type, value, traceback)
            exc_info = exc_info[1]
        if isinstance(exc_info, BaseException) and self.error is None:
            self.error = exc_info
        self._state = _CLOSED
        if self._events is not None:
            self._events = None
            try:
                self.io_loop.remove_handler(self)
            except Exception as exc:  # an fd closed behind our back (EBADF)
                app_log.debug("remove_handler failed closing %r: %s", self, exc)
        try:
            self.close_fd()
        except Exception as exc:  # never raise from close(): the callback must run
            app_log.debug("closing the fd of %r failed: %s", self, exc)
        self._write_buffer.clear()
        for _, callback in self._write_callbacks:
            self._fail_callback(callback)
        self._write_callbacks.clear()
        if self._connect_callback is not None:
            self._fail_callback(self._connect_callback)
            self._connect_callback = None
        self._on_close()
        pending = self._pending
        if (
            pending is not None
            and pending.target is not None
            and not (pending.partial and pending.filled)
        ):
            # Hand the partial direct read back to the buffer (nothing is
            # lost): it cannot complete now. (A partial read_into with bytes
            # in completes from the trampoline.)
            self._withdraw(pending)
            if pending.future is not None:
                _fail_future(pending.future, self._close_exception(False))
        self._schedule_drain()

    def _on_close(self) -> None:
        """Hook: a transport's own clean-up at close (TLS handshake waiters)."""

    def _close_exception(self, handshake: bool) -> BaseException:
        """What a Future pending at close fails with."""
        error = self.error
        if handshake and isinstance(error, ssl.SSLError):
            return error
        return StreamClosedError(real_error=error)

    def _fail_callback(self, callback: Callable[..., object]) -> None:
        if isinstance(callback, _FutureCallback):
            _fail_future(callback.future, self._close_exception(callback.handshake))

    def reading(self) -> bool:
        """True while a read is pending."""
        return self._pending is not None or self._completed_read is not None

    def writing(self) -> bool:
        """True while written bytes wait to be sent."""
        return self._write_buffer.size > 0

    def closed(self) -> bool:
        """True once the stream is closed."""
        return self._state is _CLOSED

    @property
    def state(self) -> StreamState:
        """The stream's :class:`StreamState`."""
        return self._state

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fd={self._fd} {self._state}>"

    # -- read machinery ----------------------------------------------------------

    def _callback_or_future(
        self, callback: Callable[[Any], object] | None
    ) -> tuple[Callable[[Any], object], asyncio.Future[Any] | None]:
        if callback is not None:
            return callback, None
        future = self.io_loop.create_future()
        return future.set_result, future

    def _completed(
        self, callback: Callable[[Any], object] | None, result: Any
    ) -> asyncio.Future[Any] | None:
        """A read that is complete as it is issued: a resolved Future, or the
        callback queued for the trampoline."""
        if callback is None:
            return _resolved(self.io_loop, result)
        self._completed_read = (callback, result)
        if not self._draining:
            self._schedule_drain()
        return None

    def _check_no_read(self) -> None:
        """Raise unless the pending read is one whose Future was cancelled
        (then it is withdrawn: module docstring, Cancellation)."""
        read = self._pending
        if read is not None and read.future is not None and read.future.cancelled():
            self._withdraw(read)
            return
        raise RuntimeError("a read is already pending on this stream")

    def _withdraw(self, read: _PendingRead) -> None:
        """Drop a cancelled read; bytes it had received go back to the buffer."""
        self._pending = None
        target = read.target
        if target is not None and isinstance(read, (_ReadBytes, _ReadInto)):
            with memoryview(target) as view, view[: read.filled] as part:
                if read.filled:
                    self._read_buffer.append(part.tobytes())
            if isinstance(target, mmap.mmap):
                target.close()
            read.target = None
            read.filled = 0

    def _start_read(self, read: _PendingRead) -> None:
        if self._pending is not None or self._completed_read is not None:
            self._check_no_read()
        if self._draining and self._state is not _CLOSED:
            # Inside a stream callback: the trampoline takes it from here.
            self._pending = read
            return
        if self._state is _CLOSED:
            # Only what is buffered can satisfy it now.
            if read.streaming_callback is not None:
                # Every buffered byte goes to the streaming callback, then the
                # final callback gets b"" (Tornado). A read_bytes needing more
                # than is buffered cannot complete: it takes nothing.
                if isinstance(read, _ReadBytes) and self._read_buffer.size < read.remaining:
                    raise StreamClosedError(real_error=self.error)
                self._pending = read
                self._schedule_drain()
                return
            try:
                data = read.complete(self._read_buffer, True)
            except UnsatisfiableReadError:
                data = None
            if data is None:
                raise StreamClosedError(real_error=self.error)
            future = read.future
            if future is not None:
                future.set_result(data)
                return
            self._completed_read = (read.callback, data)
            self._schedule_drain()
            return
        self._pending = read
        if self._read_buffer.size:
            self._schedule_drain()
        elif isinstance(read, _ReadBytes):
            self._prepare_direct_read(read)
        self._update_events()

    def _prepare_direct_read(self, read: _ReadBytes) -> None:
        """For a large read_bytes: allocate its final buffer and receive into it."""
        if (
            read.remaining >= DIRECT_READ_THRESHOLD
            and read.streaming_callback is None
            and not read.partial
            and read.remaining <= self.max_buffer_size
            and read.target is None
            and self._read_buffer.size < read.remaining
        ):
            target = _new_read_target(read.remaining)
            with memoryview(target) as view:
                read.filled = self._read_buffer.take_into(view)
            read.target = target

    def _stream_step(self, read: _PendingRead) -> bool:
        """Give buffered data to a streaming read; True if there was some."""
        buffer = self._read_buffer
        n = buffer.size
        if isinstance(read, _ReadBytes):
            n = min(n, read.remaining)
        if not n:
            return False
        read.streamed(n)
        assert read.streaming_callback is not None
        self._run_user(read.streaming_callback, buffer.take(n))
        return True

    # -- the trampoline ---------------------------------------------------------

    def _schedule_drain(self) -> None:
        if not self._draining and not self._drain_scheduled:
            self._drain_scheduled = True
            self.io_loop.add_callback(self._drain_from_loop)

    def _drain_from_loop(self) -> None:
        self._drain_scheduled = False
        self._drain()
        self._update_events()

    def _drain(self) -> None:
        """Run every callback and satisfiable read, in a flat loop.

        Entered only from the I/O handler or a loop callback, never from
        user code, and never re-entered: a callback that starts a read or a
        write only queues work that this loop picks up. Order: the pending
        read first (while the buffer satisfies it), then queued callbacks
        (connect, write), and once closed, the close callback last.
        """
        if self._draining:
            return
        self._draining = True
        ready = self._ready
        buffer = self._read_buffer
        try:
            while True:
                completed = self._completed_read
                if completed is not None:
                    self._completed_read = None
                    try:
                        completed[0](completed[1])
                    except Exception as exc:
                        self._callback_failed(completed[0], exc)
                    continue
                read = self._pending
                # A read can only progress on buffered bytes, a filled
                # direct-read target, the close, or (streaming) having had
                # all its bytes: don't ask it otherwise.
                if read is not None and (
                    buffer.size
                    or read.target is not None
                    or read.streaming_callback is not None
                    or self._state is _CLOSED
                ):
                    future = read.future
                    if future is not None and future.done():
                        # Cancelled by the awaiting side: withdrawn, its bytes stay.
                        self._withdraw(read)
                        continue
                    if read.streaming_callback is not None and self._stream_step(read):
                        continue
                    try:
                        data = read.complete(buffer, self._state is _CLOSED)
                    except UnsatisfiableReadError as exc:
                        self._pending = None
                        self._log(logging.INFO, "Unsatisfiable read, closing connection", exc)
                        if future is not None:
                            _fail_future(future, read_closed_error(exc))
                        self.close(exc)
                        continue
                    if data is not None:
                        self._pending = None
                        callback = read.callback
                        if read.__class__ is _ReadUntil:
                            self._spare_read_until = read
                        try:
                            callback(data)
                        except Exception as exc:
                            self._callback_failed(callback, exc)
                        continue
                    if self._state is _CLOSED:
                        # Nothing more will arrive: this read never completes.
                        # (A callback's caller learns it from the close callback.)
                        self._pending = None
                        if future is not None:
                            _fail_future(future, self._close_exception(False))
                if ready:
                    callback, args = ready.popleft()
                    try:
                        callback(*args)
                    except Exception as exc:
                        self._callback_failed(callback, exc)
                    continue
                close_callback = self._close_callback
                if close_callback is not None and self._state is _CLOSED:
                    self._close_callback = None
                    self._run_user(close_callback)
                    continue
                break
        finally:
            self._draining = False

    def _run_user(self, callback: Callable[..., object], *args: Any) -> None:
        """Call user code; an exception is logged and closes this stream."""
        try:
            callback(*args)
        except Exception as exc:
            self._callback_failed(callback, exc)

    def _callback_failed(self, callback: Callable[..., object], exc: Exception) -> None:
        app_log.exception("Uncaught exception in %r callback %r", self, callback)
        self.close(exc)

    # -- events ------------------------------------------------------------------

    def _wanted_events(self) -> int:
        """What to watch, by the one rule (module docstring); 0: nothing."""
        state = self._state
        if state is _OPEN:
            events = ERROR
            if self._pending is not None or (
                self._close_callback is not None
                and self._readable
                and self._read_buffer.size < self.max_buffer_size
            ):
                events = READ | ERROR
            if self._write_buffer.size or self._needs_write:
                events |= WRITE
            return events
        if state is _CONNECTING:
            return WRITE | ERROR
        if state is _HANDSHAKING:
            return (WRITE if self._needs_write else READ) | ERROR
        return 0  # NEW, CLOSED: nothing to watch (yet)

    def _update_events(self) -> None:
        """Tell the loop what to watch, if that changed (a syscall otherwise saved).

        READ is dropped lazily: when a read completes and none follows at
        once (``await read_until`` resumes its task on the next loop turn
        and only then reads again), READ stays watched, and is dropped only
        once a READ event finds no read pending (``_read_unwanted``, set by
        :meth:`_handle_read`, which receives nothing then). A request /
        response protocol thus pays no ``epoll_ctl`` per message (before:
        two), and back-pressure costs one extra wake-up: the kernel still
        holds the bytes, and TCP still pushes back.
        """
        current = self._events
        if (
            current == _READ_ERROR
            and self._state is _OPEN
            and not self._write_buffer.size
            and not self._needs_write
            and (self._pending is not None or not (self._read_unwanted or self._parked))
        ):
            # Nothing to tell the loop, the commonest answer (several times
            # per message) found without _wanted_events: READ and ERROR
            # watched, nothing to send, and either a read pending (the rule
            # wants READ | ERROR) or READ not yet found unwanted (kept
            # lazily, below).
            return
        events = self._wanted_events()
        if self._parked and events:
            if not events & (READ | WRITE):
                # Parked (the hang-up was heard once): unwatched, also when
                # ERROR alone was watched already (else it fires every turn).
                if self._events is not None:
                    self._events = None
                    self.io_loop.remove_handler(self)
                return
            self._parked = False
        if events != current and events:
            if current == events | READ and not self._read_unwanted:
                return  # keep READ watched for now (lazy; see above)
            self._read_unwanted = False
            self._set_events(events)

    def _set_events(self, events: int) -> None:
        if self._events is None:
            try:
                self.io_loop.add_handler(self, self._handle_events, events)
            except ValueError as exc:
                # The poller refuses this fd (select above FD_SETSIZE).
                self.close(exc)
                return
        else:
            self.io_loop.update_handler(self, events)
        self._events = events

    def _handle_events(self, fd: object, events: int) -> None:
        try:
            state = self._state
            if state is _CONNECTING:
                self._finish_connect(events)
            elif state is _HANDSHAKING:
                self._handshake_step()
            if self._state is _OPEN:
                if events & (READ | ERROR):
                    self._handle_read(events)
                if events & WRITE and self._state is _OPEN:
                    self._handle_write()
        except OSError as exc:
            # A read failed (reset, aborted, ...): WARNING, or DEBUG when the
            # peer merely went away (not a bug); `error` records it either way.
            self._close_logged(exc, "error on read from")
        except Exception as exc:
            app_log.exception("Uncaught exception in %r", self)
            self.close(exc)
        if self._ready or self._completed_read is not None or self._state is _CLOSED:
            self._drain()
        self._update_events()

    def _finish_connect(self, events: int) -> None:
        """Hook: CONNECTING saw an event (sockets only)."""

    def _handshake_step(self) -> None:
        """Hook: HANDSHAKING saw an event (transports with a handshake: TLS)."""

    def _handle_read(self, events: int) -> None:
        """Receive what the pending read can use (bounded per event), deliver it.

        The read-ahead policy (module docstring): receive while a read is
        pending, or, with no read pending, while a close callback is set;
        never past ``max_buffer_size``.
        """
        buffer = self._read_buffer
        for attempt in range(MAX_RECVS_PER_EVENT):
            read = self._pending
            if read is None:
                # Idle: read ahead only to notice the peer's close, bounded.
                room = self.max_buffer_size - buffer.size
                if self._close_callback is None or room <= 0 or not self._readable:
                    if attempt == 0 and events & READ:
                        # Data nobody wants yet: stop watching READ now
                        # (it was kept watched lazily: _update_events).
                        self._read_unwanted = True
                    break
            elif read.target is not None:
                if not self._recv_direct(read):  # type: ignore[arg-type]
                    return
                continue
            else:
                room = self.max_buffer_size - buffer.size
                if room <= 0:
                    # The buffer is full: first let the pending read take
                    # what it can (it may have been issued since the drain).
                    self._drain()
                    read = self._pending
                    if self._state is _CLOSED:
                        return
                    if read is not None and buffer.size >= self.max_buffer_size:
                        self._on_buffer_full(read)
                        return
                    continue
            size = self.read_chunk_size
            if buffer.size >= size:
                size = SCRATCH_SIZE  # accumulating a large message: bigger recvs
            if size > room:
                size = room
            try:
                view = _scratch.view
            except AttributeError:
                view = _scratch_view()
            received = self.read_from_fd(view[:size])
            if received is None:  # would block
                return
            if received == 0:
                self._on_eof()
                return
            if buffer.size == 0 and buffer._acc is None:
                # (ReadBuffer.append's empty form, inlined: once per recv.)
                buffer._head = view[:received].tobytes()
                buffer._pos = 0
                buffer.size = received
            else:
                buffer.append(view[:received])
            if self._pending is not None:
                self._drain()
                if self._state is _CLOSED:
                    return
                read = self._pending
                if read is not None and read.__class__ is _ReadBytes:
                    self._prepare_direct_read(read)
            if received < size and self._short_read_drains:
                return  # the fd had no more: don't pay for an EAGAIN
        else:
            return
        # Not receiving (back-pressure, or idle without a close callback).
        if events & ERROR and self._state is _OPEN:
            self._on_fd_error()

    def _on_buffer_full(self, read: _PendingRead) -> None:
        """The buffer holds max_buffer_size bytes and *read* is unsatisfied.

        A ``read_until_close`` may still fit exactly: one more byte is asked
        for (EOF: it completes; a byte: overflow, and that byte is dropped
        with the connection; nothing yet: wait). Any other read cannot be
        satisfied within the limit.
        """
        if read.__class__ is _ReadUntilClose:
            with _scratch_view()[:1] as one:
                received = self.read_from_fd(one)
            if received is None:
                return
            if received == 0:
                self._on_eof()
                return
        full = StreamBufferFullError(
            f"read buffer reached max_buffer_size={self.max_buffer_size} "
            f"and the pending read needs more"
        )
        self._log(logging.INFO, "Reached max_buffer_size, closing connection", full)
        if read.future is not None:
            self._pending = None
            _fail_future(read.future, read_closed_error(full))
        self.close(full)

    def _recv_direct(self, read: _ReadBytes | _ReadInto) -> bool:
        """Receive straight into the read's target; False to stop for now."""
        target = read.target
        assert target is not None
        if (
            _POPULATE
            and target.__class__ is mmap.mmap
            and read.filled + POPULATE_STEP > read.populated  # type: ignore[union-attr]
        ):
            _populate_ahead(read)  # type: ignore[arg-type]
        with memoryview(target) as view, view[read.filled :] as rest:
            received = self.read_from_fd(rest)
        if received is None:
            return False
        if received == 0:
            self._on_eof()
            return False
        read.filled += received
        if read.filled == len(target) or read.partial:
            self._drain()
            return self._state is _OPEN and self._pending is not None
        return True

    def _on_eof(self) -> None:
        """The peer closed: deliver what the buffer satisfies, then close."""
        if self._pending is not None:
            self._drain()
        self.close()

    def _on_fd_error(self) -> None:
        """ERROR while not receiving: close with the fd's pending error.

        Bytes waiting to be sent are tried first: the write fails with the
        real error (EPIPE) and closes the stream. Why: Linux reports a pipe
        whose reader has gone, while the pipe is full, as EPOLLERR / POLLERR
        alone (no room, so no WRITE), and the write that would fail is
        otherwise never tried. On an fd that can only be written (a pipe's
        write end) a hang-up is final: the reader is gone, the stream
        closes with ``BrokenPipeError``. Otherwise a hang-up with no error
        pending (a pipe's writer closed, say) may still leave unread data:
        the stream is parked (unwatched) until a read or a write wants the
        fd again, instead of hearing the same hang-up on every loop
        iteration.
        """
        if self._write_buffer.size:
            self._handle_write()
            if self._state is not _OPEN:
                return
        error = self.get_fd_error()
        if error is not None:
            self._close_logged(error, "error on read from")
        elif not self._readable:
            self._close_logged(
                BrokenPipeError(errno.EPIPE, "the reader closed its end"), "hang-up on"
            )
        else:
            self._parked = True

    # -- write machinery --------------------------------------------------------

    @staticmethod
    def _as_view(data: object) -> memoryview:
        try:
            view = memoryview(data)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"data must be a bytes-like object, not {type(data).__name__}"
            ) from None
        if not view.c_contiguous:
            view = memoryview(view.tobytes())
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")

    def _send_now(self, data: bytes | memoryview, size: int) -> bytes | memoryview | None:
        """Try to send *data* with nothing queued before it; return the rest."""
        cap = self.write_chunk_size
        chunk = data if cap is None or size <= cap else memoryview(data)[:cap]
        try:
            # (_send, inlined: once per message written.)
            sent = self.write_to_fd(chunk)  # type: ignore[arg-type]
        except OSError as exc:
            self._close_logged(exc, "Write error on")
            return data
        if sent <= 0:
            return data  # would block (or failed, and the stream is closed)
        self._bytes_sent += sent
        if sent == size:
            return None
        return memoryview(data)[sent:]

    def _handle_write(self) -> None:
        buffer = self._write_buffer
        cap = self.write_chunk_size
        while buffer.size:
            view = buffer.peek(cap)
            sent = self._send(view)
            if sent <= 0:
                break
            buffer.advance(sent)
            self._bytes_sent += sent
        if self._write_callbacks:
            self._ready_write_callbacks()

    def _send(self, view: bytes | memoryview) -> int:
        """One write: bytes sent, 0 if it would block, -1 if it failed
        (the stream is then closed with the error, logged once)."""
        try:
            return self.write_to_fd(view)  # type: ignore[arg-type]
        except OSError as exc:
            self._close_logged(exc, "Write error on")
            return -1

    def _ready_write_callbacks(self) -> None:
        callbacks = self._write_callbacks
        sent = self._bytes_sent
        while callbacks and callbacks[0][0] <= sent:
            self._ready.append((callbacks.popleft()[1], ()))

    def _on_connected(self) -> None:
        """The connection is up: run the connect callback, send what waits."""
        callback = self._connect_callback
        self._connect_callback = None
        if callback is not None:
            self._ready.append((callback, ()))
        if self._write_buffer.size or self._write_callbacks:
            self._handle_write()

    # -- logging ------------------------------------------------------------------

    def _peer_text(self) -> str:
        peer = self._peer
        if isinstance(peer, tuple) and len(peer) >= 2:
            host = str(peer[0])
            return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
        return str(peer) if peer else "unknown peer"

    def _log(self, level: int, what: str, exc: BaseException, prefix: bool = False) -> None:
        """Log *exc* once on the ``iostream`` logger, naming the fd and peer.

        The messages start as Tornado's do ("error on read", "Write error
        on", "Connect error on fd", "SSL Error on", "Unsatisfiable read,
        closing connection:"), so log filters written for Tornado match.
        """
        # The text, not the exception: a kept log record must not keep the
        # exception's traceback, and through it this stream, alive.
        text = str(exc)
        if prefix:
            app_log.log(level, "%s fd %d (%s): %s", what, self._fd, self._peer_text(), text)
        else:
            app_log.log(level, "%s: %s (fd %d, %s)", what, text, self._fd, self._peer_text())

    def _close_logged(self, exc: BaseException, what: str) -> None:
        """Close with a read or write error: WARNING, DEBUG if the peer merely left."""
        if self._state is not _CLOSED:
            level = logging.DEBUG if is_connection_lost(exc) else logging.WARNING
            self._log(level, what, exc, prefix=True)
        self.close(exc)


# -- sockets ---------------------------------------------------------------------------


class IOStream(BaseIOStream):
    """A non-blocking socket stream with Tornado's API (callbacks or Futures).

    ``IOStream(socket, io_loop=None, max_buffer_size=104857600,
    read_chunk_size=65536, max_write_buffer_size=None,
    write_chunk_size=None, nodelay=True)``

    *socket* is a ``socket.socket`` (connected, or to be connected with
    :meth:`connect`); the stream makes it non-blocking and owns it from then
    on. TCP streams turn Nagle's algorithm off (``TCP_NODELAY``) unless
    *nodelay* is False. The other options are :class:`BaseIOStream`'s.

    A stream made on an accepted socket whose peer already reset it is
    open at once, then closes on the next loop iteration with that error
    (logged at DEBUG only: a port scan is not an application error).
    """

    def __init__(
        self,
        socket: socket.socket,
        io_loop: IOLoop | None = None,
        max_buffer_size: int = 104857600,
        read_chunk_size: int = 65536,
        max_write_buffer_size: int | None = None,
        write_chunk_size: int | None = None,
        nodelay: bool = True,
    ) -> None:
        if not isinstance(socket, _socket_type):
            raise TypeError(f"socket must be a socket.socket, not {type(socket).__name__}")
        if socket.fileno() < 0:
            raise ValueError("socket is closed (fileno() is -1)")
        if socket.type != _stream_type:
            raise ValueError(f"socket must be a SOCK_STREAM socket, not {socket.type!r}")
        check_stream_options(nodelay=nodelay)
        super().__init__(
            io_loop, max_buffer_size, read_chunk_size, max_write_buffer_size, write_chunk_size
        )
        socket.setblocking(False)
        #: The socket (an ``ssl.SSLSocket`` once TLS has been set up).
        self.socket = socket
        self._fd = socket.fileno()
        connected, peer, dead = _probe_connection(socket)
        self._peer = peer
        self._state = _OPEN if connected else _NEW
        self._nodelay = nodelay
        if nodelay:
            self.set_nodelay(True)
        if dead is not None:
            # Accepted, but the peer already reset it: the stream is open (the
            # caller may set callbacks first), then closes on the next
            # iteration with that error. The peer's doing: DEBUG only.
            self.io_loop.add_callback(self._close_quietly, dead)

    # -- the transport seam: a socket -------------------------------------------

    def close_fd(self) -> None:
        """Close the socket."""
        self.socket.close()

    def read_from_fd(self, view: memoryview) -> int | None:
        """``recv_into``: the count, 0 at EOF, None if it would block."""
        while True:
            try:
                return self.socket.recv_into(view)
            except InterruptedError:
                continue  # EINTR never closes a stream: retry
            except BlockingIOError:
                return None
            except OSError as exc:
                if is_would_block(exc):
                    return None
                raise

    def write_to_fd(self, view: memoryview) -> int:
        """``send``: the count sent, 0 if it would block."""
        while True:
            try:
                return self.socket.send(view)
            except InterruptedError:
                continue  # EINTR never closes a stream: retry
            except OSError as exc:
                if not is_would_block(exc):
                    raise
                if len(view) > WINDOWS_WRITE_CHUNK_SIZE and _is_no_buffer_space(exc):
                    # Windows refuses a send larger than the socket buffer
                    # (WSAENOBUFS) instead of sending part: with a
                    # write_chunk_size above 128 KiB, every retry of this
                    # size would fail again. Cap it from now on. The caller
                    # queues the rest; the next send uses it.
                    self.write_chunk_size = WINDOWS_WRITE_CHUNK_SIZE
                return 0

    def get_fd_error(self) -> OSError | None:
        """The socket's pending error (SO_ERROR), if any."""
        code = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return error_from_code(code) if code else None

    # -- connecting -----------------------------------------------------------------

    @overload
    def connect(
        self, address: Any, callback: None = None, server_hostname: str | None = None
    ) -> asyncio.Future[Any]: ...
    @overload
    def connect(
        self, address: Any, callback: Callable[[], object], server_hostname: str | None = None
    ) -> None: ...
    def connect(
        self,
        address: Any,
        callback: Callable[[], object] | None = None,
        server_hostname: str | None = None,
    ) -> asyncio.Future[Any] | None:
        """Connect the socket to *address*; the result is the stream itself.

        Calls *callback* once connected, or returns a Future of the stream
        without one. Reads and writes may be issued at once; they wait for
        the connection. A failed connect (refused, unreachable, timed out)
        closes the stream with ``error`` set to the ``OSError``: the callback
        does not run (the error is logged at WARNING, as Tornado does) and
        the Future fails with :class:`StreamClosedError` (nothing logged).
        *server_hostname* is used by :class:`SSLIOStream` (SNI and the
        certificate check).
        """
        _check_callback(callback, "callback", optional=True)
        if server_hostname is not None and not isinstance(server_hostname, str):
            raise TypeError(
                f"server_hostname must be a str or None, not {type(server_hostname).__name__}"
            )
        if self._state is not _NEW:
            raise RuntimeError(
                f"connect() needs a stream on an unconnected socket; this one is {self._state}"
            )
        self._prepare_connect(address, server_hostname)
        future = None
        if callback is None:
            future = self.io_loop.create_future()
            callback = _FutureCallback(future, self, handshake=self._handshake_future_fails)
        self._peer = address
        self._log_connect_error = future is None
        try:
            self.socket.connect(address)
        except OSError as exc:
            # EINPROGRESS (POSIX) and WSAEWOULDBLOCK (Windows) both mean "in
            # progress": the kernel reports the outcome as writability.
            # EINTR on a non-blocking connect also leaves it in progress.
            if not (is_would_block(exc) or isinstance(exc, InterruptedError)):
                self._connect_callback = callback
                self._connect_failed(exc)
                return future
        except (TypeError, ValueError, OverflowError) as exc:
            # A malformed address: nothing happened, the stream stays new.
            raise type(exc)(
                f"address {address!r} is not valid for this socket "
                f"(expected (host, port) with port an int from 0 to 65535): {exc}"
            ) from exc
        self._connect_callback = callback
        self._state = _CONNECTING
        self._set_events(WRITE | ERROR)
        return future

    #: Whether this class's connect Future is a TLS handshake Future.
    _handshake_future_fails = False

    def _prepare_connect(self, address: Any, server_hostname: str | None) -> None:
        """Hook for subclasses: remember what connect() needs later."""

    def _finish_connect(self, events: int) -> None:
        error = self.get_fd_error()
        if error is not None:
            self._connect_failed(error)
            return
        if events & ERROR and not events & WRITE:
            # Windows reports a failed connect only as an exception (ERROR);
            # SO_ERROR then normally says why, but never report success.
            self._connect_failed(ConnectionError("connect failed"))
            return
        self._state = _OPEN
        if self._nodelay:
            self.set_nodelay(True)
        self._on_connected()

    def _connect_failed(self, exc: OSError) -> None:
        """Close with a connect error, logged once at WARNING as Tornado does
        when a callback is used (a Future carries the error instead)."""
        if self._log_connect_error:
            self._log(logging.WARNING, "Connect error on", exc, prefix=True)
        self.close(exc)

    def _close_quietly(self, exc: OSError) -> None:
        """Close a stream whose connection died before it was made (DEBUG)."""
        if self._state is not _CLOSED:
            self._log(logging.DEBUG, "Closing a connection gone before use, on", exc, prefix=True)
        self.close(exc)

    # -- options and TLS ---------------------------------------------------------------

    def set_nodelay(self, value: bool) -> None:
        """Turn Nagle's algorithm off (True) or on (False) for a TCP socket.

        TCP streams start with it off (``nodelay=True``, as asyncio and trio
        do): a small reply goes out at once instead of waiting up to ~40 ms
        for the peer's delayed ACK. A no-op for other sockets (UNIX) and on
        a closed stream; a socket that refuses (its connection already
        gone) is left as it is.
        """
        sock = self.socket
        if self._state is not _CLOSED and sock.family in _TCP_FAMILIES:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if value else 0)
            except OSError:
                pass  # e.g. EINVAL on BSDs once the peer reset: the close says why

    @overload
    def start_tls(
        self,
        server_side: bool,
        ssl_options: ssl.SSLContext | dict[str, Any] | None = None,
        server_hostname: str | None = None,
        callback: None = None,
    ) -> asyncio.Future[SSLIOStream]: ...
    @overload
    def start_tls(
        self,
        server_side: bool,
        ssl_options: ssl.SSLContext | dict[str, Any] | None,
        server_hostname: str | None,
        callback: Callable[[SSLIOStream], object],
    ) -> None: ...
    def start_tls(
        self,
        server_side: bool,
        ssl_options: ssl.SSLContext | dict[str, Any] | None = None,
        server_hostname: str | None = None,
        callback: Callable[[SSLIOStream], object] | None = None,
    ) -> asyncio.Future[SSLIOStream] | None:
        """Turn this idle, open stream into an :class:`SSLIOStream`.

        Nothing may be pending: no read, no queued write, nothing buffered
        (``ValueError`` otherwise). This object is detached (``closed()``
        is then True; its close callback moves to the new stream, its
        socket is not closed). The new stream is given to *callback*, or is
        the result of the returned Future, once the handshake is done; a
        failed handshake fails the Future with the ``ssl.SSLError`` itself.
        *server_hostname* (client) is checked against the certificate.
        """
        _check_callback(callback, "callback", optional=True)
        if isinstance(self, SSLIOStream):
            raise ValueError("start_tls() needs a plain IOStream; this one already has TLS")
        if (
            self._state is not _OPEN
            or self.reading()
            or self.writing()
            or self._read_buffer.size
            or self._write_callbacks
            or self._connect_callback is not None
        ):
            raise ValueError(
                f"start_tls() needs an open stream with nothing pending, queued or "
                f"buffered; this one is {self._state}"
                + (", reading" if self.reading() else "")
                + (", writing" if self.writing() or self._write_callbacks else "")
                + (f", {self._read_buffer.size} bytes buffered" if self._read_buffer.size else "")
            )
        context = make_ssl_context(ssl_options, bool(server_side))
        sock = self.socket
        # Detach: this object lets go of the fd without closing it.
        if self._events is not None:
            self._events = None
            self.io_loop.remove_handler(self)
        close_callback = self._close_callback
        self._close_callback = None
        self._state = _CLOSED
        try:
            wrapped = context.wrap_socket(
                sock,
                server_side=bool(server_side),
                do_handshake_on_connect=False,
                server_hostname=None if server_side else server_hostname,
            )
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            self.error = exc
            if close_callback is not None:
                self.io_loop.add_callback(close_callback)
            if callback is not None:
                raise
            return _failed(self.io_loop, exc)
        new = SSLIOStream(
            wrapped,
            io_loop=self.io_loop,
            max_buffer_size=self.max_buffer_size,
            read_chunk_size=self.read_chunk_size,
            max_write_buffer_size=self.max_write_buffer_size,
            write_chunk_size=self.write_chunk_size,
            nodelay=self._nodelay,
        )
        new._peer = self._peer
        new.set_close_callback(close_callback)
        # The handshake's first step ran in the constructor, and may already
        # have failed (the peer closed, or answered STARTTLS with plain
        # text): then *new* is closed, and only wait_for_handshake knows to
        # fail the Future with its error instead of waiting for ever.
        if callback is not None:
            if not new.closed():
                new.wait_for_handshake(lambda: callback(new))
            # (closed: the callback never runs; the close callback reports it)
            return None
        return new.wait_for_handshake()


class SSLIOStream(IOStream):
    """An :class:`IOStream` over TLS.

    ``SSLIOStream(socket, ssl_options=None, server_side=False, **kwargs)``;
    *ssl_options* is an :class:`ssl.SSLContext` or a dict of ``certfile``,
    ``keyfile``, ``cert_reqs``, ``ca_certs``, ``ciphers``, ``ssl_version``
    (see :func:`iostream._tls.make_ssl_context`). A client verifies the
    certificate and host name by default. *socket* may be an
    ``ssl.SSLSocket`` already wrapped (with ``do_handshake_on_connect=False``;
    Tornado's way to make a server-side stream): its context and side are
    used. The handshake never blocks; the connect callback (or Future) and
    :meth:`wait_for_handshake` complete after it; reads and writes issued
    before it wait for it. A failed handshake closes the stream with the
    :class:`ssl.SSLError` in ``error``.
    """

    _short_read_drains = False
    _handshake_future_fails = True

    def __init__(
        self,
        socket: socket.socket,
        ssl_options: ssl.SSLContext | dict[str, Any] | None = None,
        server_side: bool = False,
        **kwargs: Any,
    ) -> None:
        self._ssl_read_scheduled = False
        self._handshake_done = False
        # A reset seen in SO_ERROR before OpenSSL read it: see _handle_read.
        self._reset: OSError | None = None
        self._handshake_waiters: list[Callable[[], object]] = []
        super().__init__(socket, **kwargs)
        self._server_hostname: str | None = None
        if isinstance(socket, ssl.SSLSocket):
            # Already wrapped: its context and side are the socket's own.
            self.server_side = bool(socket.server_side)
            self.ssl_context = socket.context
            if self._state is _OPEN:
                self._begin_handshake()
            return
        self.server_side = bool(server_side)
        self.ssl_context = make_ssl_context(ssl_options, self.server_side)
        if self.server_side and self._state is _OPEN:
            # An accepted socket: the handshake starts now. A client's starts
            # once connect() has connected it.
            self._start_tls()

    # -- the transport seam: OpenSSL over the socket --------------------------------

    def read_from_fd(self, view: memoryview) -> int | None:
        """``SSLSocket.recv_into``; want-read / want-write mean "not now"."""
        while True:
            try:
                return self.socket.recv_into(view)
            except ssl.SSLWantReadError:
                return None
            except ssl.SSLWantWriteError:
                # TLS 1.2 renegotiation must write before it can read on.
                self._needs_write = True
                return None
            except InterruptedError:
                continue
            except OSError as exc:
                if is_would_block(exc):
                    return None
                raise

    def write_to_fd(self, view: memoryview) -> int:
        """``SSLSocket.send``; after want-write/want-read OpenSSL must be
        handed the very same bytes again (the write buffer guarantees it)."""
        while True:
            try:
                return self.socket.send(view)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return 0
            except InterruptedError:
                continue
            except OSError as exc:
                if is_would_block(exc):
                    return 0
                raise

    # -- the handshake ------------------------------------------------------------------

    @overload
    def wait_for_handshake(self, callback: None = None) -> asyncio.Future[SSLIOStream]: ...
    @overload
    def wait_for_handshake(self, callback: Callable[[], object]) -> None: ...
    def wait_for_handshake(
        self, callback: Callable[[], object] | None = None
    ) -> asyncio.Future[SSLIOStream] | None:
        """Wait for the TLS handshake; the result is the stream itself.

        Calls *callback* (no arguments), or returns a Future, once the
        handshake is done (at once if it already is). A failed handshake
        fails the Future with the ``ssl.SSLError`` itself (another close:
        :class:`StreamClosedError`); the callback then never runs. Useful on
        a server-side stream before reading the peer's certificate.
        """
        _check_callback(callback, "callback", optional=True)
        future = None
        if callback is None:
            future = self.io_loop.create_future()
            callback = _FutureCallback(future, self, handshake=True)
        if self._handshake_done and self._state is _OPEN:
            if future is not None:
                future.set_result(self)
            else:
                self._ready.append((callback, ()))
                self._schedule_drain()
            return future
        if self._state is _CLOSED:
            if future is None:
                raise StreamClosedError(real_error=self.error)
            _fail_future(future, self._close_exception(True))
            return future
        self._handshake_waiters.append(callback)
        return future

    def _prepare_connect(self, address: Any, server_hostname: str | None) -> None:
        if server_hostname is None and isinstance(address, tuple) and address:
            server_hostname = str(address[0])
        self._server_hostname = server_hostname

    def _on_connected(self) -> None:
        self._start_tls()

    def _start_tls(self) -> None:
        sock = self.socket
        if not isinstance(sock, ssl.SSLSocket):
            try:
                sock = self._wrap_socket(sock)
            except (ssl.SSLError, OSError) as exc:
                # The peer is already gone (the ssl module asks getpeername
                # and may read ahead): a handshake failure like any other.
                self.close(exc)
                return
            self.socket = sock
        self._begin_handshake()

    def _begin_handshake(self) -> None:
        self._state = _HANDSHAKING
        if self._events is None:
            self._set_events(self._wanted_events())
        self._handshake_step()

    def _wrap_socket(self, sock: socket.socket) -> ssl.SSLSocket:
        """Wrap the plain socket (a hook tests override to inject faults)."""
        return self.ssl_context.wrap_socket(
            sock,
            server_side=self.server_side,
            do_handshake_on_connect=False,
            server_hostname=None if self.server_side else self._server_hostname,
        )

    def _handshake_step(self) -> None:
        sock = self.socket
        assert isinstance(sock, ssl.SSLSocket)
        while True:
            try:
                sock.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._needs_write = False
                return
            except ssl.SSLWantWriteError:
                self._needs_write = True
                return
            except InterruptedError:
                continue  # EINTR: the step did not run; run it again
            except (ssl.SSLError, OSError) as exc:
                # As Tornado: WARNING "SSL Error on ..."; DEBUG when the peer
                # merely went away mid-handshake.
                level = logging.DEBUG if is_connection_lost(exc) else logging.WARNING
                self._log(level, "SSL Error on", exc, prefix=True)
                self.close(exc)
                return
        self._needs_write = False
        self._state = _OPEN
        self._handshake_done = True
        waiters = self._handshake_waiters
        self._handshake_waiters = []
        for waiter in waiters:
            self._ready.append((waiter, ()))
        IOStream._on_connected(self)
        if self._state is _OPEN:
            # Application data may already sit decrypted inside OpenSSL.
            self._handle_read(READ)

    def close_fd(self) -> None:
        """Close the socket, first discarding what the kernel still holds
        for it (bounded). Why: Linux answers the close of a socket with
        unread bytes by a reset, and a reset makes the *peer's* kernel drop
        what it had received from us but not yet handed to its application.
        With TLS 1.3 there is nearly always something unread: the session
        tickets the server sends after the handshake, which a stream that
        never reads (back-pressure: no read pending, no close callback)
        leaves in the kernel."""
        raw = self.socket
        for _ in range(MAX_RECVS_PER_EVENT):
            try:
                if not _socket_type.recv(raw, SCRATCH_SIZE):
                    break
            except OSError:
                break
        raw.close()

    def _on_close(self) -> None:
        waiters = self._handshake_waiters
        self._handshake_waiters = []
        for waiter in waiters:
            self._fail_callback(waiter)

    def _handle_read(self, events: int) -> None:
        # OpenSSL may hold decrypted bytes that the kernel no longer reports
        # as readable (they left the socket inside a larger record), and a
        # poller would never wake us for them: read until OpenSSL has none,
        # or until back-pressure says stop (then _update_events fetches them
        # when a read wants them).
        if events & ERROR and self._reset is None and self._state is _OPEN:
            # Why: OpenSSL 3 reports a connection reset met by SSL_read as an
            # unexpected EOF, which the ssl module returns as b""
            # (suppress_ragged_eofs): the reset would pass for the peer's
            # clean close. The socket's SO_ERROR says ECONNRESET until that
            # read consumes it: take it first, deliver what was received
            # before the reset, then close with it (_on_eof).
            self._reset = IOStream.get_fd_error(self)
        while True:
            super()._handle_read(events)
            sock = self.socket
            if self._state is not _OPEN or not isinstance(sock, ssl.SSLSocket):
                break
            if not sock.pending():
                break
            if self._pending is None and (
                self._close_callback is None or self._read_buffer.size >= self.max_buffer_size
            ):
                break

    def get_fd_error(self) -> OSError | None:
        """The socket's pending error (SO_ERROR), or the reset taken from it earlier."""
        if self._reset is not None:
            return self._reset
        return super().get_fd_error()

    def _on_eof(self) -> None:
        reset = self._reset
        if reset is None:
            super()._on_eof()
            return
        if self._pending is not None:
            self._drain()
        self._close_logged(reset, "error on read from")

    def _handle_write(self) -> None:
        super()._handle_write()
        if self._needs_write and self._state is _OPEN:
            self._needs_write = False
            self._handle_read(READ)

    def _update_events(self) -> None:
        super()._update_events()
        # Decrypted bytes waiting inside OpenSSL make no poller event: when
        # a read becomes pending while they are there, go and get them.
        if self._pending is not None and self._state is _OPEN and not self._ssl_read_scheduled:
            sock = self.socket
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                self._ssl_read_scheduled = True
                self.io_loop.add_callback(self._read_from_openssl)

    def _read_from_openssl(self) -> None:
        self._ssl_read_scheduled = False
        if self._state is _OPEN:
            self._handle_events(self._fd, READ)

    def _send_now(self, data: bytes | memoryview, size: int) -> bytes | memoryview | None:
        # Always through the write buffer: after want-write, OpenSSL must be
        # handed the very same bytes again, and the buffer guarantees that.
        self._write_buffer.append(data)
        self._handle_write()
        return None


def _failed(loop: IOLoop, exc: BaseException) -> asyncio.Future[Any]:
    future = loop.create_future()
    _fail_future(future, exc)
    return future


#: The first window of a direct read's target mapped in ahead of the data
#: (Linux: MADV_POPULATE_WRITE; later windows double): see
#: :func:`_new_read_target`.
POPULATE_STEP = 8 * 1024 * 1024

#: Linux: pages of a direct read's target are mapped in ahead of the data.
_POPULATE = hasattr(mmap, "MAP_POPULATE") and not _WINDOWS

#: madvise's MADV_POPULATE_WRITE (Linux 5.14+; CPython names it from 3.13).
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)


def _populate_ahead(read: _ReadBytes) -> None:
    """Map in the next window of *read*'s target, ahead of the data."""
    target = read.target
    assert isinstance(target, mmap.mmap)
    start = read.populated
    # Doubling: as much again as the peer has filled (at least one step),
    # so a 64 MiB read makes four calls, and a peer that announced much
    # and sent little costs what it sent plus one step.
    length = min(max(POPULATE_STEP, start), len(target) - start)
    read.populated = start + length
    if length > 0:
        try:
            target.madvise(_MADV_POPULATE_WRITE, start, length)
        except (OSError, ValueError):
            pass  # an older kernel: the pages fault in as data arrives


def _new_read_target(size: int) -> mmap.mmap:
    """A zeroed, writable buffer of *size* bytes for a large direct read.

    Why an anonymous mapping and not ``bytearray(size)``: for tens of MiB,
    the cost that dominates is the kernel faulting fresh pages in, one
    trap per 4 KiB page. ``bytearray`` zero-fills (faulting every page in
    one by one) before a byte arrives; on Linux, populating the mapping in
    large calls is a third cheaper (measured here: 64 MiB in 21 ms against
    30 ms). It is populated as the data arrives, not at once
    (:func:`_populate_ahead`: ``MADV_POPULATE_WRITE``, doubling windows
    from :data:`POPULATE_STEP`): with ``MAP_POPULATE`` a peer that
    announced 64 MiB and sent one byte cost 64 MiB of resident memory at
    once, per connection; now it costs 8 MiB. Measured (fresh receiver
    processes, 64 MiB from a plain-socket sender, 2 x 11 runs each, same
    session): median 59-60 ms both ways, fastest run 56 ms against 53 ms.
    Elsewhere the mapping is plain and its pages fault in as data arrives
    (Windows' ``mmap`` takes no flags at all).

    Measured and not kept: transparent huge pages (``MADV_HUGEPAGE``, then
    ``madvise`` 23, MADV_POPULATE_WRITE) map 64 MiB in 2.8 ms in a process
    that has done it before, but a fresh process's read took 40 ms or
    185-197 ms (3 of 5 runs) against a steady 57-74 ms with 4 KiB pages:
    on this VM the first touch of fresh huge pages is paid again and again.
    """
    if not _POPULATE:
        return mmap.mmap(-1, size)
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def _is_no_buffer_space(exc: OSError) -> bool:
    """True for WSAENOBUFS (Windows) or ENOBUFS: "that send is too large now"."""
    code = getattr(exc, "winerror", None) or exc.errno
    return code in (WSAENOBUFS, errno.ENOBUFS)


def _probe_connection(sock: socket.socket) -> tuple[bool, Any, OSError | None]:
    """``(connected, peer address, error)`` for a socket a stream is made on.

    ``getpeername`` answers for a live connection (one syscall: the common
    case). It fails with ENOTCONN both for a fresh socket and for an
    accepted one whose peer reset it while it waited in the listen queue;
    the second has its error pending in SO_ERROR, or (once that was read)
    reports EOF to a peeking ``recv``, while a fresh TCP socket answers
    ENOTCONN (bound or not) and one still connecting would-block. Other
    families (UNIX) are new unless SO_ERROR says otherwise.
    """
    try:
        return True, sock.getpeername(), None
    except OSError:
        pass
    try:
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    except OSError as exc:
        return True, None, exc
    if code:
        return True, None, error_from_code(code)
    if sock.family not in _TCP_FAMILIES:
        return False, None, None  # (a fresh UNIX socket answers a peek with EINVAL)
    try:
        # The plain socket's recv, also for an ssl.SSLSocket (which refuses
        # flags): this peeks at the TCP bytes, consuming nothing.
        data = _socket_type.recv(sock, 1, socket.MSG_PEEK)
    except OSError as exc:
        if is_not_connected(exc) or is_would_block(exc) or isinstance(exc, InterruptedError):
            return False, None, None
        return True, None, exc
    if not data:
        return (
            True,
            None,
            ConnectionResetError(errno.ECONNRESET, "connection lost before the stream was made"),
        )
    return True, None, None


_socket_type = socket.socket
_stream_type = socket.SOCK_STREAM
_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
