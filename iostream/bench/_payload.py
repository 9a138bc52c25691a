"""Deterministic payloads and the sinks that verify them.

The sender and the receiver run in different processes; both rebuild the
same bytes from a sequence number, so the receiver can check every byte
without the sender telling it anything.

- A *block* (64 KiB) is ``seq | body | seq``: the sequence number (8 bytes,
  little-endian) at both ends and, between them, a 65520-byte window into a
  random pool whose offset depends on ``seq``. A lost, doubled, reordered or
  shifted byte changes a sequence number or the body.
- A *line* (100 bytes) is its 11-digit sequence number, ``:``, 87 letters
  chosen by the number, and ``\\n``.
- The *until message* is letters (no ``\\n``) followed by one ``\\n``.

Checking costs little next to the work measured: a block is checked with
``bytes.startswith`` (a ``memcmp``, about 2 us per 64 KiB here, against
20 us for ``zlib.crc32``); lines are checked in batches of 4096 with one
``join`` and one ``startswith`` against the expected stream, made before
the clock starts. Messages larger than a block are kept and checked after
the clock stops.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from time import perf_counter

from iostream.bench._config import BLOCK, ECHO_LINE, LINE

_POOL_SPAN = 4096
_BODY = BLOCK - 16
_POOL: bytes = random.Random(0x10_57_2E_A3).randbytes(_BODY + _POOL_SPAN)
_POOL_VIEW = memoryview(_POOL)
#: Letters only: no delimiter can appear inside a line or the until message.
_LETTERS = bytes(range(ord("a"), ord("z") + 1)) + bytes(range(ord("A"), ord("Z") + 1))
_TEXT: bytes = bytes(_LETTERS[b % len(_LETTERS)] for b in _POOL[: 2 * _POOL_SPAN])
_LINE_TEXT = LINE - 13  # 11 digits, ":" and "\n" around it

#: Lines are verified this many at a time.
LINE_BATCH = 4096


class VerificationError(AssertionError):
    """The data received is not the data sent: the run must not post a number."""


def _body(seq: int) -> memoryview:
    offset = (seq * 61) % _POOL_SPAN
    return _POOL_VIEW[offset : offset + _BODY]


def block_parts(seq: int) -> tuple[bytes, memoryview, bytes]:
    """Return block number *seq* as its three pieces (for ``sendmsg``, no copy)."""
    mark = seq.to_bytes(8, "little")
    return mark, _body(seq), mark


def block(seq: int) -> bytes:
    """Return block number *seq* (``BLOCK`` bytes)."""
    return b"".join(block_parts(seq))


def blocks(first: int, count: int) -> bytes:
    """Return blocks ``first .. first + count - 1`` joined."""
    return b"".join(block(seq) for seq in range(first, first + count))


def block_ok(data: bytes, seq: int) -> bool:
    """Return whether *data* is exactly block number *seq*."""
    if len(data) != BLOCK:
        return False
    mark = seq.to_bytes(8, "little")
    return (
        data.startswith(mark)
        and data.startswith(mark, BLOCK - 8)
        and data.startswith(_body(seq), 8)
    )


def lines(first: int, count: int) -> bytes:
    """Return lines ``first .. first + count - 1`` joined (``LINE`` bytes each)."""
    text = _TEXT
    suffixes = [b":%s\n" % text[j : j + _LINE_TEXT] for j in range(4096)]
    parts: list[bytes] = []
    for i in range(first, first + count):
        parts.append(b"%011d" % i)
        parts.append(suffixes[i % 4096])
    return b"".join(parts)


def cached_lines(count: int, cache_dir: str | None) -> bytes:
    """Return ``lines(0, count)``, kept in *cache_dir* so that each process does not rebuild it.

    Building two million lines takes seconds on a slow core; the harness
    builds them once and every worker reads the file.
    """
    if cache_dir is None:
        return lines(0, count)
    path = Path(cache_dir) / f"lines-{count}.bin"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    if len(data) == count * LINE:
        return data
    data = lines(0, count)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return data


def until_message(size: int) -> bytes:
    """Return the *size*-byte message for the big ``read_until``: letters, then ``\\n``."""
    if size < 1:
        raise ValueError(f"size: expected at least 1, got {size}")
    reps = -(-size // len(_TEXT))
    return (_TEXT * reps)[: size - 1] + b"\n"


def echo_template() -> bytes:
    """Return the ``%``-template of an echo line: ``template % (conn, seq)`` is 64 bytes."""
    head = b"%06d %012d "
    return head + _TEXT[: ECHO_LINE - 21] + b"\n"


# ---------------------------------------------------------------- sinks


class Sink:
    """Receives what one phase reads; :meth:`finish` raises if anything was wrong.

    ``feed`` is the per-read entry point handed to the peer adapters and
    ``end_round`` runs after each round of reads. Neither raises (an
    exception inside a library's callback would be that library's problem,
    not a verdict): they record the first fault, and :meth:`finish` raises
    it after the clock has stopped. ``spent`` is the time the checks took
    while the clock ran; the clock subtracts it.
    """

    feed: Callable[[bytes], None]

    def __init__(self, expected_items: int) -> None:
        self.expected_items = expected_items
        self.items = 0
        self.spent = 0.0
        self.fault: str | None = None

    def end_round(self) -> None:
        """Check what the round delivered, if that was deferred."""

    def _fail(self, message: str) -> None:
        if self.fault is None:
            self.fault = message

    def finish(self) -> None:
        """Raise :class:`VerificationError` unless every item arrived intact."""
        self._check()
        if self.fault is None and self.items != self.expected_items:
            self._fail(f"expected {self.expected_items} items, got {self.items}")
        if self.fault is not None:
            raise VerificationError(self.fault)

    def _check(self) -> None:
        """Run the checks deferred until the clock stopped."""


class BlockSink(Sink):
    """Checks each ``read_bytes(BLOCK)`` result as the next block, as it arrives."""

    def __init__(self, expected_items: int) -> None:
        super().__init__(expected_items)
        self.feed = self._feed

    def _feed(self, data: bytes) -> None:
        started = perf_counter()
        seq = self.items
        self.items = seq + 1
        if not block_ok(data, seq):
            self._fail(f"block {seq}: wrong content or length {len(data)}")
        self.spent += perf_counter() - started


class MessageSink(Sink):
    """Keeps each message and compares it with *expected* after the clock stops.

    With ``keeps_delimiter=False`` the message is expected without its final
    byte (a line protocol that strips the delimiter).
    """

    def __init__(self, expected: bytes, keeps_delimiter: bool = True) -> None:
        super().__init__(1)
        self._expected = expected if keeps_delimiter else expected[:-1]
        self._got: list[bytes] = []
        self.feed = self._got.append

    def _check(self) -> None:
        self.items = len(self._got)
        for got in self._got:
            if len(got) != len(self._expected):
                self._fail(f"message: expected {len(self._expected)} bytes, got {len(got)}")
            elif got != self._expected:
                self._fail("message: content differs from what was sent")
        self._got.clear()


class LineSink(Sink):
    """Checks lines a round at a time against the expected stream (made before the clock).

    ``feed`` is the bare ``append`` of the round's list. At the end of a
    round every line must have the right length and the lines joined must be
    the next bytes of the stream: together that proves each item is exactly
    one line, in order. ``keeps_delimiter=False`` expects lines without their
    ``\n`` (as ``bytes.split`` gives them).
    """

    def __init__(self, expected: bytes, keeps_delimiter: bool = True) -> None:
        super().__init__(len(expected) // LINE)
        self._expected = expected
        self._keeps = keeps_delimiter
        self._length = LINE if keeps_delimiter else LINE - 1
        self._batch: list[bytes] = []
        self._offset = 0
        self.feed = self._batch.append

    def end_round(self) -> None:
        """Check the lines of this round."""
        started = perf_counter()
        self._flush()
        self.spent += perf_counter() - started

    def _flush(self) -> None:
        batch = self._batch
        if not batch:
            return
        count = len(batch)
        first = self.items
        self.items = first + count
        lengths = list(map(len, batch))
        joined = b"".join(batch) if self._keeps else b"\n".join(batch) + b"\n"
        batch.clear()
        if min(lengths) != self._length or max(lengths) != self._length:
            self._fail(f"lines {first}..{first + count - 1}: a line is not {self._length} bytes")
        elif not self._expected.startswith(joined, self._offset):
            self._fail(f"lines {first}..{first + count - 1}: content differs from what was sent")
        self._offset += len(joined)

    def _check(self) -> None:
        self._flush()
