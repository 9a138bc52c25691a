"""The two byte queues behind a stream: what was received, and what is to be sent.

Both are FIFOs whose every operation costs time in proportion to the bytes
it moves, never to the bytes already queued. That is what makes a stream
linear in the bytes it carries.

:class:`ReadBuffer` — received, not yet handed to a read. Two forms:

* *head*: one immutable ``bytes`` chunk and a consumed offset. This is the
  common case (a ``recv`` returned a chunk; reads take slices of it), and a
  slice of ``bytes`` is already the ``bytes`` a callback wants: one copy of
  the bytes taken, nothing else. A slice that is the whole chunk is the
  chunk itself (no copy at all).
* *accumulator*: a ``bytearray``, for data that outgrows one chunk (a
  message larger than ``MERGE_LIMIT`` waiting for its end). Appending is
  amortised O(len(chunk)); taking from the front is O(bytes taken), because
  CPython's ``bytearray`` deletes a prefix by moving its start pointer.

=====================  ==========================================================
operation              cost
=====================  ==========================================================
``append(chunk)``      O(1) into an empty buffer; O(size + len(chunk)) while the
                       rest is at most ``MERGE_LIMIT`` (merged into one chunk);
                       amortised O(len(chunk)) once accumulating
``find(d, start)``     O(bytes searched): callers resume where they stopped
``take_through(d, …)`` O(bytes searched + bytes taken); ``IOStream.read_until``
                       inlines its head-form case (keep the two in step)
``take(n)``            O(n) (one copy); O(1) when it is a whole head chunk
``take_into(view)``    O(bytes moved): one copy into the caller's buffer
``search(regex, end)`` O(end): a regex search restarts from the front
``size``               O(1), an attribute kept up to date
=====================  ==========================================================

:class:`WriteBuffer` — accepted by ``write``, not yet sent. Small writes are
copied into a ``bytearray`` that gathers them (so a thousand 10-byte writes
become one ``send``); writes of ``COALESCE_LIMIT`` bytes or more are kept as
a ``memoryview`` of the caller's object, never copied. ``peek`` gives a view
of the front piece; once a piece has been peeked at it is never changed
again, so a send that must be retried (TLS want-write) is retried with the
same bytes.

=====================  ==========================================================
operation              cost
=====================  ==========================================================
``append(data)``       O(len(data)) below ``COALESCE_LIMIT``, O(1) above
``peek(limit)``        O(1): a view, no copy
``advance(n)``         O(1) amortised
``size``               O(1)
=====================  ==========================================================
"""

from __future__ import annotations

import re
from collections import deque

#: Below this many unconsumed bytes, a new chunk is merged with the rest into
#: one ``bytes`` (a copy of at most this much plus the chunk), keeping the fast
#: *head* form. Above it, the buffer switches to a ``bytearray`` accumulator so
#: that a large message costs O(n), not O(n^2 / chunk).
MERGE_LIMIT = 128 * 1024

#: Writes smaller than this are copied into a gathering ``bytearray``; larger
#: ones are queued as a ``memoryview`` without a copy.
COALESCE_LIMIT = 16 * 1024

BytesLike = bytes | bytearray | memoryview


