"""IOStream and SSLIOStream: Tornado's classic callback streams on an IOLoop.

A stream is one state machine, kept here in one place::

    NEW --connect()--> CONNECTING --> [HANDSHAKING -->] OPEN --> CLOSED
      \\_____________ (an error or close(), from any state) ____/

* ``NEW``: made on a socket that is not connected yet. Nothing is watched
  (an unconnected socket reports a hang-up); reads, writes and a close
  callback may be set up and wait for ``connect``.
* ``CONNECTING``: ``connect`` was called; the socket is watched for WRITE.
  Reads and writes may be issued; they wait.
* ``HANDSHAKING`` (SSLIOStream only): the TLS handshake runs without
  blocking, watching READ or WRITE as OpenSSL asks.
* ``OPEN``: data flows. The socket is watched for READ while a read is
  pending or a close callback is set, and for WRITE while bytes are queued.
* ``CLOSED``: final. ``error`` holds what closed it (``None`` for a clean
  close). Buffered data still satisfies reads.

At most one read is pending. While it waits for data it is a
:class:`_PendingRead` object (one subclass per kind: until a delimiter, a
byte count, until close) that knows how much of the buffer it needs. A read
that the buffer satisfies when it is issued skips that object: its data is
taken at once and ``(callback, data)`` waits in ``_completed_read`` for the
trampoline. Either way the read is pending until its callback has run.

Callbacks never recurse. Everything the stream calls back — read, write,
connect and close callbacks — runs from one loop, :meth:`IOStream._drain`
(the trampoline), which is entered from the I/O handler or from one
scheduled loop callback. A read issued inside a callback only records the
pending read; the trampoline satisfies it from the buffer on its next turn.
So a million reads chained from callbacks on buffered data run in a flat
loop: no stack growth, and no loop iteration per read. A read or write
issued from outside a callback never calls back before it returns.

Back-pressure and read-ahead (what is received, and when). The stream
receives only while someone wants the data:

* a read is pending: ``recv`` calls of up to ``read_chunk_size`` bytes (256
  KiB once a large message is accumulating), never past
  ``max_buffer_size``; after each, the pending read takes what it can. Once
  it completes and no read follows from its callback, receiving stops;
* no read pending, but a close callback is set: the stream keeps
  receiving until the buffer holds ``max_buffer_size`` bytes (that is how
  an idle stream notices the peer's close: SPEC), then stops;
* no read pending and no close callback: no ``recv`` at all.

When receiving stops, READ is no longer watched: the kernel's buffers fill
and TCP flow control pushes back on the peer. A stream closes with
:class:`StreamBufferFullError` only when the buffer holds
``max_buffer_size`` bytes and the pending read still cannot complete (a
``read_until_close`` whose data is exactly ``max_buffer_size`` bytes peeks
for EOF first: exactly the limit is not an overflow). Memory per
connection is therefore bounded by ``max_buffer_size`` (the read buffer;
with no close callback and no read pending, nothing is read ahead) plus
``max_write_buffer_size`` (what the application queued) plus the one
``recv`` scratch buffer of ``SCRATCH_SIZE`` bytes shared by every stream
of a thread.

Costs are linear in the bytes moved; see :mod:`iostream._buffer`.
"""

from __future__ import annotations

import errno
import logging
import mmap
import numbers
import socket
import ssl
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from iostream._buffer import ReadBuffer, WriteBuffer
from iostream._platform import (
    _WINDOWS,
    WSAENOBUFS,
    error_from_code,
    is_connection_lost,
    is_not_connected,
    is_would_block,
)
from iostream.ioloop import IOLoop, app_log
from iostream.pollers import ERROR, READ, WRITE

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

DataCallback = Callable[[bytes], object]


class StreamClosedError(OSError):
    """The stream is closed; ``real_error`` is what closed it (or None)."""

    def __init__(self, message: str = "Stream is closed", real_error: BaseException | None = None):
        super().__init__(message)
        #: The exception that closed the stream, if any.
        self.real_error = real_error


class StreamBufferFullError(Exception):
    """A read or write buffer reached its maximum size."""


class UnsatisfiableReadError(Exception):
    """A read cannot be satisfied (``read_until`` past ``max_bytes``)."""


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
    _check_callback(callback, "callback")
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

    Raises :class:`TypeError` for an unknown name or a non-int, and
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


# -- pending reads -------------------------------------------------------------


class _PendingRead:
    """The one read a stream may have pending: what it waits for, whom to call.

    ``complete(buffer, closed)`` takes the read's data from the buffer and
    returns it once the buffer holds all of it, else returns None (and
    raises :class:`UnsatisfiableReadError` if it never can). Streaming reads
    hand data to ``streaming_callback`` as it arrives (``streamed``).
    ``target`` is the final buffer of a large ``read_bytes``, received into
    directly.
    """

    __slots__ = ("callback",)

    callback: DataCallback
    # Class-level defaults; only the reads that use them make them slots.
    streaming_callback: DataCallback | None = None
    target: mmap.mmap | None = None

    def complete(self, buffer: ReadBuffer, closed: bool) -> bytes | None:
        """This read's data, taken from *buffer*, or None if not there yet."""
        raise NotImplementedError

    def streamed(self, n: int) -> None:
        """Record that *n* bytes went to the streaming callback."""


