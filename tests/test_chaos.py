"""Property tests: whatever the kernel (or OpenSSL) does, the bytes arrive intact.

Hypothesis draws, on every poller (the ``io_loop`` fixture):

* the writes: sizes (a few bytes to over a MiB), bytes-like types, and
  where a new loop iteration starts between them;
* the reads: a sequence of ``read_until`` (several delimiters),
  ``read_bytes`` (zero, small, large enough for the direct-read path; with
  or without ``streaming_callback``) and ``read_until_close``, each issued
  from the previous read's callback or from a later loop iteration;
* whether the writer closes as soon as its writes are sent, or waits until
  the reader has got every read the data can satisfy (data stuck in a
  buffer — the stream's, or OpenSSL's — with no event to wake the reader
  then stalls the example instead of being flushed out by the EOF);
* the reader's ``read_chunk_size`` (64 KiB, 4 KiB, 512 B);
* fault schedules (:class:`transport.Fault`, one token per call) for the
  writer's ``send`` and the reader's ``recv``: short sends, short reads,
  ``BlockingIOError`` (EAGAIN and WSAEWOULDBLOCK), ``InterruptedError``,
  ENOBUFS and WSAENOBUFS; for TLS, want-read / want-write on send, recv and
  the handshake.

and checks, against a model of the reads on the same bytes:

* every read gets exactly the bytes the model says, in order — none lost,
  none doubled; a read the data cannot satisfy ends with the peer's close,
  and ``read_until_close`` on the closed stream then gets exactly the rest;
* every ``send`` starts exactly where the accepted bytes end (plain), and a
  TLS send retried after want-read/want-write starts with exactly the bytes
  of the failed one (OpenSSL's rule);
* write callbacks run once each, in order, only once their bytes were
  accepted by the socket; close callbacks run exactly once, on both ends.

A failing case shrinks to a minimal schedule; hypothesis prints the drawn
arguments (faults print as ``short(3)``, ``block``, ``want_write``...) and
the ``note`` lines: the calls each socket saw, and what each read got.

Environment: ``IOSTREAM_TEST_NO_SHRINK=1`` (the mutation runner sets it)
turns shrinking off, derandomizes, and stops at the first failing example,
so a broken library fails fast and the same way every time.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable
from typing import Any

import pytest
from _stream_helpers import (  # noqa: F401  (fixtures)
    TLSFiles,
    Waiter,
    accept_on_loop,
    spin,
    tls_fixture,
)
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from support import loopback_pair

from iostream import IOLoop, IOStream, StreamClosedError
from iostream.testing import (
    OK,
    ChaosSocket,
    ChaosSSLIOStream,
    Fault,
    TLSChaos,
    short,
    wait_with_progress,
)

KiB = 1024
MiB = 1024 * KiB

# ------------------------------------------------------------------ settings

_NO_SHRINK = os.environ.get("IOSTREAM_TEST_NO_SHRINK") == "1"


def chaos_settings(max_examples: int) -> settings:
    """Hypothesis settings for a chaos property with *max_examples* examples."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
        phases=[p for p in Phase if not (_NO_SHRINK and p in (Phase.shrink, Phase.explain))],
        derandomize=_NO_SHRINK,  # (which also keeps the example database out)
        report_multiple_bugs=not _NO_SHRINK,  # mutation runs: stop at the first failure
        print_blob=True,
    )


#: Deadline, seconds, for one example's transfer (a passing one takes
#: milliseconds; a hang fails the example rather than the whole test run),
#: and the most time the reader's socket may go without a byte while the
#: example is not finished.
EXAMPLE_TIMEOUT = 30.0
STALL = 5.0

# ------------------------------------------------------------------ data

#: Payload bytes come from this alphabet, so that every delimiter below
#: occurs (b"xyzzy" rarely: reads that the data never satisfies happen too).
ALPHABET = b"abxyz\r\n.-"
_TABLE = bytes(ALPHABET[i % len(ALPHABET)] for i in range(256))
DELIMITERS = [b"\n", b"\r\n", b"ab", b"xyzzy"]


def make_payload(size: int, seed: int) -> bytes:
    """*size* bytes over :data:`ALPHABET`, from *seed*."""
    return random.Random(seed).randbytes(size).translate(_TABLE)


