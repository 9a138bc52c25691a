"""iostream.testing's public pieces: seeded ChaosSocket, schedules, sendmsg, stream_pair, helpers.

The fault sockets' behaviour under IOStream is covered by test_chaos.py,
test_windows_send.py and test_ewouldblock.py; this module checks the
public API the package adds for users.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import select
import socket
import sys
from collections import deque
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iostream import IOLoop, IOStream, SSLIOStream
from iostream.testing import (
    OK,
    WINDOWS_SEND_LIMIT,
    WSAEMSGSIZE,
    WSAENOBUFS,
    ChaosSocket,
    Fault,
    LoopTimeout,
    TLSChaos,
    Waiter,
    WindowsSocket,
    catch_escaped,
    format_schedule,
    parse_schedule,
    recording,
    run_sync,
    run_until,
    short,
    socket_pair,
    stream_pair,
    wait_with_progress,
)
from iostream.testing.strategies import (
    TLS_KINDS,
    WINDOWS_SEND_KINDS,
    fault_schedules,
    faults,
    send_schedules,
)

KiB = 1024


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket_pair()
    yield a, b
    a.close()
    b.close()


def drive(sender: ChaosSocket, receiver: socket.socket, payload: bytes) -> bytes:
    """Push *payload* through *sender* by hand (retrying every fault); return what arrived.

    Bounded: at most 100000 calls each way.
    """
    view = memoryview(payload)
    got = bytearray()
    for _ in range(100_000):
        if view:
            try:
                view = view[sender.send(view[: 16 * KiB]) :]
            except (BlockingIOError, InterruptedError):
                pass
        try:
            got += receiver.recv(64 * KiB)
        except (BlockingIOError, InterruptedError):
            pass
        if not view and len(got) == len(payload):
            return bytes(got)
    raise AssertionError(f"transfer stuck: {len(got)} of {len(payload)} bytes")


def chaos_run(seed: int | str, payload: bytes) -> tuple[list[Fault], list[Fault], bytes]:
    a, b = socket_pair()
    with a, b:
        sender = ChaosSocket.wrap(a, seed=seed)
        receiver = ChaosSocket.wrap(b, seed=f"{seed}/r")
        with sender, receiver:
            got = drive(sender, receiver, payload)
            return sender.send_record, receiver.recv_record, got


PAYLOAD = bytes(range(256)) * 256  # 64 KiB


def test_a_seed_gives_the_same_faults_every_time_and_never_corrupts() -> None:
    first = chaos_run(11, PAYLOAD)
    second = chaos_run(11, PAYLOAD)
    other = chaos_run(12, PAYLOAD)
    assert first[2] == second[2] == other[2] == PAYLOAD
    # The sender's calls are the same every run (64 KiB fits the kernel's
    # buffer: every size handed over follows from the schedule alone).
    assert first[0] == second[0]
    # How many recv calls find data depends on timing; the faults drawn for
    # the calls made are the same stream of draws.
    common = min(len(first[1]), len(second[1]))
    assert common >= 3 and first[1][:common] == second[1][:common]
    assert (first[0], first[1]) != (other[0], other[1])
    kinds = {f.kind for f in first[0]} | {f.kind for f in first[1]}
    assert {"short", "block", "ok"} <= kinds, kinds


def test_the_record_replays_the_run(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    sender = ChaosSocket.wrap(a, seed="replay")
    drive(sender, b, PAYLOAD)
    sizes = [call.nbytes for call in sender.sends]
    outcomes = [(call.sent, call.error) for call in sender.sends]
    text = sender.describe()
    schedule_text = text.split("send_faults: ", 1)[1].split("\n", 1)[0]
    assert parse_schedule(schedule_text) == sender.send_record[: len(parse_schedule(schedule_text))]
    c, d = socket_pair()
    with c, d:
        replay = ChaosSocket.wrap(c, send_faults=parse_schedule(schedule_text))
        drive(replay, d, PAYLOAD)
        assert [call.nbytes for call in replay.sends] == sizes
        assert [(call.sent, call.error) for call in replay.sends] == outcomes
        replay.close()
    sender.close()


def test_describe_is_readable() -> None:
    a, b = socket_pair()
    with a, b:
        sock = ChaosSocket.wrap(a, [short(3), OK, Fault("block")], [Fault("eintr")], seed=None)
        with sock:
            assert sock.send(b"hello") == 3
            assert sock.send(b"lo") == 2
            with pytest.raises(BlockingIOError):
                sock.send(b"x")
            assert sock.send(b"x") == 1
            assert sock.describe().splitlines() == [
                "ChaosSocket: 4 send calls, 0 recv calls",
                "  send_faults: [short(3), ok, block]",
                "  recv_faults: []",
                "  replay: ChaosSocket.wrap(sock, "
                'send_faults=parse_schedule("[short(3), ok, block]"), '
                'recv_faults=parse_schedule("[]"))',
            ]


@given(st.lists(faults(("ok", "short", "block", "eintr", "wsa_block", "want_write"))))
def test_format_and_parse_round_trip(schedule: list[Fault]) -> None:
    while schedule and schedule[-1] == OK:
        schedule.pop()
    assert parse_schedule(format_schedule(schedule, limit=10_000)) == schedule


def test_format_schedule_cuts_long_ones() -> None:
    assert format_schedule([short(1)] * 5 + [OK] * 3, limit=2) == "[short(1), short(1), ... 3 more]"


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        ("[short(3), explode]", ValueError, "unknown fault kind 'explode'"),
        ("[short(x)]", ValueError, "text: 'short\\(x\\)' is not a fault"),
        ("[short(0)]", ValueError, "short\\(\\) needs arg >= 1"),
        (b"[ok]", TypeError, "text must be a str"),
    ],
)
def test_parse_schedule_bad_input(text: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        parse_schedule(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"short_rate": 1.5}, ValueError, "short_rate must be a number from 0 to 1"),
        ({"block_rate": -0.1}, ValueError, "block_rate must be"),
        ({"short_rate": 0.6, "block_rate": 0.6}, ValueError, "must be at most 1"),
        ({"seed": 1.5}, TypeError, "seed must be an int, a str or None"),
        ({"send_faults": "block"}, TypeError, "send_faults must be an iterable of Fault"),
        ({"recv_faults": ["block"]}, TypeError, "recv_faults must hold Fault objects"),
    ],
)
def test_chaos_socket_bad_arguments(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ChaosSocket(socket.AF_INET, socket.SOCK_STREAM, **kwargs)  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(socket.socket, "sendmsg"), reason="no sendmsg on this OS")
def test_sendmsg_follows_the_send_schedule(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    sock = ChaosSocket.wrap(a, [short(4), Fault("block")])
    with sock:
        assert sock.sendmsg([b"ab", b"cd", b"ef"]) == 4
        with pytest.raises(BlockingIOError):
            sock.sendmsg([b"ef"])
        assert sock.sendmsg([memoryview(b"ef")]) == 2
        b.setblocking(True)
        b.settimeout(10)
        got = b""
        for _ in range(6):
            got += b.recv(100)
            if len(got) >= 6:
                break
        assert got == b"abcdef"
        assert [c.nbytes for c in sock.sends] == [6, 2, 2]
        assert sock.send_violations(b"abcdef") == []


@pytest.mark.skipif(not hasattr(socket.socket, "sendmsg"), reason="no sendmsg on this OS")
def test_windows_sendmsg_refuses_more_than_the_limit(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, _ = pair
    sock = WindowsSocket.wrap(a)
    with sock:
        half = b"x" * (WINDOWS_SEND_LIMIT // 2)
        with pytest.raises(OSError) as info:
            sock.sendmsg([half, half, b"!"])
        assert info.value.winerror == WSAENOBUFS  # type: ignore[attr-defined]
        assert 0 < sock.sendmsg([half, half]) <= WINDOWS_SEND_LIMIT
        assert sock.refused == 1
        assert sock.send_sizes == [WINDOWS_SEND_LIMIT + 1, WINDOWS_SEND_LIMIT]


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    """*n* bytes from the blocking (timeout) socket *sock*; bounded."""
    got = b""
    for _ in range(n):
        if len(got) >= n:
            break
        got += sock.recv(n - len(got))
    return got


def test_a_blocking_socket_gets_no_faults_and_keeps_its_schedule(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """POSIX: EAGAIN only "if the socket is marked nonblocking" (or with O_NONBLOCK).

    Wrapped while blocking (as before ``IOStream`` makes it non-blocking),
    the socket behaves, and the schedule waits for the first non-blocking call.
    """
    a, b = pair
    a.setblocking(True)
    sock = ChaosSocket.wrap(a, [Fault("block"), short(1)], [Fault("block"), short(1)])
    b.settimeout(10)
    with sock:
        assert sock.gettimeout() is None
        sock.sendall(b"hello")
        assert sock.send(b"world") == 5
        assert sock.sendmsg([b"!"]) == 1
        assert _recv_exactly(b, 11) == b"helloworld!"
        b.sendall(b"back")
        assert sock.recv(10) == b"back"
        assert sock.send_record == [] and sock.recv_record == []
        assert list(sock.send_faults) == [Fault("block"), short(1)]
        assert list(sock.recv_faults) == [Fault("block"), short(1)]
        assert [(c.nbytes, c.sent, c.fault) for c in sock.sends] == [
            (5, 5, OK),
            (5, 5, OK),
            (1, 1, OK),
        ]
        assert sock.send_violations(b"helloworld!") == []
        assert all("blocking socket: no fault" in line for line in sock.log), sock.log
        # Non-blocking now: the schedule starts.
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.send(b"xy")
        assert sock.send(b"xy") == 1
        with pytest.raises(BlockingIOError):
            sock.recv(10)
        assert sock.send_record == [Fault("block"), short(1)]
        assert sock.recv_record == [Fault("block")]


def test_blocking_calls_do_not_draw_from_the_seed() -> None:
    """The same seed gives the same faults to the non-blocking calls, whatever came before."""
    records = []
    for blocking_first in (False, True):
        a, b = socket_pair()
        with a, b:
            if blocking_first:
                a.setblocking(True)
            sock = ChaosSocket.wrap(a, seed=12, block_rate=0.3, eintr_rate=0.2)
            with sock:
                if blocking_first:
                    for _ in range(5):
                        sock.sendall(b"0123456789")
                    b.settimeout(10)
                    assert _recv_exactly(b, 50) == b"0123456789" * 5
                    b.setblocking(False)
                    sock.setblocking(False)
                assert drive(sock, b, PAYLOAD) == PAYLOAD
                records.append(sock.send_record)
    assert records[0] == records[1]
    assert any(fault != OK for fault in records[0])


def test_a_socket_with_a_timeout_gets_only_what_python_lets_through(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Timeout mode: non-blocking at the OS level, but Python waits out would-block
    and retries EINTR itself; a short count (and ENOBUFS) reaches the caller."""
    a, b = pair
    sock = ChaosSocket.wrap(
        a,
        parse_schedule("[block, eintr, wsa_block, short(2), nobufs, wsa_nobufs]"),
        parse_schedule("[block, eintr, short(1)]"),
    )
    with sock:
        sock.settimeout(10)
        assert sock.send(b"aaaa") == 4
        assert sock.send(b"bbbb") == 4
        assert sock.send(b"cccc") == 4
        assert sock.send(b"dddd") == 2
        with pytest.raises(OSError) as info:
            sock.send(b"dd")
        assert info.value.errno == errno.ENOBUFS
        assert sock.send(b"dd") == 2
        b.settimeout(10)
        assert _recv_exactly(b, 14) == b"aaaabbbbccccdd"
        assert _recv_exactly(b, 2) == b"dd"
        b.sendall(b"xyz")
        assert sock.recv(10) == b"xyz"  # block: Python waits for it
        b.sendall(b"uvw")
        assert sock.recv(10) == b"uvw"  # eintr: Python retries
        b.sendall(b"rs")
        assert sock.recv(10) == b"r"
        assert sock.send_record == parse_schedule(
            "[block, eintr, wsa_block, short(2), nobufs, wsa_nobufs]"
        )
        assert sock.recv_record == parse_schedule("[block, eintr, short(1)]")
        assert any("block -> ok: timeout mode" in line for line in sock.log), sock.log