class _ReadUntil(_PendingRead):
    __slots__ = ("delimiter", "max_bytes", "scanned")

    def __init__(self, delimiter: bytes, callback: DataCallback, max_bytes: int | None):
        # (No super().__init__: this runs once per line read.)
        self.callback = callback
        self.delimiter = delimiter
        self.max_bytes = max_bytes
        # Bytes already searched without finding the delimiter: the next
        # search starts just before their end (a delimiter may straddle it).
        self.scanned = 0

    def complete(self, buffer: ReadBuffer, closed: bool) -> bytes | None:
        max_bytes = self.max_bytes
        size = buffer.size
        end = size if max_bytes is None or max_bytes > size else max_bytes
        data = buffer.take_through(self.delimiter, self.scanned, end)
        if data is None:
            if max_bytes is not None and size >= max_bytes:
                raise UnsatisfiableReadError(
                    f"delimiter {self.delimiter!r} not found within max_bytes={max_bytes}"
                )
            self.scanned = max(0, end - len(self.delimiter) + 1)
        return data


class _ReadBytes(_PendingRead):
    __slots__ = ("filled", "remaining", "streaming_callback", "target")

    def __init__(
        self, num_bytes: int, callback: DataCallback, streaming_callback: DataCallback | None
    ):
        self.callback = callback
        self.streaming_callback = streaming_callback
        self.target = None
        self.filled = 0
        self.remaining = num_bytes

    def complete(self, buffer: ReadBuffer, closed: bool) -> bytes | None:
        target = self.target
        if target is not None:
            if self.filled < len(target):
                return None
            self.target = None
            data = target[:]  # the one copy out, into the bytes the callback gets
            target.close()
            return data
        if buffer.size < self.remaining:
            return None
        return buffer.take(self.remaining)

    def streamed(self, n: int) -> None:
        self.remaining -= n


class _ReadUntilClose(_PendingRead):
    __slots__ = ("streaming_callback",)

    def __init__(self, callback: DataCallback, streaming_callback: DataCallback | None):
        self.callback = callback
        self.streaming_callback = streaming_callback

    def complete(self, buffer: ReadBuffer, closed: bool) -> bytes | None:
        return buffer.take(buffer.size) if closed else None


# -- the stream ---------------------------------------------------------------------

_NEW, _CONNECTING, _HANDSHAKING, _OPEN, _CLOSED = (
    "new",
    "connecting",
    "handshaking",
    "open",
    "closed",
)