class Write:
    """One ``write`` call: its size, the object type (``bytes``, ``bytearray``,
    ``memoryview``), and whether the loop turns once before it is issued."""

    __slots__ = ("kind", "later", "size")

    def __init__(self, size: int, kind: str = "bytes", later: bool = False) -> None:
        self.size = size
        self.kind = kind
        self.later = later

    def __repr__(self) -> str:
        return f"{'later:' if self.later else ''}{self.kind}({self.size})"


class Read:
    """One read: ``until`` (delimiter), ``bytes`` (n), or ``close``;
    ``later``: issued from a later loop iteration, not from the callback.

    (Plain classes, not dataclasses: hypothesis prints these with ``repr``.)
    """

    __slots__ = ("delimiter", "kind", "later", "n", "streaming")

    def __init__(
        self,
        kind: str,
        delimiter: bytes = b"",
        n: int = 0,
        streaming: bool = False,
        later: bool = False,
    ) -> None:
        self.kind = kind
        self.delimiter = delimiter
        self.n = n
        self.streaming = streaming
        self.later = later

    def __repr__(self) -> str:
        if self.kind == "until":
            body = f"until({self.delimiter!r})"
        elif self.kind == "bytes":
            body = f"bytes({self.n}{', streaming' if self.streaming else ''})"
        else:
            body = f"close({'streaming' if self.streaming else ''})"
        return f"{'later:' if self.later else ''}{body}"


write_sizes = st.one_of(
    st.integers(1, 100),
    st.integers(1, 20_000),
    st.integers(20_000, 300_000),
    st.integers(300_000, 1_200_000),
)
writes_strategy = st.lists(
    st.builds(
        Write,
        size=write_sizes,
        kind=st.sampled_from(["bytes", "bytearray", "memoryview"]),
        later=st.booleans(),
    ),
    min_size=1,
    max_size=12,
)
read_strategy = st.one_of(
    st.builds(
        Read,
        kind=st.just("until"),
        delimiter=st.sampled_from(DELIMITERS),
        later=st.booleans(),
    ),
    st.builds(
        Read,
        kind=st.just("bytes"),
        n=st.one_of(st.integers(0, 100), st.integers(0, 70_000), st.integers(MiB, MiB + 50_000)),
        streaming=st.booleans(),
        later=st.booleans(),
    ),
)
reads_strategy = st.lists(read_strategy, max_size=12)
#: How the reads end: nothing more (the rest is read after the close), or a
#: read_until_close issued while the stream is open.
final_read_strategy = st.one_of(
    st.none(),
    st.builds(Read, kind=st.just("close"), streaming=st.booleans(), later=st.booleans()),
)

_RAISING = ["block", "eintr", "wsa_block"]
send_fault = st.one_of(
    st.just(OK),
    st.builds(short, st.integers(1, 4096)),
    st.sampled_from([Fault(k) for k in [*_RAISING, "nobufs", "wsa_nobufs"]]),
)
recv_fault = st.one_of(
    st.just(OK),
    st.builds(short, st.integers(1, 4096)),
    st.sampled_from([Fault(k) for k in _RAISING]),
)
tls_send_fault = st.one_of(
    st.just(OK), st.sampled_from([Fault("want_write"), Fault("want_read"), Fault("eintr")])
)
tls_recv_fault = st.one_of(
    st.just(OK),
    st.builds(short, st.integers(1, 4096)),
    st.sampled_from([Fault("want_read"), Fault("want_write"), Fault("eintr")]),
)
tls_handshake_fault = st.sampled_from([OK, Fault("want_write"), Fault("want_read")])
schedules = st.lists  # (alias for readability below)

# ------------------------------------------------------------------ the model


def model(payload: bytes, reads: list[Read]) -> tuple[list[bytes], int | None, bytes]:
    """What each read must get: (results of the reads that complete, index of
    the first read that cannot, the bytes left for ``read_until_close`` after it)."""
    results: list[bytes] = []
    pos = 0
    for i, read in enumerate(reads):
        if read.kind == "until":
            found = payload.find(read.delimiter, pos)
            if found < 0:
                return results, i, payload[pos:]
            end = found + len(read.delimiter)
        elif read.kind == "bytes":
            if pos + read.n > len(payload):
                return results, i, payload[pos:]
            end = pos + read.n
        else:
            end = len(payload)
        results.append(payload[pos:end])
        pos = end
    return results, None, payload[pos:]