class ReadBuffer:
    """FIFO of received bytes; see the module docstring for the cost table."""

    __slots__ = ("_acc", "_head", "_pos", "size")

    def __init__(self) -> None:
        self._head: bytes = b""
        self._pos = 0
        self._acc: bytearray | None = None
        #: Number of bytes buffered.
        self.size = 0

    def append(self, chunk: bytes | memoryview) -> None:
        """Add *chunk* (non-empty) at the end.

        A ``memoryview`` (of a reusable receive buffer, say) is copied once:
        straight into the accumulator when there is one, else into ``bytes``.
        """
        size = self.size
        self.size = size + len(chunk)
        if self._acc is not None:
            self._acc += chunk
        elif size == 0:
            self._head = chunk if isinstance(chunk, bytes) else chunk.tobytes()
            self._pos = 0
        elif size <= MERGE_LIMIT:
            self._head = self._head[self._pos :] + chunk
            self._pos = 0
        else:
            acc = bytearray(memoryview(self._head)[self._pos :])
            acc += chunk
            self._acc = acc
            self._head = b""
            self._pos = 0

    def find(self, delimiter: bytes, start: int, end: int) -> int:
        """Offset of *delimiter* in the buffered bytes ``[start:end]``, or -1."""
        if self._acc is not None:
            return self._acc.find(delimiter, start, end)
        pos = self._pos
        index = self._head.find(delimiter, pos + start, pos + end)
        return index - pos if index >= 0 else -1

    def take_through(self, delimiter: bytes, start: int, end: int | None = None) -> bytes | None:
        """Remove and return the bytes up to and including the first
        *delimiter* found in ``[start:end]`` (``end=None``: to the end);
        None if there is none.

        One call for the commonest read (a line): find, slice, advance.
        """
        if self._acc is None:
            head = self._head
            pos = self._pos
            if end is None:
                index = head.find(delimiter, pos + start)
            else:
                index = head.find(delimiter, pos + start, pos + end)
            if index < 0:
                return None
            stop = index + len(delimiter)
            remaining = self.size - (stop - pos)
            self.size = remaining
            if remaining:
                self._pos = stop
            else:
                self._head = b""
                self._pos = 0
            return head[pos:stop]
        index = self._acc.find(delimiter, start, self.size if end is None else end)
        return None if index < 0 else self.take(index + len(delimiter))

    def take(self, n: int) -> bytes:
        """Remove and return the first *n* bytes (``n <= size``)."""
        remaining = self.size - n
        self.size = remaining
        acc = self._acc
        if acc is None:
            pos = self._pos
            data = self._head[pos : pos + n]
            if remaining:
                self._pos = pos + n
            else:
                self._head = b""
                self._pos = 0
            return data
        if not remaining:
            self._acc = None  # (an empty buffer is in head form again)
            return bytes(acc)
        with memoryview(acc) as view, view[:n] as front:
            data = front.tobytes()
        del acc[:n]  # O(n) at most; CPython moves the start pointer
        if remaining <= MERGE_LIMIT:
            # Back to the fast form: what is left is small.
            self._head = bytes(acc)
            self._pos = 0
            self._acc = None
        return data

    def take_into(self, target: memoryview) -> int:
        """Move buffered bytes into the front of *target* (as many as fit);
        return how many. One copy, straight from the buffer's storage."""
        n = min(self.size, len(target))
        if not n:
            return 0
        acc = self._acc
        if acc is None:
            pos = self._pos
            with memoryview(self._head) as view, view[pos : pos + n] as part:
                target[:n] = part
            remaining = self.size - n
            self.size = remaining
            if remaining:
                self._pos = pos + n
            else:
                self._head = b""
                self._pos = 0
            return n
        with memoryview(acc) as view, view[:n] as part:
            target[:n] = part
        self.size -= n
        del acc[:n]
        if not self.size:
            self._acc = None
        elif self.size <= MERGE_LIMIT:
            self._head = bytes(acc)
            self._pos = 0
            self._acc = None
        return n

    def search(self, pattern: re.Pattern[bytes], end: int) -> int:
        """End offset of *pattern*'s first match in the buffered bytes
        ``[0:end]``, or -1. O(end): a regex cannot resume a search, so each
        call scans from the start (as Tornado's ``read_until_regex`` does)."""
        if self._acc is not None:
            match = pattern.search(self._acc, 0, end)
            return -1 if match is None else match.end()
        pos = self._pos
        match = pattern.search(self._head, pos, pos + end)
        return -1 if match is None else match.end() - pos


class WriteBuffer:
    """FIFO of bytes to send; see the module docstring for the cost table."""

    __slots__ = ("_gathering", "_pieces", "_pos", "size")

    def __init__(self) -> None:
        self._pieces: deque[bytearray | memoryview] = deque()
        # The bytearray that small writes are appended to, or None. It is
        # always the last piece, and never the front one once peeked at.
        self._gathering: bytearray | None = None
        self._pos = 0
        #: Number of bytes queued.
        self.size = 0

    def append(self, data: BytesLike) -> None:
        """Queue *data* (already validated as a non-empty byte view or bytes)."""
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        self.size += n
        if n < COALESCE_LIMIT:
            gathering = self._gathering
            if gathering is None:
                gathering = self._gathering = bytearray()
                self._pieces.append(gathering)
            gathering += data
        else:
            self._gathering = None
            view = data if isinstance(data, memoryview) else memoryview(data)
            if view.format != "B" or view.ndim != 1:
                view = view.cast("B")
            self._pieces.append(view)

    def peek(self, limit: int | None) -> memoryview:
        """A view of up to *limit* bytes (``None``: no limit) from the front.

        The front piece is frozen from now on: later writes go to a new piece.
        """
        front = self._pieces[0]
        if front is self._gathering:
            self._gathering = None
        view = memoryview(front)
        end = len(view) if limit is None else min(len(view), self._pos + limit)
        return view[self._pos : end]

    def advance(self, n: int) -> None:
        """Drop the first *n* bytes, which were sent (``n`` <= the last peek)."""
        self.size -= n
        pos = self._pos + n
        front = self._pieces[0]
        if pos >= len(front):
            self._pieces.popleft()
            self._pos = 0
        else:
            self._pos = pos

    def clear(self) -> None:
        """Drop everything queued."""
        self._pieces.clear()
        self._gathering = None
        self._pos = 0
        self.size = 0
