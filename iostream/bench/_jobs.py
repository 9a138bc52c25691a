"""The phases of the one-way workloads, as the sender and the receiver both see them.

A one-way run is a list of :class:`PhaseSpec`: the receiver writes the
phase's ``go`` bytes, the sender (which waits for them) sends the payload,
and the receiver reads it with ``count`` reads of one kind. The first phase
is an untimed one-byte hello, so the TLS handshake and the connection setup
are never on the clock.

The receiver turns each spec into one or more :class:`ReadPhase` objects,
the only thing a peer adapter sees: ``go``, ``until``, ``size``, ``count``,
``feed`` (call it with each read's result) and ``begin``/``end`` (call them
around the phase). The lines phase is cut into rounds of
:data:`~iostream.bench._payload.LINE_BATCH` reads so that ``feed`` can be a
bare ``list.append``; each round's ``end`` checks the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from iostream.bench import _payload
from iostream.bench._config import BLOCK, LINE, OWN, Sizes

_HELLO = b"H"


@dataclass(frozen=True)
class PhaseSpec:
    """One phase of a one-way workload.

    ``label`` names the result ("" for the untimed hello); ``until`` selects
    ``read_until(b"\\n")`` rather than ``read_bytes(size)``; ``size`` is the
    bytes per read, or the length of each delimited item.
    """

    label: str
    go: bytes
    until: bool
    size: int
    count: int

    @property
    def total(self) -> int:
        """Bytes in the whole phase."""
        return self.size * self.count


def parts(workload: str) -> list[str]:
    """The one-way runs a workload is made of, each on its own connection.

    bigmsg is two: a user reading one 64 MiB message with asyncio keeps the
    default buffer limit, while one reading 16 MiB lines must raise it; on
    separate connections each gets the setting a user would choose.
    """
    prefix = OWN if workload.startswith(OWN) else ""
    base = workload[len(prefix) :]
    if base == "bigmsg":
        return [prefix + "bigmsg-bytes", prefix + "bigmsg-until"]
    return [workload]


def split_part(part: str) -> tuple[bool, str]:
    """Return whether *part* is written by the peer's own client, and its shared-sender name."""
    if part.startswith(OWN):
        return True, part[len(OWN) :]
    return False, part