# ------------------------------------------------------------------ one exchange


class Exchange:
    """One writer stream, one reader stream, the writes and reads of an example.

    The writer issues the writes (one loop iteration before each ``later``
    one), checks each write callback against what its socket accepted, and
    closes once the last callback ran (with *writer_waits*: and once the
    reader has completed every read the data can satisfy). The reader runs the reads in order,
    each from the previous one's callback (or a later iteration); then, or
    once a read turns out never to complete (the writer's close ends it),
    it collects the rest with ``read_until_close``.
    """

    def __init__(
        self,
        io_loop: IOLoop,
        writer: IOStream,
        reader: IOStream,
        payload: bytes,
        writes: list[Write],
        reads: list[Read],
        accepted: Callable[[], int],
        received: Callable[[], int],
        writer_waits: bool = False,
    ) -> None:
        self.io_loop = io_loop
        self.received = received
        self.writer_waits = writer_waits
        # Reads the model says complete: a waiting writer closes only after them.
        # A read_until_close among them completes only at the close itself, so
        # a waiting writer waits for the reads before it, not for it.
        results = model(payload, reads)[0]
        self.completable = next(
            (i for i, read in enumerate(reads[: len(results)]) if read.kind == "close"),
            len(results),
        )
        self.completed = 0
        self._writes_done = False
        self.writer = writer
        self.reader = reader
        self.payload = payload
        self.writes = writes
        self.reads = reads
        self.accepted = accepted
        self.ends: list[int] = []
        total = 0
        for w in writes:
            total += w.size
            self.ends.append(total)
        #: What each read got (streamed bytes, then the final callback's).
        self.got: list[bytearray] = []
        self.read_done: list[bool] = []
        self.tail: bytes | None = None
        self.write_callbacks: list[int] = []
        self.problems: list[str] = []
        self.writer_closes = 0
        self.reader_closes = 0
        self._outstanding = False
        self._tail_started = False
        self._next_read = 0
        self._next_write = 0
        # Done when: the tail was read, the reader closed, the writer closed.
        self.finished = Waiter(io_loop, expected=3)

    def start(self) -> None:
        """Issue the first reads and writes."""
        self.writer.set_close_callback(self._on_writer_close)
        self.reader.set_close_callback(self._on_reader_close)
        self._issue_read()
        self._issue_writes()

    # -- writer --

    def _issue_writes(self, resumed: bool = False) -> None:
        while self._next_write < len(self.writes):
            i = self._next_write
            w = self.writes[i]
            if w.later and i > 0 and not resumed:
                self.io_loop.add_callback(self._issue_writes, True)
                return
            resumed = False
            view = memoryview(self.payload)[self.ends[i] - w.size : self.ends[i]]
            data: bytes | bytearray | memoryview = view
            if w.kind == "bytes":
                data = bytes(view)
            elif w.kind == "bytearray":
                data = bytearray(view)
            self._next_write += 1
            if self.writer.closed():
                self.problems.append(f"writer closed before write #{i}: {self.writer.error!r}")
                return
            self.writer.write(data, self._write_callback(i))

    def _write_callback(self, i: int) -> Callable[[], None]:
        end = self.ends[i]

        def on_written() -> None:
            self.write_callbacks.append(i)
            accepted = self.accepted()
            if accepted < end:
                self.problems.append(
                    f"write #{i}'s callback ran with {accepted} bytes accepted "
                    f"by the socket, its data ends at {end}"
                )
            if i == len(self.writes) - 1:
                self._writes_done = True
                self._maybe_close_writer()

        return on_written

    def _maybe_close_writer(self) -> None:
        # A waiting writer keeps the connection open until the reader has got
        # everything it can: data stuck in some buffer with no event to wake
        # the reader then stalls the example instead of being flushed by EOF.
        if (
            self._writes_done
            and not self.writer.closed()
            and (not self.writer_waits or self.completed >= self.completable)
        ):
            self.writer.close()

    def _on_writer_close(self) -> None:
        self.writer_closes += 1
        self.finished.done("writer closed")

    # -- reader --

    def _issue_read(self, resumed: bool = False) -> None:
        if self._next_read >= len(self.reads):
            self._start_tail()
            return
        read = self.reads[self._next_read]
        if read.later and not resumed:
            self.io_loop.add_callback(self._issue_read, True)
            return
        index = self._next_read
        self._next_read += 1
        self.got.append(bytearray())
        self.read_done.append(False)

        def on_data(data: bytes) -> None:
            self.got[index] += data
            self.read_done[index] = True
            self._outstanding = False
            self.completed += 1
            self._maybe_close_writer()
            self._issue_read()

        def on_chunk(data: bytes) -> None:
            self.got[index] += data

        streaming = on_chunk if read.streaming else None
        self._outstanding = True
        try:
            if read.kind == "until":
                self.reader.read_until(read.delimiter, on_data)
            elif read.kind == "bytes":
                self.reader.read_bytes(read.n, on_data, streaming)
            else:
                self.reader.read_until_close(on_data, streaming)
        except StreamClosedError:
            # Issued (later) on a stream the peer's close already closed, and
            # the buffer cannot satisfy it: the read that never completes.
            self._outstanding = False
            self._start_tail()

    def _start_tail(self) -> None:
        if self._tail_started:
            self.problems.append("the tail read was started twice")
            return
        self._tail_started = True
        self._outstanding = True
        # Open stream: completes at the close with the rest. Closed stream:
        # delivers what is buffered (docs/guarantees.md, "IOStream", "Closing").
        self.reader.read_until_close(self._on_tail)

    def _on_tail(self, data: bytes) -> None:
        if self.tail is not None:
            self.problems.append(f"read_until_close called back twice ({data[:20]!r})")
            return
        self.tail = data
        self._outstanding = False
        self.finished.done("tail")

    def _on_reader_close(self) -> None:
        self.reader_closes += 1
        if self._outstanding and not self._tail_started:
            # The pending read can never complete now (the stream dropped it).
            self._outstanding = False
            self._start_tail()
        self.finished.done("reader closed")

    # -- verdict --

    def check(self) -> None:
        """Wait for the end, then compare everything with the model."""
        wait_with_progress(self.finished, self.received, stall=STALL, limit=EXAMPLE_TIMEOUT)
        spin(self.io_loop, 3)  # a second close callback would show now
        assert self.problems == [], self.problems
        assert self.writer_closes == 1, f"writer close callback ran {self.writer_closes}x"
        assert self.reader_closes == 1, f"reader close callback ran {self.reader_closes}x"
        assert self.write_callbacks == list(range(len(self.writes))), self.write_callbacks
        assert self.writer.error is None, repr(self.writer.error)
        assert self.reader.error is None, repr(self.reader.error)
        expected, stuck, rest = model(self.payload, self.reads)
        got = [bytes(g) for g in self.got[: len(self.reads)]]
        tail = self.tail
        assert tail is not None
        for i, want in enumerate(expected):
            assert self.read_done[i], f"read #{i} {self.reads[i]!r} never completed"
            assert got[i] == want, (
                f"read #{i} {self.reads[i]!r}: got {len(got[i])} bytes {got[i][:40]!r}..., "
                f"expected {len(want)} bytes {want[:40]!r}..."
            )
        if stuck is not None:
            # The read the data could not satisfy: it got nothing (or, with a
            # streaming callback, a prefix); the rest came with the close.
            assert len(got) == stuck + 1, f"reads issued after the stuck read #{stuck}"
            assert not self.read_done[stuck], f"read #{stuck} {self.reads[stuck]!r} completed"
            if not self.reads[stuck].streaming:
                assert got[stuck] == b"", got[stuck][:40]
            assert got[stuck] + tail == rest, (
                f"after read #{stuck}: {len(got[stuck])} + {len(tail)} bytes, expected {len(rest)}"
            )
        else:
            assert len(got) == len(self.reads)
            assert tail == rest, f"tail: {len(tail)} bytes, expected {len(rest)}"