class IOStream:
    """A non-blocking TCP stream with Tornado's classic callback API.

    ``IOStream(socket, io_loop=None, max_buffer_size=104857600,
    read_chunk_size=65536, max_write_buffer_size=None, write_chunk_size=None)``

    *socket* is a ``socket.socket`` (connected, or to be connected with
    :meth:`connect`); the stream makes it non-blocking and owns it from then
    on. *io_loop* defaults to :meth:`IOLoop.instance`. The read buffer never
    exceeds *max_buffer_size* bytes (past it the stream closes with
    :class:`StreamBufferFullError`); *read_chunk_size* is the size of one
    ``recv``. A ``write`` that would queue more than *max_write_buffer_size*
    bytes raises :class:`StreamBufferFullError`. ``socket.send`` is never
    handed more than *write_chunk_size* bytes; ``None`` means 128 KiB on
    Windows, where a larger send fails rather than sending part, and no cap
    elsewhere.

    Large writes (16 KiB or more) are queued as views of the caller's object,
    not copied: do not change a ``bytearray`` you passed to ``write`` before
    its callback runs.
    """

    #: A short ``recv`` means the kernel had no more (not so for TLS, where
    #: one ``recv`` returns at most one record).
    _short_read_drains = True

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
        if io_loop is not None and not isinstance(io_loop, IOLoop):
            raise TypeError(f"io_loop must be an IOLoop or None, not {type(io_loop).__name__}")
        check_stream_options(
            max_buffer_size=max_buffer_size,
            read_chunk_size=read_chunk_size,
            max_write_buffer_size=max_write_buffer_size,
            write_chunk_size=write_chunk_size,
            nodelay=nodelay,
        )
        socket.setblocking(False)
        #: The socket (an ``ssl.SSLSocket`` once TLS has been set up).
        self.socket = socket
        self._fd = socket.fileno()
        #: The loop this stream runs on.
        self.io_loop = io_loop if io_loop is not None else IOLoop.instance()
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
        connected, peer, dead = _probe_connection(socket)
        # The peer's address, for log messages (None until known).
        self._peer: Any = peer
        self._state = _OPEN if connected else _NEW
        self._read_buffer = ReadBuffer()
        self._pending: _PendingRead | None = None
        # A read whose data was taken from the buffer at once, waiting for
        # the trampoline to call it back: it still counts as pending.
        self._completed_read: tuple[DataCallback, bytes] | None = None
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
        self._want_write = False  # TLS: OpenSSL needs writability to go on
        # A hang-up arrived while the stream was not receiving: watch the fd
        # again only once READ or WRITE is wanted (else the poller would
        # report the hang-up on every iteration).
        self._parked = False
        self._nodelay = nodelay
        if nodelay:
            self.set_nodelay(True)
        if dead is not None:
            # Accepted, but the peer already reset it: the stream is open (the
            # caller may set callbacks first), then closes on the next
            # iteration with that error. The peer's doing: DEBUG only.
            self.io_loop.add_callback(self._close_quietly, dead)

    # -- public API ---------------------------------------------------------

    def connect(
        self,
        address: Any,
        callback: Callable[[], object] | None = None,
        server_hostname: str | None = None,
    ) -> None:
        """Connect the socket to *address*; call *callback* once connected.

        Reads and writes may be issued at once; they wait for the connection.
        A failed connect (refused, unreachable, timed out) closes the stream
        with ``error`` set to the ``OSError``, and *callback* does not run.
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
        self._peer = address
        self._log_connect_error = callback is not None
        try:
            self.socket.connect(address)
        except OSError as exc:
            # EINPROGRESS (POSIX) and WSAEWOULDBLOCK (Windows) both mean "in
            # progress": the kernel reports the outcome as writability.
            # EINTR on a non-blocking connect also leaves it in progress.
            if not (is_would_block(exc) or isinstance(exc, InterruptedError)):
                self._connect_failed(exc)
                return
        except (TypeError, ValueError, OverflowError) as exc:
            # A malformed address: nothing happened, the stream stays new.
            raise type(exc)(
                f"address {address!r} is not valid for this socket "
                f"(expected (host, port) with port an int from 0 to 65535): {exc}"
            ) from exc
        self._connect_callback = callback
        self._state = _CONNECTING
        self._set_events(WRITE | ERROR)

    def read_until(
        self, delimiter: bytes, callback: DataCallback, max_bytes: int | None = None
    ) -> None:
        """Call ``callback(data)`` with the bytes up to and including *delimiter*.

        With *max_bytes*, the stream closes with
        :class:`UnsatisfiableReadError` if the delimiter is not within that
        many bytes.
        """
        if type(delimiter) is not bytes or not delimiter or not callable(callback):
            delimiter = _checked_delimiter(delimiter, callback)
        if self._pending is not None or self._completed_read is not None:
            raise RuntimeError("a read is already pending on this stream")
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
                        self._completed_read = (callback, head[pos:stop])
                        if not self._draining:
                            self._schedule_drain()
                        return
                    data = None
                else:
                    data = buffer.take_through(delimiter, 0)
                if data is not None:
                    self._completed_read = (callback, data)
                    if not self._draining:
                        self._schedule_drain()
                    return
        else:
            _check_size(max_bytes, "max_bytes", 1)
        read = self._spare_read_until
        if read is None:
            read = _ReadUntil(delimiter, callback, max_bytes)
        else:
            # Recycle the last one (a line protocol waits for data after
            # nearly every line: this saves an allocation each time).
            self._spare_read_until = None
            read.callback = callback
            read.delimiter = delimiter
            read.max_bytes = max_bytes
            read.scanned = 0
        self._start_read(read)

    def read_bytes(
        self,
        num_bytes: int,
        callback: DataCallback,
        streaming_callback: DataCallback | None = None,
    ) -> None:
        """Call ``callback(data)`` with the next *num_bytes* bytes.

        With *streaming_callback*, data goes to it as it arrives and
        *callback* gets ``b""`` at the end.
        """
        _check_size(num_bytes, "num_bytes", 0)
        _check_callback(callback, "callback")
        _check_callback(streaming_callback, "streaming_callback", optional=True)
        if not num_bytes:
            # Nothing to wait for, even on a closed stream.
            if self._pending is not None or self._completed_read is not None:
                raise RuntimeError("a read is already pending on this stream")
            self._completed_read = (callback, b"")
            self._schedule_drain()
            return
        self._start_read(_ReadBytes(int(num_bytes), callback, streaming_callback))

    def read_until_close(
        self, callback: DataCallback, streaming_callback: DataCallback | None = None
    ) -> None:
        """Call ``callback(data)`` with everything until the peer closes.

        With *streaming_callback*, data goes to it as it arrives and
        *callback* gets what did not (``b""`` when everything streamed). On a
        closed stream, delivers what is buffered, whatever closed it.
        """
        _check_callback(callback, "callback")
        _check_callback(streaming_callback, "streaming_callback", optional=True)
        self._start_read(_ReadUntilClose(callback, streaming_callback))

    def write(
        self, data: bytes | bytearray | memoryview, callback: Callable[[], object] | None = None
    ) -> None:
        """Queue *data* (any bytes-like object) and send it as the socket allows.

        *callback* runs once this data and everything written before it has
        been handed to the kernel. Raises :class:`StreamClosedError` on a
        closed stream, and :class:`StreamBufferFullError` (queuing nothing)
        if the write would pass ``max_write_buffer_size``.
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
        if size:
            self._bytes_queued += size
            if buffer.size == 0 and self._state is _OPEN:
                rest = self._send_now(data, size)
                if self._state is _CLOSED:
                    return  # the send failed: `error` says why
                if rest is not None:
                    buffer.append(rest)
            else:
                buffer.append(data)
        if callback is not None:
            self._write_callbacks.append((self._bytes_queued, callback))
            if self._bytes_sent >= self._bytes_queued and self._state is _OPEN:
                # (Not before the connection exists: an empty write while
                # connecting waits for it, and never runs if it fails.)
                self._ready_write_callbacks()
        if self._state == _CLOSED:
            return
        if not self._draining:
            if self._ready:
                self._schedule_drain()
            self._update_events()

    def set_close_callback(self, callback: Callable[[], object] | None) -> None:
        """Call *callback* (no arguments) once, when the stream closes.

        While a close callback is set, an idle stream keeps listening, so it
        notices the peer's close (buffering whatever arrives meanwhile).
        """
        _check_callback(callback, "callback", optional=True)
        self._close_callback = callback
        if self._state == _CLOSED:
            if callback is not None:
                self._schedule_drain()
        elif not self._draining:
            self._update_events()

    def close(self, exc_info: BaseException | bool | tuple[Any, ...] | None = None) -> None:
        """Close the stream and its socket. Idempotent.

        *exc_info*: an exception to record as ``error`` (``True``: the one
        being handled). Reads that buffered data satisfies still complete,
        then the close callback runs (once).
        """
        if self._state == _CLOSED:
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
            self.socket.close()
        except Exception as exc:  # never raise from close(): the callback must run
            app_log.debug("socket.close() failed closing %r: %s", self, exc)
        self._write_buffer.clear()
        self._write_callbacks.clear()
        self._connect_callback = None
        pending = self._pending
        if isinstance(pending, _ReadBytes) and pending.target is not None:
            # Hand the partial direct read back to the buffer (nothing is lost).
            with memoryview(pending.target) as view, view[: pending.filled] as part:
                if pending.filled:
                    self._read_buffer.append(part.tobytes())
            pending.target.close()
            pending.target = None
            pending.filled = 0
        self._schedule_drain()

    def reading(self) -> bool:
        """True while a read is pending."""
        return self._pending is not None or self._completed_read is not None

    def writing(self) -> bool:
        """True while written bytes wait to be sent."""
        return self._write_buffer.size > 0

    def closed(self) -> bool:
        """True once the stream is closed."""
        return self._state == _CLOSED

    def fileno(self) -> int:
        """The socket's fd (as it was when the stream was made).

        The stream registers itself with the loop, so ``IOLoop.close(all_fds=True)``
        closes it through :meth:`close` (never the bare fd behind the socket's back).
        """
        return self._fd

    def set_nodelay(self, value: bool) -> None:
        """Turn Nagle's algorithm off (True) or on (False) for a TCP socket.

        TCP streams start with it off (``nodelay=True``, as asyncio and trio
        do): a small reply goes out at once instead of waiting up to ~40 ms
        for the peer's delayed ACK. A no-op for other sockets (UNIX, pipes)
        and on a closed stream; a socket that refuses (its connection
        already gone) is left as it is.
        """
        sock = self.socket
        if self._state is not _CLOSED and sock.family in _TCP_FAMILIES:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if value else 0)
            except OSError:
                pass  # e.g. EINVAL on BSDs once the peer reset: the close says why

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fd={self._fd} {self._state}>"

    # -- reads --------------------------------------------------------------

    def _start_read(self, read: _PendingRead) -> None:
        if self._pending is not None or self._completed_read is not None:
            raise RuntimeError("a read is already pending on this stream")
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
                    if read.streaming_callback is not None and self._stream_step(read):
                        continue
                    try:
                        data = read.complete(buffer, self._state is _CLOSED)
                    except UnsatisfiableReadError as exc:
                        self._pending = None
                        self._log(logging.INFO, "Unsatisfiable read, closing connection", exc)
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
                        # (The close callback tells the caller.)
                        self._pending = None
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

    # -- events --------------------------------------------------------------

    def _wanted_events(self) -> int:
        state = self._state
        if state == _OPEN:
            events = ERROR
            if self._pending is not None or (
                self._close_callback is not None and self._read_buffer.size < self.max_buffer_size
            ):
                events |= READ
            if self._write_buffer.size:
                events |= WRITE
            return events
        if state == _CONNECTING:
            return WRITE | ERROR
        return self._handshake_events()

    def _handshake_events(self) -> int:
        return READ | ERROR

    def _update_events(self) -> None:
        """Tell the loop what to watch, if that changed (a syscall otherwise saved)."""
        state = self._state
        if state is _OPEN and not self._want_write:
            # The common case, inline: READ while someone waits for data,
            # WRITE while bytes wait to be sent.
            events = ERROR
            if self._pending is not None or (
                self._close_callback is not None and self._read_buffer.size < self.max_buffer_size
            ):
                events = READ | ERROR
            if self._write_buffer.size:
                events |= WRITE
        elif state is _CLOSED or state is _NEW:
            return  # nothing to watch (yet)
        else:
            events = self._wanted_events()
        if events != self._events:
            if self._parked:
                if not events & (READ | WRITE):
                    if self._events is not None:
                        self._events = None
                        self.io_loop.remove_handler(self)
                    return
                self._parked = False
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
            if state == _CONNECTING:
                self._finish_connect(events)
            elif state == _HANDSHAKING:
                self._continue_handshake()
            if self._state == _OPEN:
                if events & (READ | ERROR):
                    self._handle_read(events)
                if events & WRITE and self._state == _OPEN:
                    self._handle_write()
        except OSError as exc:
            # recv failed (reset, aborted, ...): WARNING, or DEBUG when the
            # peer merely went away (not a bug); `error` records it either way.
            self._close_logged(exc, "Read error")
        except Exception as exc:
            app_log.exception("Uncaught exception in %r", self)
            self.close(exc)
        if self._ready or self._completed_read is not None or self._state is _CLOSED:
            self._drain()
        self._update_events()

    def _handle_read(self, events: int) -> None:
        """Receive what the pending read can use (bounded per event), deliver it.

        The read-ahead policy (module docstring): receive while a read is
        pending, or, with no read pending, while a close callback is set;
        never past ``max_buffer_size``.
        """
        buffer = self._read_buffer
        for _ in range(MAX_RECVS_PER_EVENT):
            read = self._pending
            if read is None:
                # Idle: read ahead only to notice the peer's close, bounded.
                room = self.max_buffer_size - buffer.size
                if self._close_callback is None or room <= 0:
                    break
            elif read.target is not None:
                received = self._recv_direct(read)  # type: ignore[arg-type]
                if received <= 0:
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
            try:
                received = self.socket.recv_into(view, size)
            except OSError as exc:
                received = self._recv_failed(exc, view, size)
            if received < 0:  # would block
                return
            if received == 0:
                self._on_eof()
                return
            buffer.append(view[:received])
            if self._pending is not None:
                self._drain()
                if self._state is _CLOSED:
                    return
                read = self._pending
                if read is not None and read.__class__ is _ReadBytes:
                    self._prepare_direct_read(read)
            if received < size and self._short_read_drains:
                return  # the kernel had no more: don't pay for an EAGAIN
        else:
            return
        # Not receiving (back-pressure, or idle without a close callback).
        if events & ERROR and self._state is _OPEN:
            self._on_socket_error()

    def _on_buffer_full(self, read: _PendingRead) -> None:
        """The buffer holds max_buffer_size bytes and *read* is unsatisfied.

        A ``read_until_close`` may still fit exactly: one more byte is asked
        for (EOF: it completes; a byte: overflow, and that byte is dropped
        with the connection; nothing yet: wait). Any other read cannot be
        satisfied within the limit.
        """
        if read.__class__ is _ReadUntilClose:
            with _scratch_view()[:1] as one:
                received = self._recv_into(one, 1)
            if received < 0:
                return
            if received == 0:
                self._on_eof()
                return
        full = StreamBufferFullError(
            f"read buffer reached max_buffer_size={self.max_buffer_size} "
            f"and the pending read needs more"
        )
        self._log(logging.INFO, "Reached max_buffer_size, closing connection", full)
        self.close(full)

    def _recv_direct(self, read: _ReadBytes) -> int:
        target = read.target
        assert target is not None
        with memoryview(target) as view, view[read.filled :] as rest:
            received = self._recv_into(rest, len(rest))
        if received == 0:
            self._on_eof()
            return 0
        if received > 0:
            read.filled += received
            if read.filled == len(target):
                self._drain()
        return received

    def _recv_into(self, view: memoryview, size: int) -> int:
        """One ``recv_into``: bytes received, 0 at EOF, -1 if it would block.

        Other errors (a reset, say) are raised; the handler closes with them.
        """
        try:
            return self.socket.recv_into(view, size)
        except OSError as exc:
            return self._recv_failed(exc, view, size)

    def _recv_failed(self, exc: OSError, view: memoryview, size: int) -> int:
        """Sort out a failed ``recv_into``: -1 for "not now", a retry's result
        after EINTR, or the error raised again."""
        if isinstance(exc, InterruptedError):
            return self._recv_into(view, size)  # EINTR never closes a stream: retry
        if isinstance(exc, ssl.SSLWantReadError):
            return -1
        if isinstance(exc, ssl.SSLWantWriteError):
            # TLS 1.2 renegotiation must write before it can read on.
            self._want_write = True
            return -1
        if is_would_block(exc):
            return -1
        raise exc

    def _on_eof(self) -> None:
        """The peer closed: deliver what the buffer satisfies, then close."""
        if self._pending is not None:
            self._drain()
        self.close()

    def _on_socket_error(self) -> None:
        """ERROR while not receiving: close with the socket's pending error.

        A hang-up with no error pending (a pipe's writer closed, say) may
        still leave unread data: the stream is parked (unwatched) until a
        read or a write wants the fd again, instead of hearing the same
        hang-up on every loop iteration.
        """
        code = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._close_logged(error_from_code(code), "Read error")
        else:
            self._parked = True

    # -- writes ---------------------------------------------------------------

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
        sent = self._send(chunk)
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
        """One ``send``: bytes sent, 0 if it would block, -1 if it failed
        (the stream is then closed with the error)."""
        while True:
            try:
                return self.socket.send(view)
            except InterruptedError:
                continue  # EINTR never closes a stream: retry
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                # OpenSSL will want this very send again, same bytes: the
                # write buffer keeps its front piece unchanged until then.
                return 0
            except OSError as exc:
                if is_would_block(exc):
                    if len(view) > WINDOWS_WRITE_CHUNK_SIZE and _is_no_buffer_space(exc):
                        # Windows refuses a send larger than the socket
                        # buffer (WSAENOBUFS) instead of sending part: with
                        # a write_chunk_size above 128 KiB, every retry of
                        # this size would fail again. Cap it from now on.
                        # The caller queues the rest; the next send uses it.
                        self.write_chunk_size = WINDOWS_WRITE_CHUNK_SIZE
                    return 0
                self._close_logged(exc, "Write error")
                return -1

    def _ready_write_callbacks(self) -> None:
        callbacks = self._write_callbacks
        sent = self._bytes_sent
        while callbacks and callbacks[0][0] <= sent:
            self._ready.append((callbacks.popleft()[1], ()))

    # -- connecting and closing -------------------------------------------------

    def _prepare_connect(self, address: Any, server_hostname: str | None) -> None:
        """Hook for subclasses: remember what connect() needs later."""

    def _finish_connect(self, events: int) -> None:
        code = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._connect_failed(error_from_code(code))
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
            self._log(logging.WARNING, "Connect error", exc, prefix=True)
        self.close(exc)

    def _peer_text(self) -> str:
        peer = self._peer
        if isinstance(peer, tuple) and len(peer) >= 2:
            host = str(peer[0])
            return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
        return str(peer) if peer else "unknown peer"

    def _log(self, level: int, what: str, exc: BaseException, prefix: bool = False) -> None:
        """Log *exc* once on the ``iostream`` logger, naming the fd and peer."""
        if prefix:
            app_log.log(level, "%s on fd %d (%s): %s", what, self._fd, self._peer_text(), exc)
        else:
            app_log.log(level, "%s: %s (fd %d, %s)", what, exc, self._fd, self._peer_text())

    def _close_logged(self, exc: BaseException, what: str) -> None:
        """Close with a read or write error: WARNING, DEBUG if the peer merely left."""
        if self._state is not _CLOSED:
            level = logging.DEBUG if is_connection_lost(exc) else logging.WARNING
            self._log(level, what, exc, prefix=True)
        self.close(exc)

    def _close_quietly(self, exc: OSError) -> None:
        """Close a stream whose connection died before it was made (DEBUG)."""
        if self._state is not _CLOSED:
            self._log(logging.DEBUG, "Connection gone before use", exc, prefix=True)
        self.close(exc)

    def _continue_handshake(self) -> None:
        """Hook: drive a handshake one step (TLS streams only)."""
        raise AssertionError("a plain IOStream never handshakes")

    def _on_connected(self) -> None:
        """The TCP connection is up: run the connect callback, send what waits."""
        callback = self._connect_callback
        self._connect_callback = None
        if callback is not None:
            self._ready.append((callback, ()))
        if self._write_buffer.size or self._write_callbacks:
            self._handle_write()