def test_sendall_goes_through_the_faults(pair: tuple[socket.socket, socket.socket]) -> None:
    """socket.sendall is C code that would bypass the Python-level send: overridden."""
    a, b = pair
    sock = ChaosSocket.wrap(a, parse_schedule("[short(3), eintr, short(2), block]"))
    with sock:
        with pytest.raises(BlockingIOError):
            sock.sendall(b"0123456789")
        assert [(c.nbytes, c.sent, c.error) for c in sock.sends] == [
            (10, 3, ""),
            (7, -1, "InterruptedError"),
            (7, 2, ""),
            (5, -1, "BlockingIOError"),
        ]
        sock.sendall(b"56789")
        b.setblocking(True)
        b.settimeout(10)
        got = b""
        for _ in range(10):
            got += b.recv(100)
            if len(got) >= 10:
                break
        assert got == b"0123456789"
    c, d = socket_pair()
    with c, d:
        windows = WindowsSocket.wrap(c)
        with windows, pytest.raises(OSError) as info:
            windows.sendall(b"w" * (WINDOWS_SEND_LIMIT + 1))
        assert info.value.winerror == WSAENOBUFS  # type: ignore[attr-defined]


def test_recording_collects_what_was_made_inside() -> None:
    with recording() as found:
        a, b = socket_pair()
        sock = ChaosSocket.wrap(a, seed=1)
        plan = TLSChaos()
    outside = ChaosSocket(socket.AF_INET, socket.SOCK_STREAM)
    assert found == [sock, plan]
    for s in (sock, b, outside):
        s.close()