# ------------------------------------------------------------------ plain


def cap_total(writes: list[Write], limit: int) -> list[Write]:
    """The longest prefix of *writes* within *limit* bytes (at least one write)."""
    out: list[Write] = []
    total = 0
    for w in writes:
        if out and total + w.size > limit:
            break
        out.append(w)
        total += w.size
    return out


def run_plain(
    io_loop: IOLoop,
    seed: int,
    writes: list[Write],
    reads: list[Read],
    final_read: Read | None,
    send_faults: list[Fault],
    recv_faults: list[Fault],
    read_chunk_size: int,
    writer_waits: bool = False,
) -> None:
    """One plain-TCP example (see the module docstring)."""
    writes = cap_total(writes, 2 * MiB)
    reads = [*reads, *([final_read] if final_read else [])]
    payload = make_payload(sum(w.size for w in writes), seed)
    a, b = loopback_pair()
    wsock = ChaosSocket.wrap(a, send_faults=send_faults)
    rsock = ChaosSocket.wrap(b, recv_faults=recv_faults)
    writer = IOStream(wsock, io_loop=io_loop)
    reader = IOStream(rsock, io_loop=io_loop, read_chunk_size=read_chunk_size)

    def accepted() -> int:
        return sum(call.sent for call in wsock.sends if call.sent > 0)

    ex = Exchange(
        io_loop,
        writer,
        reader,
        payload,
        writes,
        reads,
        accepted,
        lambda: rsock.bytes_received,
        writer_waits,
    )
    try:
        ex.start()
        ex.check()
        violations = wsock.send_violations(payload)
        assert violations == [], violations[:5]
    except BaseException:
        note(f"payload: {len(payload)} bytes; writes cut to {writes!r}")
        note(f"send violations: {wsock.send_violations(payload)[:5]!r}")
        note(f"writer socket: {wsock.log[:60]!r}")
        note(f"reader socket: {rsock.log[:60]!r}")
        note(f"reads got: {[(len(g), bytes(g[:20])) for g in ex.got]!r}; tail {ex.tail!r:.60}")
        note(f"writer error {writer.error!r}; reader error {reader.error!r}")
        raise
    finally:
        writer.close()
        reader.close()