class SSLIOStream(IOStream):
    """An :class:`IOStream` over TLS.

    ``SSLIOStream(socket, ssl_options=None, server_side=False, **kwargs)``;
    *ssl_options* is an :class:`ssl.SSLContext` or a dict of ``certfile``,
    ``keyfile``, ``cert_reqs``, ``ca_certs``, ``ciphers``. A client verifies
    the certificate and host name by default (``ssl.create_default_context``);
    a dict keeps verification on unless its ``cert_reqs`` turns it off. TLS
    1.2 is the minimum for contexts built here. The handshake never blocks;
    the connect callback runs after it; reads and writes issued before it
    wait for it. A failed handshake closes the stream with the
    :class:`ssl.SSLError` in ``error``.
    """

    _short_read_drains = False

    def __init__(
        self,
        socket: socket.socket,
        ssl_options: ssl.SSLContext | dict[str, Any] | None = None,
        server_side: bool = False,
        **kwargs: Any,
    ) -> None:
        self._ssl_read_scheduled = False
        super().__init__(socket, **kwargs)
        self._server_hostname: str | None = None
        if isinstance(socket, ssl.SSLSocket):
            # Already wrapped (Tornado's documented way to make a server-side
            # SSLIOStream): its context and side are the socket's own.
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
            self._set_events(self._handshake_events())
        self._continue_handshake()

    def _wrap_socket(self, sock: socket.socket) -> ssl.SSLSocket:
        """Wrap the plain socket (a hook tests override to inject faults)."""
        return self.ssl_context.wrap_socket(
            sock,
            server_side=self.server_side,
            do_handshake_on_connect=False,
            server_hostname=None if self.server_side else self._server_hostname,
        )

    def _handshake_events(self) -> int:
        return (WRITE if self._want_write else READ) | ERROR

    def _continue_handshake(self) -> None:
        sock = self.socket
        assert isinstance(sock, ssl.SSLSocket)
        while True:
            try:
                sock.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._want_write = False
                return
            except ssl.SSLWantWriteError:
                self._want_write = True
                return
            except InterruptedError:
                continue  # EINTR: the step did not run; run it again
            except (ssl.SSLError, OSError) as exc:
                self.close(exc)
                return
        self._want_write = False
        self._state = _OPEN
        IOStream._on_connected(self)
        if self._state == _OPEN:
            # Application data may already sit decrypted inside OpenSSL.
            self._handle_read(READ)

    def _handle_read(self, events: int) -> None:
        # OpenSSL may hold decrypted bytes that the kernel no longer reports
        # as readable (they left the socket inside a larger record), and a
        # poller would never wake us for them: read until OpenSSL has none.
        # Each pass either empties OpenSSL's buffer or fills ours, which
        # closes the stream at max_buffer_size, so this ends.
        while True:
            super()._handle_read(events)
            sock = self.socket
            if self._state != _OPEN or not isinstance(sock, ssl.SSLSocket) or not sock.pending():
                break
            if self._pending is None and (
                self._close_callback is None or self._read_buffer.size >= self.max_buffer_size
            ):
                # Back-pressure: the rest waits inside OpenSSL until a read
                # wants it (_update_events schedules that read).
                break

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

    def _handle_write(self) -> None:
        super()._handle_write()
        if self._want_write and self._state == _OPEN:
            self._want_write = False
            self._handle_read(READ)

    def _send_now(self, data: bytes | memoryview, size: int) -> bytes | memoryview | None:
        # Always through the write buffer: after want-write, OpenSSL must be
        # handed the very same bytes again, and the buffer guarantees that.
        self._write_buffer.append(data)
        self._handle_write()
        return None

    def _wanted_events(self) -> int:
        events = super()._wanted_events()
        if self._state == _OPEN and self._want_write:
            events |= WRITE
        return events


