"""The one read a stream may have pending: what it waits for, whom to tell.

A read that the buffer cannot satisfy when it is issued becomes one of
these objects (one class per kind) until its data is there. The stream asks
``complete(buffer, closed)`` whenever the read may have progressed: it
takes the read's data from the buffer and returns it (for ``read_into``, the
byte count), or returns None if it is not there yet, or raises
:class:`UnsatisfiableReadError` if it never can be.

Fields every read has (class defaults where a kind does not use them, so
the stream's hot loop reads them without ``getattr``):

* ``callback``: called with the result (for a Future: its ``set_result``);
* ``future``: the Future the caller awaits, or None with a callback;
* ``streaming_callback``: gets data as it arrives (``read_bytes``,
  ``read_until_close``); ``streamed(n)`` records it;
* ``target`` / ``filled``: a buffer that ``recv`` fills directly — the
  final buffer of a large ``read_bytes`` (an anonymous mapping) or the
  caller's buffer of ``read_into`` — and how much of it is filled.

Invariant: while ``target`` is set, the stream's read buffer is empty (its
bytes were moved into the target first), so bytes stay in order.
"""

from __future__ import annotations

import asyncio
import mmap
import re
from collections.abc import Callable
from typing import Any

from iostream._buffer import ReadBuffer
from iostream._errors import UnsatisfiableReadError

DataCallback = Callable[[bytes], object]


class _PendingRead:
    """Base of the pending reads; see the module docstring."""

    __slots__ = ("callback",)

    callback: Callable[[Any], object]
    # Class-level defaults; only the reads that use them make them slots.
    future: asyncio.Future[Any] | None = None
    streaming_callback: DataCallback | None = None
    target: mmap.mmap | memoryview | None = None
    filled: int = 0
    partial: bool = False

    def complete(self, buffer: ReadBuffer, closed: bool) -> Any:
        """This read's result, taken from *buffer*, or None if not there yet."""
        raise NotImplementedError

    def streamed(self, n: int) -> None:
        """Record that *n* bytes went to the streaming callback."""


class _ReadUntil(_PendingRead):
    __slots__ = ("delimiter", "future", "max_bytes", "scanned")

    def __init__(
        self,
        delimiter: bytes,
        callback: DataCallback,
        max_bytes: int | None,
        future: asyncio.Future[Any] | None = None,
    ):
        # (No super().__init__: this runs once per line read.)
        self.callback = callback
        self.future = future
        self.delimiter = delimiter
        self.max_bytes = max_bytes
        # Bytes already searched without finding the delimiter: the next
        # search starts just before their end (a delimiter may straddle it).
        self.scanned = 0

    def complete(self, buffer: ReadBuffer, closed: bool) -> bytes | None:
        max_bytes = self.max_bytes
        size = buffer.size
        if max_bytes is None and buffer._acc is None:
            # ReadBuffer.take_through's head form, inlined (the stream's
            # hot-path table): once per message that arrives after its read.
            head = buffer._head
            pos = buffer._pos
            delimiter = self.delimiter
            index = head.find(delimiter, pos + self.scanned)
            if index < 0:
                self.scanned = max(0, size - len(delimiter) + 1)
                return None
            stop = index + len(delimiter)
            remaining = size - (stop - pos)
            buffer.size = remaining
            if remaining:
                buffer._pos = stop
            else:
                buffer._head = b""
                buffer._pos = 0
            return head[pos:stop]
        end = size if max_bytes is None or max_bytes > size else max_bytes
        data = buffer.take_through(self.delimiter, self.scanned, end)
        if data is None:
            if max_bytes is not None and size >= max_bytes:
                raise UnsatisfiableReadError(
                    f"delimiter {self.delimiter!r} not found within max_bytes={max_bytes}"
                )
            self.scanned = max(0, end - len(self.delimiter) + 1)
        return data


class _ReadUntilRegex(_PendingRead):
    __slots__ = ("future", "max_bytes", "pattern")

    def __init__(
        self,
        pattern: re.Pattern[bytes],
        callback: DataCallback,
        max_bytes: int | None,
        future: asyncio.Future[Any] | None,
    ):
        self.callback = callback
        self.future = future
        self.pattern = pattern
        self.max_bytes = max_bytes

    def complete(self, buffer: ReadBuffer, closed: bool) -> bytes | None:
        # The whole buffer is searched, and a match that ends past max_bytes
        # fails the read (Tornado's rule). Why not search only the first
        # max_bytes: the regex engine takes that bound for the end of the
        # input, so ``$``, ``\b`` and lookaheads would match at byte
        # max_bytes where the stream's data goes on (rb"foo\b" in b"foobar").
        max_bytes = self.max_bytes
        size = buffer.size
        stop = buffer.search(self.pattern, size)
        if max_bytes is not None and (stop > max_bytes or (stop < 0 and size > max_bytes)):
            raise UnsatisfiableReadError(
                f"pattern {self.pattern.pattern!r} not matched within max_bytes={max_bytes}"
            )
        if stop < 0:
            return None
        return buffer.take(stop)


class _ReadBytes(_PendingRead):
    __slots__ = (
        "filled",
        "future",
        "partial",
        "populated",
        "remaining",
        "streaming_callback",
        "target",
    )

    def __init__(
        self,
        num_bytes: int,
        callback: DataCallback,
        streaming_callback: DataCallback | None,
        future: asyncio.Future[Any] | None = None,
        partial: bool = False,
    ):
        self.callback = callback
        self.future = future
        self.streaming_callback = streaming_callback
        self.target = None
        self.filled = 0
        #: How much of a direct read's target is mapped in (see
        #: ``iostream.stream._populate_ahead``).
        self.populated = 0
        self.remaining = num_bytes
        self.partial = partial

    def complete(self, buffer: ReadBuffer, closed: bool) -> bytes | None:
        target = self.target
        if target is not None:
            if self.filled < len(target):
                return None
            self.target = None
            data = target[:]  # the one copy out, into the bytes the callback gets
            target.close()  # type: ignore[union-attr]
            return data  # type: ignore[return-value]
        size = buffer.size
        if size < self.remaining:
            if self.partial and size:
                return buffer.take(size)
            return None
        return buffer.take(self.remaining)

    def streamed(self, n: int) -> None:
        self.remaining -= n


class _ReadInto(_PendingRead):
    """``read_into``: the caller's buffer is the target from the start."""

    __slots__ = ("filled", "future", "partial", "target")

    def __init__(
        self,
        target: memoryview,
        callback: Callable[[int], object],
        future: asyncio.Future[Any] | None,
        partial: bool,
    ):
        self.callback = callback
        self.future = future
        self.target = target
        self.filled = 0
        self.partial = partial

    def complete(self, buffer: ReadBuffer, closed: bool) -> int | None:
        target = self.target
        assert target is not None
        filled = self.filled
        if filled < len(target) and buffer.size:
            with memoryview(target) as view, view[filled:] as rest:
                filled += buffer.take_into(rest)
            self.filled = filled
        if filled == len(target) or (self.partial and filled):
            self.target = None
            return filled
        return None


class _ReadUntilClose(_PendingRead):
    __slots__ = ("future", "streaming_callback")

    def __init__(
        self,
        callback: DataCallback,
        streaming_callback: DataCallback | None,
        future: asyncio.Future[Any] | None = None,
    ):
        self.callback = callback
        self.future = future
        self.streaming_callback = streaming_callback

    def complete(self, buffer: ReadBuffer, closed: bool) -> bytes | None:
        return buffer.take(buffer.size) if closed else None