_plain_args: dict[str, Any] = {
    "seed": st.integers(0, 2**16),
    "writes": writes_strategy,
    "reads": reads_strategy,
    "final_read": final_read_strategy,
    "send_faults": schedules(send_fault, max_size=40),
    "recv_faults": schedules(recv_fault, max_size=40),
    "read_chunk_size": st.sampled_from([65536, 4096, 512]),
    "writer_waits": st.booleans(),
}


@chaos_settings(40)
@given(**_plain_args)
def test_plain_chaos(io_loop: IOLoop, **case: Any) -> None:
    """Random writes, reads and faults over plain TCP: the model holds."""
    run_plain(io_loop, **case)


@pytest.mark.slow
@chaos_settings(400)
@given(**_plain_args)
def test_plain_chaos_long(io_loop: IOLoop, **case: Any) -> None:
    """:func:`test_plain_chaos` with many more examples."""
    run_plain(io_loop, **case)


# ------------------------------------------------------------------ TLS


def tls_pair(
    io_loop: IOLoop,
    tls: TLSFiles,
    client_chaos: TLSChaos,
    server_chaos: TLSChaos,
    tickets: bool,
    client_kwargs: dict[str, Any] | None = None,
    server_kwargs: dict[str, Any] | None = None,
) -> tuple[ChaosSSLIOStream, ChaosSSLIOStream]:
    """A connected (handshake in progress) client/server :class:`ChaosSSLIOStream` pair."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = ChaosSSLIOStream(
            socket.socket(),
            ssl_options=tls.client_context(),
            io_loop=io_loop,
            chaos=client_chaos,
            **(client_kwargs or {}),
        )
        client.connect(listener.getsockname(), server_hostname="localhost")
        conn = accept_on_loop(io_loop, listener)
    server_ctx = tls.server_context()
    if not tickets:
        server_ctx.num_tickets = 0
    server = ChaosSSLIOStream(
        conn,
        ssl_options=server_ctx,
        server_side=True,
        io_loop=io_loop,
        chaos=server_chaos,
        **(server_kwargs or {}),
    )
    return client, server


def run_tls(
    io_loop: IOLoop,
    tls: TLSFiles,
    seed: int,
    writes: list[Write],
    reads: list[Read],
    final_read: Read | None,
    client_writes: bool,
    send_faults: list[Fault],
    recv_faults: list[Fault],
    client_handshake_faults: list[Fault],
    server_handshake_faults: list[Fault],
    read_chunk_size: int = 65536,
    writer_waits: bool = False,
) -> None:
    """One TLS example: want-read/want-write and short reads on a schedule."""
    writes = cap_total(writes, 512 * KiB)
    reads = [*reads, *([final_read] if final_read else [])]
    payload = make_payload(sum(w.size for w in writes), seed)
    wchaos = TLSChaos(keep_sent=True)
    rchaos = TLSChaos()
    wchaos.send_faults.extend(send_faults)
    rchaos.recv_faults.extend(recv_faults)
    cchaos, schaos = (wchaos, rchaos) if client_writes else (rchaos, wchaos)
    cchaos.handshake_faults.extend(client_handshake_faults)
    schaos.handshake_faults.extend(server_handshake_faults)
    # A client that writes and closes must not leave the server's session
    # ticket unread in its socket (closing it would send a RST): no tickets
    # then. When the server writes, the client reads its tickets.
    reader_kwargs = {"read_chunk_size": read_chunk_size}
    client, server = tls_pair(
        io_loop,
        tls,
        cchaos,
        schaos,
        tickets=not client_writes,
        client_kwargs=None if client_writes else reader_kwargs,
        server_kwargs=reader_kwargs if client_writes else None,
    )
    writer, reader = (client, server) if client_writes else (server, client)

    def accepted() -> int:
        return len(wchaos.sent)

    ex = Exchange(
        io_loop,
        writer,
        reader,
        payload,
        writes,
        reads,
        accepted,
        lambda: rchaos.bytes_received,
        writer_waits,
    )
    try:
        ex.start()
        ex.check()
        assert wchaos.violations == [], wchaos.violations
        assert rchaos.violations == [], rchaos.violations
        assert bytes(wchaos.sent) == payload, "the TLS socket accepted other bytes"
    except BaseException:
        note(f"payload: {len(payload)} bytes; writes cut to {writes!r}")
        note(f"retry violations: {(wchaos.violations + rchaos.violations)[:5]!r}")
        note(f"writer TLS socket: {wchaos.log[:60]!r}")
        note(f"reader TLS socket: {rchaos.log[:60]!r}")
        note(f"reads got: {[(len(g), bytes(g[:20])) for g in ex.got]!r}; tail {ex.tail!r:.60}")
        note(f"writer error {writer.error!r}; reader error {reader.error!r}")
        raise
    finally:
        client.close()
        server.close()


_tls_args: dict[str, Any] = {
    "seed": st.integers(0, 2**16),
    "writes": writes_strategy,
    "reads": reads_strategy,
    "final_read": final_read_strategy,
    "client_writes": st.booleans(),
    "send_faults": schedules(tls_send_fault, max_size=30),
    "recv_faults": schedules(tls_recv_fault, max_size=30),
    "client_handshake_faults": schedules(tls_handshake_fault, max_size=4),
    "server_handshake_faults": schedules(tls_handshake_fault, max_size=4),
    "read_chunk_size": st.sampled_from([65536, 4096, 512]),
    "writer_waits": st.booleans(),
}


@chaos_settings(30)
@given(**_tls_args)
def test_tls_chaos(io_loop: IOLoop, tls: TLSFiles, **case: Any) -> None:
    """Random writes, reads, want-read/want-write and short reads over TLS."""
    run_tls(io_loop, tls, **case)


@pytest.mark.slow
@chaos_settings(300)
@given(**_tls_args)
def test_tls_chaos_long(io_loop: IOLoop, tls: TLSFiles, **case: Any) -> None:
    """:func:`test_tls_chaos` with many more examples."""
    run_tls(io_loop, tls, **case)


# ------------------------------------------------------------------ pinned cases


def test_every_plain_fault_once(io_loop: IOLoop) -> None:
    """Each fault kind, on both ends, in one fixed exchange (no hypothesis needed)."""
    kinds = [short(1), short(7), Fault("block"), Fault("eintr"), Fault("wsa_block")]
    send_kinds = [*kinds, Fault("nobufs"), Fault("wsa_nobufs")]
    run_plain(
        io_loop,
        seed=1,
        writes=[Write(100), Write(70_000, "memoryview"), Write(5, later=True), Write(300_000)],
        reads=[Read("until", b"\n"), Read("bytes", n=50_000, streaming=True), Read("until", b"ab")],
        final_read=None,
        send_faults=send_kinds * 3,
        recv_faults=kinds * 3,
        read_chunk_size=4096,
    )


def test_every_tls_fault_once(io_loop: IOLoop, tls: TLSFiles) -> None:
    """Each TLS fault kind in one fixed exchange, both directions."""
    for client_writes in (True, False):
        run_tls(
            io_loop,
            tls,
            seed=2,
            writes=[Write(100), Write(70_000, "memoryview"), Write(5, later=True), Write(30_000)],
            reads=[Read("until", b"\n"), Read("bytes", n=50_000, streaming=True)],
            final_read=Read("close", streaming=True),
            client_writes=client_writes,
            send_faults=[Fault("want_write"), Fault("want_read"), Fault("eintr")] * 3,
            recv_faults=[Fault("want_read"), short(3), Fault("want_write"), Fault("eintr")] * 3,
            client_handshake_faults=[Fault("want_write"), Fault("want_read")],
            server_handshake_faults=[Fault("want_read"), Fault("want_write")],
        )


def test_want_write_retry_resends_the_same_bytes(io_loop: IOLoop, tls: TLSFiles) -> None:
    """After a want-write, the next send is handed exactly the failed send's bytes,
    even when more writes were queued in between (they must not join the retry
    in a way that changes its first bytes)."""
    wchaos = TLSChaos(keep_sent=True)
    wchaos.send_faults.extend([Fault("want_write")] * 5)
    client, server = tls_pair(io_loop, tls, wchaos, TLSChaos(), tickets=False)
    try:
        data = make_payload(200_000, 3)
        got = Waiter(io_loop)
        server.read_bytes(len(data), got.callback)
        connected = Waiter(io_loop)
        client.write(data[:10], connected.done)  # queued: the handshake is not done
        for i in range(10, 1000, 99):  # small writes while the first ones are retried
            client.write(data[i : i + 99] if i + 99 <= 1000 else data[i:1000])
        client.write(data[1000:])
        assert got.wait() == data
        assert wchaos.injected_send_wants == 5
        assert wchaos.violations == []
        assert bytes(wchaos.sent) == data
    finally:
        client.close()
        server.close()


def test_interrupted_handshake_step_is_retried(io_loop: IOLoop, tls: TLSFiles) -> None:
    """An ``InterruptedError`` from ``do_handshake`` is retried (docs/guarantees.md,
    "SSLIOStream": the step runs again), not left waiting for an
    event the stalled handshake will never produce: here it hits the client's
    first step, before its ClientHello went out, so waiting for READ would wait
    for ever (found here, now fixed)."""
    cchaos = TLSChaos()
    cchaos.handshake_faults.append(Fault("eintr"))
    client, server = tls_pair(io_loop, tls, cchaos, TLSChaos(), tickets=True)
    try:
        client.write(b"hello\n")
        got = Waiter(io_loop)
        server.read_until(b"\n", got.callback)
        assert got.wait(timeout=2) == b"hello\n"
        assert client.error is None and server.error is None
    finally:
        client.close()
        server.close()


def test_read_from_callback_on_closed_stream_raises(io_loop: IOLoop) -> None:
    """docs/guarantees.md ("IOStream", "One read at a time"): "A read that cannot
    be satisfied, or a write, on a closed stream raises `StreamClosedError`." —
    for a read, also when issued from a stream callback.

    Found by :func:`test_tls_chaos` (now fixed): the peer closed, the stream
    holds 10 bytes; ``read_bytes(5)`` succeeds from the buffer; from its
    callback, ``read_bytes(100)`` cannot be satisfied and must raise
    ``StreamClosedError``. It used to be recorded as pending (the stream was
    in its trampoline) and then dropped silently: no exception, no callback,
    and the close callback, which might have told the caller, had already run.
    """
    a, b = loopback_pair()
    stream = IOStream(a, io_loop=io_loop)
    try:
        closed = Waiter(io_loop)
        stream.set_close_callback(closed.done)
        b.sendall(b"0123456789")
        b.close()
        closed.wait()
        outcome: list[object] = []

        def first(data: bytes) -> None:
            outcome.append(data)
            try:
                stream.read_bytes(100, lambda more: outcome.append(("second read got", more)))
            except StreamClosedError as exc:
                outcome.append(exc)
            done.done()

        done = Waiter(io_loop)
        stream.read_bytes(5, first)
        done.wait()
        spin(io_loop, 5)
        assert outcome[0] == b"01234"
        assert len(outcome) == 2 and isinstance(outcome[1], StreamClosedError), outcome
    finally:
        stream.close()
        b.close()


def test_tls_bytes_held_inside_openssl_are_delivered(io_loop: IOLoop, tls: TLSFiles) -> None:
    """One 16 KiB TLS record, read 512 bytes at a time (``read_chunk_size=512``,
    ``read_bytes(512)`` chained from each callback), from a peer that keeps the
    connection open (as if waiting for an answer).

    The whole record leaves the kernel with the first ``recv``; what OpenSSL
    has decrypted but not yet returned is invisible to the poller, and one
    readiness event allows only so many ``recv`` calls. The stream must drain
    ``pending()`` itself: nothing else will wake it.
    """
    client, server = tls_pair(
        io_loop, tls, TLSChaos(), TLSChaos(), tickets=True, server_kwargs={"read_chunk_size": 512}
    )
    try:
        data = make_payload(16 * KiB, 4)
        got = bytearray()
        done = Waiter(io_loop)

        def on_piece(piece: bytes) -> None:
            got.extend(piece)
            if len(got) < len(data):
                server.read_bytes(512, on_piece)
            else:
                done.done()

        # A first exchange: the server's handshake is over (it finishes on the
        # client's Finished, and would then read whatever came with it).
        hello = Waiter(io_loop)
        server.read_until(b"\n", hello.callback)
        client.write(b"hello\n")
        assert hello.wait() == b"hello\n"
        # Send, and let the record reach the server's kernel buffer while the
        # server reads nothing (no read pending: it does not watch READ);
        # then one readiness event is all the server will get.
        sent = Waiter(io_loop)
        client.write(data, sent.done)
        sent.wait()
        spin(io_loop, 5)
        server.read_bytes(512, on_piece)
        wait_with_progress(done, lambda: len(got), stall=5.0)
        assert bytes(got) == data
        assert not client.closed() and not server.closed()
    finally:
        client.close()
        server.close()


@pytest.mark.parametrize("use_tls", [False, True], ids=["plain", "tls"])
def test_partial_direct_read_is_kept_at_close(
    io_loop: IOLoop, tls: TLSFiles, use_tls: bool
) -> None:
    """A large ``read_bytes`` (received straight into its final buffer) that the
    peer's close cuts short: the bytes it got go back to the buffer, and
    ``read_until_close`` on the closed stream delivers them (docs/guarantees.md,
    "IOStream", "Closing": "`read_until_close` on a closed stream delivers what
    is buffered")."""
    reader: IOStream
    writer: IOStream
    if use_tls:
        writer, reader = tls_pair(io_loop, tls, TLSChaos(), TLSChaos(), tickets=False)
    else:
        a, b = loopback_pair()
        writer, reader = IOStream(a, io_loop=io_loop), IOStream(b, io_loop=io_loop)
    try:
        data = make_payload(300 * KiB, 5)
        closed = Waiter(io_loop)
        reader.set_close_callback(closed.done)
        never: list[bytes] = []
        reader.read_bytes(2 * MiB, never.append)
        writer.write(data, writer.close)
        closed.wait()
        assert never == []
        rest = Waiter(io_loop)
        reader.read_until_close(rest.callback)
        assert rest.wait() == data
    finally:
        writer.close()
        reader.close()


def test_small_write_after_the_buffer_drained_is_kept(io_loop: IOLoop) -> None:
    """A small write queued behind a blocked send, sent in full from the write
    buffer; then, from its callback, another small write that the socket takes
    only in part: the rest must be queued and sent, not lost.

    (Guards the write buffer's "gathering" piece: once peeked and sent it is
    gone, and later small writes must start a new one.)
    """
    a, b = loopback_pair()
    wsock = ChaosSocket.wrap(a, send_faults=[Fault("block"), OK, short(3)])
    writer = IOStream(wsock, io_loop=io_loop)
    reader = IOStream(b, io_loop=io_loop)
    try:
        got = Waiter(io_loop)
        reader.read_bytes(20, got.callback)
        writer.write(b"a" * 10, lambda: writer.write(b"b" * 10))
        assert wait_with_progress(got, lambda: 0, stall=5.0) == b"a" * 10 + b"b" * 10
        assert writer.error is None and not writer.closed()
        assert wsock.send_violations(b"a" * 10 + b"b" * 10) == []
    finally:
        writer.close()
        reader.close()