def _new_read_target(size: int) -> mmap.mmap:
    """A zeroed, writable buffer of *size* bytes for a large direct read.

    Why an anonymous mapping and not ``bytearray(size)``: for tens of MiB,
    the cost that dominates is the kernel faulting fresh pages in, one
    trap per 4 KiB page. ``bytearray`` zero-fills (faulting every page in
    one by one) before a byte arrives; on Linux, ``MAP_POPULATE`` has the
    kernel map the whole region in one call instead, a third cheaper
    (measured here: 64 MiB in 21 ms against 30 ms). Elsewhere the mapping
    is plain (Windows' ``mmap`` takes no flags at all).
    """
    populate = getattr(mmap, "MAP_POPULATE", 0)
    if _WINDOWS or not populate:
        return mmap.mmap(-1, size)
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)


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


_SSL_OPTION_KEYS = frozenset(
    {"certfile", "keyfile", "cert_reqs", "ca_certs", "ciphers", "ssl_version"}
)

#: Tornado's ``ssl_version`` values that pin one protocol version.
_PINNED_VERSIONS = {
    name: version
    for name, version in (
        ("PROTOCOL_TLSv1_2", ssl.TLSVersion.TLSv1_2),
        ("PROTOCOL_TLSv1_1", ssl.TLSVersion.TLSv1_1),
        ("PROTOCOL_TLSv1", ssl.TLSVersion.TLSv1),
    )
    if hasattr(ssl, name)
}