# ------------------------------------------------------------ stream_pair


BIG = bytes(range(256)) * 1024 * 2  # 512 KiB: over the Windows send limit


@pytest.mark.parametrize("kind", ["plain", "windows", "chaos", "tls", "tls-chaos", "tls-seeded"])
def test_stream_pair_carries_bytes_both_ways(io_loop: IOLoop, kind: str) -> None:
    options: dict[str, object] = {}
    if kind == "chaos":
        options = {"seed": 5, "chaos_options": {"windows": True}}
    if kind == "tls-seeded":
        kind, options = "tls-chaos", {"seed": "s"}
        seeded = True
    else:
        seeded = False
    if kind == "tls-chaos" and not seeded:
        options = {
            "tls_chaos": TLSChaos(send_faults=deque([Fault("want_write"), Fault("want_read")]))
        }
    a, b = stream_pair(kind, io_loop, **options)  # type: ignore[arg-type]
    try:
        assert a.io_loop is io_loop and b.io_loop is io_loop
        for sender, receiver in ((a, b), (b, a)):
            w = Waiter(io_loop)
            receiver.read_bytes(len(BIG), w.done)
            sender.write(BIG)
            assert w.wait(timeout=60) == BIG
        if kind == "chaos":
            assert isinstance(a.socket, ChaosSocket) and isinstance(b.socket, ChaosSocket)
            assert a.socket.seed == 5 and b.socket.seed == "5/server"
            faults_seen = {f.kind for f in a.socket.send_record + b.socket.recv_record}
            assert {"wsa_block", "short"} <= faults_seen
        if kind == "windows":
            assert isinstance(a.socket, WindowsSocket)
        if kind.startswith("tls"):
            assert isinstance(a, SSLIOStream) and isinstance(b, SSLIOStream)
        if kind == "tls-chaos":
            chaos = a.chaos  # type: ignore[attr-defined]
            assert chaos.violations == [], chaos.describe()
            if seeded:
                assert chaos.seed == "s" and chaos.injected_send_wants > 0
                assert any("want_read" in line for line in chaos.log), chaos.describe()
            else:
                assert chaos.injected_send_wants == 2
    finally:
        a.close()
        b.close()