def phases_for(part: str, sizes: Sizes) -> list[PhaseSpec]:
    """Return the phases of a one-way run (a :func:`parts` name), the hello first.

    An ``own-*`` part has the phases of the shared-sender part it is named
    after; labels are the shared names (the harness prefixes the metric).
    """
    part = split_part(part)[1]
    hello = PhaseSpec("", b"", False, len(_HELLO), 1)
    if part in ("bulk", "tls-bulk"):
        total = sizes.bulk_bytes if part == "bulk" else sizes.tls_bytes
        return [hello, PhaseSpec(part, b"1", False, BLOCK, total // BLOCK)]
    if part == "lines":
        return [hello, PhaseSpec("lines", b"1", True, LINE, sizes.lines)]
    if part == "bigmsg-bytes":
        return [hello, PhaseSpec(part, b"1", False, sizes.big_bytes, 1)]
    if part == "bigmsg-until":
        return [hello, PhaseSpec(part, b"1", True, sizes.big_until, 1)]
    raise ValueError(f"part: expected a one-way run, got {part!r}")


# ---------------------------------------------------------------- sender side


#: Blocks the sender hands the kernel per write (1 MiB), in every one-way workload.
#: With one 64 KiB block per write, one core of sender tops out near 1.4 GB/s
#: here, below what the fastest receivers take; the receiver's reads are
#: ``read_bytes(65536)`` either way, and loopback TCP segments are 64 KiB
#: whatever the write size.
BLOCKS_PER_WRITE = 16

Write = list[bytes | memoryview]


def payload(spec: PhaseSpec, cache_dir: str | None) -> Iterator[Write]:
    """Yield the sender's writes for *spec*, in order; each is a list of buffers."""
    if not spec.label:
        yield [_HELLO]
    elif spec.label in ("bulk", "tls-bulk"):
        for first in range(0, spec.count, BLOCKS_PER_WRITE):
            parts: Write = []
            for seq in range(first, min(spec.count, first + BLOCKS_PER_WRITE)):
                parts.extend(_payload.block_parts(seq))
            yield parts
    elif spec.label == "lines":
        yield from _slices(_payload.cached_lines(spec.count, cache_dir))
    elif spec.label == "bigmsg-bytes":
        yield from _slices(_payload.blocks(0, spec.size // BLOCK))
    elif spec.label == "bigmsg-until":
        yield from _slices(_payload.until_message(spec.size))
    else:
        raise ValueError(f"spec: unknown phase {spec.label!r}")


def _slices(data: bytes) -> Iterator[Write]:
    """*data* as writes of ``BLOCKS_PER_WRITE`` blocks (1 MiB), without copying."""
    view = memoryview(data)
    step = BLOCK * BLOCKS_PER_WRITE
    for start in range(0, len(view), step):
        yield [view[start : start + step]]


@dataclass
class WritePhase:
    """What a peer's own client runs (``own-*`` workloads): wait for ``go``, write ``chunks``.

    The adapter reads ``len(go)`` bytes with its library and passes them to
    ``check_go`` (which records a mismatch), calls ``begin()``, writes every
    chunk with one ``write()`` call each, waiting for its library's flow
    control as a user would, and calls ``end()`` once the library has handed
    the last chunk to the kernel (or, where it cannot tell, once the write
    returned). After the last phase it waits for the receiver to close.
    """

    go: bytes
    chunks: list[memoryview]
    check_go: Callable[[bytes], None]
    begin: Callable[[], None]
    end: Callable[[], None]


def own_chunks(spec: PhaseSpec, cache_dir: str | None) -> list[memoryview]:
    """The payload of *spec* as the peer's client writes it: ``BLOCK``-sized views, no copies.

    Built in full before connecting (512 MiB for bulk), so building is never
    on the clock and every library gets the same zero-copy buffers.
    """
    if not spec.label:
        return [memoryview(_HELLO)]
    if spec.label in ("bulk", "tls-bulk", "bigmsg-bytes"):
        data = _payload.blocks(0, spec.total // BLOCK)
    elif spec.label == "lines":
        data = _payload.cached_lines(spec.count, cache_dir)
    elif spec.label == "bigmsg-until":
        data = _payload.until_message(spec.size)
    else:
        raise ValueError(f"spec: unknown phase {spec.label!r}")
    view = memoryview(data)
    return [view[start : start + BLOCK] for start in range(0, len(view), BLOCK)]


# ---------------------------------------------------------------- receiver side


class Clock:
    """Times one labelled phase, from the first round's ``begin`` to the last round's ``end``.

    The time its sink spent checking data inside that span is subtracted
    (``sink.spent``), so verification does not dilute the comparison.
    """

    def __init__(self, spec: PhaseSpec, sink: _payload.Sink) -> None:
        self.spec = spec
        self.sink = sink
        self.started = 0.0
        self.stopped = 0.0

    def begin(self) -> None:
        """Start the clock, unless a previous round already did."""
        if not self.started:
            self.started = time.perf_counter()

    def stop(self) -> None:
        """Stop the clock (the last round calls this)."""
        self.stopped = time.perf_counter()

    def seconds(self) -> float:
        """Return the measured time, verification excluded."""
        if not self.stopped:
            raise _payload.VerificationError(f"phase {self.spec.label!r} did not finish")
        return self.stopped - self.started - self.sink.spent


@dataclass
class ReadPhase:
    """What a peer adapter runs: ``count`` reads, each result passed to ``feed``.

    The adapter calls ``begin()``, writes ``go`` (if not empty), issues the
    reads (``read_until(b"\\n")`` when ``until``, else ``read_bytes(size)``),
    passes each result to ``feed`` and calls ``end()`` after the last one.
    """

    go: bytes
    until: bool
    size: int
    count: int
    feed: Callable[[bytes], None]
    begin: Callable[[], None]
    end: Callable[[], None]


def _make_sink(spec: PhaseSpec, keeps_delimiter: bool, cache_dir: str | None) -> _payload.Sink:
    if not spec.label:
        return _payload.MessageSink(_HELLO)
    if spec.label == "lines":
        expected = _payload.cached_lines(spec.count, cache_dir)
        return _payload.LineSink(expected, keeps_delimiter)
    if spec.label == "bigmsg-bytes":
        return _payload.MessageSink(_payload.blocks(0, spec.size // BLOCK))
    if spec.label == "bigmsg-until":
        return _payload.MessageSink(_payload.until_message(spec.size), keeps_delimiter)
    return _payload.BlockSink(spec.count)


def _rounds(count: int, until: bool) -> list[int]:
    if not until or count <= _payload.LINE_BATCH:
        return [count]
    full, rest = divmod(count, _payload.LINE_BATCH)
    return [_payload.LINE_BATCH] * full + ([rest] if rest else [])


def read_phases(
    specs: list[PhaseSpec], keeps_delimiter: bool, cache_dir: str | None
) -> tuple[list[ReadPhase], list[Clock]]:
    """Build the adapter's phases and the clocks that time them, sinks made up front."""
    phases: list[ReadPhase] = []
    clocks: list[Clock] = []
    for spec in specs:
        sink = _make_sink(spec, keeps_delimiter, cache_dir)
        clock = Clock(spec, sink)
        clocks.append(clock)
        rounds = _rounds(spec.count, spec.until)
        feed = sink.feed
        for index, count in enumerate(rounds):
            last = index == len(rounds) - 1
            end = _round_end(sink, clock, last)
            phases.append(
                ReadPhase(
                    spec.go if index == 0 else b"",
                    spec.until,
                    spec.size,
                    count,
                    feed,
                    clock.begin,
                    end,
                )
            )
    return phases, clocks


def _round_end(sink: _payload.Sink, clock: Clock, last: bool) -> Callable[[], None]:
    def end() -> None:
        sink.end_round()
        if last:
            clock.stop()

    return end