def _context_for_version(ssl_version: object, server_side: bool) -> tuple[ssl.SSLContext, bool]:
    """A context for Tornado's ``ssl_version`` key: ``(context, pinned)``.

    ``PROTOCOL_TLS`` / ``PROTOCOL_SSLv23`` (negotiate) and the side's own
    ``PROTOCOL_TLS_SERVER`` / ``PROTOCOL_TLS_CLIENT`` give the modern
    context (no deprecation warning); ``PROTOCOL_TLSv1_2`` pins TLS 1.2.
    Versions below 1.2 are refused: this library's floor is TLS 1.2.
    """
    protocol = ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT
    if not isinstance(ssl_version, int) or isinstance(ssl_version, bool):
        raise ValueError(
            f"ssl_options['ssl_version'] must be an ssl.PROTOCOL_* constant, not {ssl_version!r}"
        )
    wrong_side = ssl.PROTOCOL_TLS_CLIENT if server_side else ssl.PROTOCOL_TLS_SERVER
    if ssl_version == wrong_side:
        side = "server" if server_side else "client"
        raise ValueError(f"ssl_options['ssl_version']={ssl_version!r} is not for a {side} stream")
    if ssl_version in (ssl.PROTOCOL_TLS, protocol):
        return ssl.SSLContext(protocol), False
    for name, version in _PINNED_VERSIONS.items():
        if ssl_version == getattr(ssl, name):
            if version < ssl.TLSVersion.TLSv1_2:
                raise ValueError(
                    f"ssl_options['ssl_version']=ssl.{name} is below TLS 1.2, which this "
                    "library refuses"
                )
            context = ssl.SSLContext(protocol)
            context.minimum_version = context.maximum_version = version
            return context, True
    raise ValueError(f"ssl_options['ssl_version']={ssl_version!r} is not a TLS protocol")