def test_stream_pair_defaults_to_the_current_loop() -> None:
    loop = IOLoop("select")
    loop.make_current()
    try:
        a, b = stream_pair()
        assert a.io_loop is loop and b.io_loop is loop
        assert isinstance(a, IOStream) and not isinstance(a, SSLIOStream)
        a.close()
        b.close()
    finally:
        IOLoop.clear_current()
        loop.close(all_fds=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"kind": "udp"}, ValueError, "kind must be one of 'plain', 'tls'"),
        ({"kind": "plain", "seed": 1}, ValueError, "need kind='chaos'"),
        ({"kind": "tls", "server_context": object()}, ValueError, "pass both server_context"),
        ({"kind": "plain", "family": socket.AF_UNIX}, ValueError, "family must be"),
        ({"kind": "plain", "tls_chaos": TLSChaos()}, ValueError, "tls_chaos needs kind="),
        ({"kind": "tls", "seed": 1}, ValueError, "seed and tls_chaos need kind='tls-chaos'"),
        ({"kind": "tls-chaos", "seed": 1, "tls_chaos": TLSChaos()}, ValueError, "not both"),
        ({"kind": "tls", "send_faults": [OK]}, ValueError, "need kind='chaos'"),
    ],
)
def test_stream_pair_bad_input(
    io_loop: IOLoop, kwargs: dict[str, object], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        stream_pair(io_loop=io_loop, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------ helpers


def test_run_until_returns_at_once_when_true_and_fails_with_a_message(io_loop: IOLoop) -> None:
    run_until(io_loop, lambda: True)
    with pytest.raises(LoopTimeout, match=r"condition not met within 0\.05s\nwhy: nothing"):
        run_until(io_loop, lambda: False, timeout=0.05, message="why: nothing")
    with pytest.raises(TypeError, match="predicate must be callable"):
        run_until(io_loop, True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be a finite number > 0"):
        run_until(io_loop, lambda: True, timeout=float("inf"))


def test_run_sync_and_waiter(io_loop: IOLoop) -> None:
    async def seven() -> int:
        return 7

    assert run_sync(io_loop, seven) == 7
    w = Waiter(io_loop, expected=2)
    io_loop.add_callback(w.callback, "a")
    io_loop.add_callback(w.callback, "b", "c")
    assert w.wait(timeout=20) == ("b", "c")
    assert w.values == ["a", ("b", "c")]
    with pytest.raises(ValueError, match="expected must be an int >= 1"):
        Waiter(io_loop, expected=0)


def test_catch_escaped_raises_from_run_sync_and_waiter(io_loop: IOLoop) -> None:
    with catch_escaped(io_loop) as escaped:
        tasks: list[asyncio.Task[None]] = []

        async def main() -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.append(task)
            io_loop.add_callback(lambda: 1 / 0)
            await io_loop.create_future()  # never done: only the escape ends this

        with pytest.raises(ZeroDivisionError):
            run_sync(io_loop, main, timeout=20)
        tasks[0].cancel()  # (left pending by the early stop)
        run_until(io_loop, tasks[0].done)
        w = Waiter(io_loop)
        io_loop.add_callback(lambda: [][1])
        with pytest.raises(IndexError):
            w.wait(timeout=20)
        assert escaped == []
    # Outside the block the loop logs and goes on, as usual.
    io_loop.add_callback(lambda: int("x"))
    run_until(io_loop, lambda: True)
    w = Waiter(io_loop)
    io_loop.add_callback(lambda: [][1])
    io_loop.add_callback(w.done, "went on")
    assert w.wait(timeout=20) == "went on"


def test_wait_with_progress_fails_fast_when_stuck(io_loop: IOLoop) -> None:
    w = Waiter(io_loop)
    counter = [0]
    with pytest.raises(LoopTimeout, match=r"no progress for 0.05s \(stuck at 0\): 0 of 1 events"):
        wait_with_progress(w, lambda: counter[0], stall=0.05, limit=10)

    def tick() -> None:
        counter[0] += 1
        if counter[0] == 30:
            w.done("finished")
        else:
            io_loop.call_later(0.01, tick)

    io_loop.add_callback(tick)
    assert wait_with_progress(w, lambda: counter[0], stall=0.2, limit=30) == "finished"


# ------------------------------------------------------------ strategies


@settings(max_examples=50)
@given(send_schedules(windows=True), fault_schedules(TLS_KINDS, max_size=5, max_short=3))
def test_strategies_draw_only_the_kinds_asked(windows: list[Fault], tls: list[Fault]) -> None:
    assert {f.kind for f in windows} <= set(WINDOWS_SEND_KINDS)
    assert {f.kind for f in tls} <= set(TLS_KINDS) and len(tls) <= 5
    assert all(f.arg <= 3 for f in tls if f.kind == "short")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: faults(()), "kinds must name at least one"),
        (lambda: faults(("ok", "boom")), "unknown fault kind\\(s\\) \\['boom'\\]"),
        (lambda: faults(max_short=0), "max_short must be an int >= 1"),
        (lambda: fault_schedules(max_size=-1), "max_size must be an int >= 0"),
    ],
)
def test_strategies_bad_input(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


def test_module_is_documented() -> None:
    import iostream.testing as testing

    for name in testing.__all__:
        obj = getattr(testing, name)
        if isinstance(obj, type) or inspect.isfunction(obj):
            assert (obj.__doc__ or "").strip(), name
    assert sys.modules["iostream.testing"].__doc__


def test_a_seeded_windows_socket_never_raises_eintr() -> None:
    """Non-blocking Winsock calls are never interrupted: with ``windows=True`` the
    eintr share of the draws goes through (it used to raise POSIX EINTR)."""
    a, b = socket_pair()
    with a, b:
        sock = ChaosSocket.wrap(a, seed=3, windows=True, block_rate=0.2, eintr_rate=0.5)
        with sock:
            for _ in range(500):  # bounded: each call draws one fault
                try:
                    sock.send(b"x")
                except InterruptedError:
                    raise AssertionError("a Windows socket raised EINTR") from None
                except OSError:
                    pass  # WSAEWOULDBLOCK / WSAENOBUFS, as drawn
                try:
                    b.recv(4096)
                except BlockingIOError:
                    pass
            kinds = {fault.kind for fault in sock.send_record}
    assert "eintr" not in kinds
    assert kinds & {"wsa_block", "wsa_nobufs"}, kinds


def _wait_readable(sock: socket.socket) -> None:
    """Until *sock* has something to read (bounded: 10 s)."""
    readable, _, _ = select.select([sock], [], [], 10)
    assert readable, "nothing arrived within 10 s"


def test_every_receive_call_follows_the_recv_schedule(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    sock = ChaosSocket.wrap(
        b, recv_faults=[short(3), Fault("block"), Fault("eintr"), short(2), short(1)]
    )
    with sock:
        a.sendall(b"abcdefghij")
        _wait_readable(sock)
        got = bytearray()
        data, _ = sock.recvfrom(100)  # short(3)
        assert data == b"abc"
        got += data
        with pytest.raises(BlockingIOError):
            sock.recvfrom_into(bytearray(100))
        with pytest.raises(InterruptedError):
            sock.recvmsg(100)
        first, second = bytearray(1), bytearray(5)
        n, _, _, _ = sock.recvmsg_into([first, second])  # short(2): one byte in each
        assert n == 2 and (bytes(first), bytes(second[:1])) == (b"d", b"e")
        got += first + second[:1]
        buf = bytearray(100)
        n, _ = sock.recvfrom_into(buf)  # short(1)
        got += buf[:n]
        data, _, _, _ = sock.recvmsg(100)  # the schedule is spent: everything left
        got += data
        assert got == b"abcdefghij"
        assert sock.bytes_received == 10
        assert sock.recv_record == [
            short(3),
            Fault("block"),
            Fault("eintr"),
            short(2),
            short(1),
            OK,
        ]


@pytest.mark.parametrize("method", ["recvfrom", "recvfrom_into", "recvmsg", "recvmsg_into"])
def test_a_seeded_receive_call_never_loses_or_reorders_a_byte(
    pair: tuple[socket.socket, socket.socket], method: str
) -> None:
    a, b = pair
    # High rates and 2 KiB reads: some 32 calls or more, every kind drawn.
    sock = ChaosSocket.wrap(
        b, seed=f"receive/{method}", short_rate=0.3, block_rate=0.3, eintr_rate=0.3
    )
    with sock:
        view = memoryview(PAYLOAD)
        got = bytearray()
        scratch = bytearray(2 * KiB)
        for _ in range(100_000):
            if view:
                with contextlib.suppress(BlockingIOError):
                    view = view[a.send(view[: 16 * KiB]) :]
            try:
                if method == "recvfrom":
                    got += sock.recvfrom(2 * KiB)[0]
                elif method == "recvfrom_into":
                    got += scratch[: sock.recvfrom_into(scratch)[0]]
                elif method == "recvmsg":
                    got += sock.recvmsg(2 * KiB)[0]
                else:
                    halves = [memoryview(scratch)[:KiB], memoryview(scratch)[KiB:]]
                    got += scratch[: sock.recvmsg_into(halves)[0]]
            except (BlockingIOError, InterruptedError):
                pass
            if not view and len(got) >= len(PAYLOAD):
                break
        assert bytes(got) == PAYLOAD
        kinds = {fault.kind for fault in sock.recv_record}
        assert {"short", "block", "eintr"} <= kinds, kinds


@pytest.fixture
def udp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_sendto_follows_the_send_schedule_and_datagrams_stay_whole(
    udp_pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = udp_pair
    sender = ChaosSocket.wrap(a, send_faults=[short(2), Fault("block"), OK])
    receiver = ChaosSocket.wrap(b, recv_faults=[short(1), short(3)])
    with sender, receiver:
        to = receiver.getsockname()
        # POSIX sends a datagram whole or not at all: a short token is spent as ok.
        assert sender.sendto(b"first", to) == 5
        with pytest.raises(BlockingIOError):
            sender.sendto(b"second", 0, to)
        assert sender.sendto(b"third", 0, to) == 5
        assert [(call.nbytes, call.sent, call.error) for call in sender.sends] == [
            (5, 5, ""),
            (6, -1, "BlockingIOError"),
            (5, 5, ""),
        ]
        assert "a message socket sends whole messages" in sender.log[0]
        # A receive buffer smaller than a datagram discards the rest: the
        # short tokens are spent as ok, nothing is lost.
        _wait_readable(receiver)
        data, address = receiver.recvfrom(100)
        assert (data, address) == (b"first", sender.getsockname())
        _wait_readable(receiver)
        assert receiver.recvmsg(100)[0] == b"third"
        assert receiver.recv_record == [short(1), short(3)]
        assert all("message socket" in line for line in receiver.log)


def test_windows_socket_receive_calls_would_block_as_winsock(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    sock = WindowsSocket.wrap(b)
    with sock:
        calls: list[Callable[[], object]] = [
            lambda: sock.recvfrom(10),
            lambda: sock.recvfrom_into(bytearray(10)),
            lambda: sock.recvmsg(10),
            lambda: sock.recvmsg_into([bytearray(10)]),
        ]
        for call in calls:
            with pytest.raises(BlockingIOError) as info:
                call()
            assert info.value.errno == info.value.winerror == 10035  # type: ignore[attr-defined]
        assert sock.would_blocks == 4
        a.sendall(b"hello")
        _wait_readable(sock)
        assert sock.recvfrom(10)[0] == b"hello"
        assert sock.bytes_received == 5


def test_windows_sendto_refuses_more_than_the_limit_on_a_stream_socket(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, _ = pair
    sock = WindowsSocket.wrap(a)
    with sock:
        # Refused before the OS sees the call, so the address does not matter.
        with pytest.raises(OSError) as info:
            sock.sendto(b"x" * (WINDOWS_SEND_LIMIT + 1), ("127.0.0.1", 9))
        assert info.value.errno == info.value.winerror == WSAENOBUFS  # type: ignore[attr-defined]
        assert sock.refused == 1
        assert sock.send_sizes == [WINDOWS_SEND_LIMIT + 1]


def test_windows_sendto_of_a_too_long_datagram_is_wsaemsgsize(
    udp_pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = udp_pair
    sock = WindowsSocket.wrap(a)
    with sock:
        # No UDP datagram can hold 128 KiB: the OS refuses it (EMSGSIZE), and
        # Winsock documents WSAEMSGSIZE for that, not the stream cap's WSAENOBUFS.
        with pytest.raises(OSError) as info:
            sock.sendto(b"x" * (WINDOWS_SEND_LIMIT + 1), b.getsockname())
        assert info.value.errno == info.value.winerror == WSAEMSGSIZE  # type: ignore[attr-defined]
        assert sock.refused == 0
        assert sock.sendto(b"ping", 0, b.getsockname()) == 4
        assert sock.send_sizes == [WINDOWS_SEND_LIMIT + 1, 4]
        _wait_readable(b)
        assert b.recv(10) == b"ping"


@pytest.mark.skipif(
    sys.platform not in ("linux", "win32"),
    reason="macOS and the BSDs refuse an address on a connected stream socket (EISCONN)",
)
def test_sendto_on_a_stream_socket_sends_a_prefix_on_a_short_fault(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    sock = ChaosSocket.wrap(a, send_faults=[short(2), Fault("eintr"), OK])
    with sock:
        to = b.getsockname()
        assert sock.sendto(b"hello", to) == 2
        with pytest.raises(InterruptedError):
            sock.sendto(b"llo", 0, to)
        assert sock.sendto(b"llo", 0, to) == 3
        b.settimeout(10)
        assert _recv_exactly(b, 5) == b"hello"
        assert [(call.nbytes, call.sent, call.error) for call in sock.sends] == [
            (5, 2, ""),
            (3, -1, "InterruptedError"),
            (3, 3, ""),
        ]
        assert sock.send_violations(b"hello") == []
        assert sock.send_record == [short(2), Fault("eintr"), OK]