def make_ssl_context(
    ssl_options: ssl.SSLContext | dict[str, Any] | None, server_side: bool
) -> ssl.SSLContext:
    """Build the :class:`ssl.SSLContext` an SSLIOStream or TCPServer uses.

    An ``SSLContext`` is returned as it is. ``None`` (client only) and a dict
    give a context with verification on, TLS 1.2 at least; a dict's
    ``cert_reqs=ssl.CERT_NONE`` turns verification off. A dict may name
    Tornado's ``ssl_version`` (``ssl.PROTOCOL_TLS``, the side's
    ``PROTOCOL_TLS_SERVER``/``PROTOCOL_TLS_CLIENT``, or
    ``PROTOCOL_TLSv1_2`` to pin TLS 1.2; older versions are refused).
    """
    if isinstance(ssl_options, ssl.SSLContext):
        return ssl_options
    if ssl_options is None:
        if server_side:
            raise ValueError("ssl_options must give a certfile for a server-side TLS stream")
        ssl_options = {}
    if not isinstance(ssl_options, dict):
        raise TypeError(
            "ssl_options must be an ssl.SSLContext, a dict or None, "
            f"not {type(ssl_options).__name__}"
        )
    unknown = set(ssl_options) - _SSL_OPTION_KEYS
    if unknown:
        raise ValueError(
            f"ssl_options has unknown keys {sorted(unknown)}; known: {sorted(_SSL_OPTION_KEYS)}"
        )
    pinned = False
    if "ssl_version" in ssl_options:
        context, pinned = _context_for_version(ssl_options["ssl_version"], server_side)
    if server_side:
        if not ssl_options.get("certfile"):
            raise ValueError("ssl_options must give a certfile for a server-side TLS stream")
        if "ssl_version" not in ssl_options:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if "cert_reqs" in ssl_options:
            context.verify_mode = ssl_options["cert_reqs"]
    else:
        if "ssl_version" in ssl_options:
            # PROTOCOL_TLS_CLIENT verifies (CERT_REQUIRED, check_hostname);
            # create_default_context also loads the system's trusted CAs.
            if not ssl_options.get("ca_certs"):
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            context = ssl.create_default_context()
        if "cert_reqs" in ssl_options:
            if ssl_options["cert_reqs"] == ssl.CERT_NONE:
                context.check_hostname = False
            context.verify_mode = ssl_options["cert_reqs"]
    if not pinned:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if ssl_options.get("certfile"):
            context.load_cert_chain(ssl_options["certfile"], ssl_options.get("keyfile"))
        if ssl_options.get("ca_certs"):
            context.load_verify_locations(ssl_options["ca_certs"])
    except OSError as exc:
        # ssl's own message names neither the option nor the file.
        names = ", ".join(
            f"{key}={ssl_options[key]!r}"
            for key in ("certfile", "keyfile", "ca_certs")
            if ssl_options.get(key)
        )
        raise type(exc)(
            exc.errno, f"ssl_options: cannot load {names}: {exc.strerror or exc}"
        ) from exc
    if ssl_options.get("ciphers"):
        context.set_ciphers(ssl_options["ciphers"])
    return context


_socket_type = socket.socket
_stream_type = socket.SOCK_STREAM
_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
