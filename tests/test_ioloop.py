"""IOLoop behaviour (docs/guarantees.md, "IOLoop"), run on every poller.

Each test runs the loop through :func:`_ioloop_helpers.run_loop`, whose
deadline is a watchdog with its own socket pair: it does not depend on the
loop's timers or waker, which are what these tests check. Where a test needs to
know what the loop did between two events (an iteration boundary, a long
sleep), it counts the calls to ``io_loop.poller.poll`` with a
:class:`_ioloop_helpers.PollSpy`.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _ioloop_helpers import (
    DEADLINE,
    PollSpy,
    Watchdog,
    after_long_sleep,
    fd_dir,
    open_fd_count,
    run_loop,
)
from support import Waiter, loopback_pair

import iostream
from iostream import ERROR, READ, WRITE, IOLoop, pollers

# -- fixtures -------------------------------------------------------------------


@pytest.fixture
def spy(io_loop: IOLoop, monkeypatch: pytest.MonkeyPatch) -> PollSpy:
    """Count the loop's calls to ``poller.poll`` (installed before ``start``)."""
    poll_spy = PollSpy(io_loop.poller.poll)
    monkeypatch.setattr(io_loop.poller, "poll", poll_spy)
    return poll_spy


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected, non-blocking socket pair, closed after the test."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def main_thread_only() -> None:
    """Signal handlers can only be set from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")


def _readable_pair() -> tuple[socket.socket, socket.socket]:
    """A socket pair whose first socket has a byte to read."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    b.send(b"x")
    return a, b


# -- constructor, instance(), constants -----------------------------------------


def test_event_constants_are_the_spec_values() -> None:
    assert (IOLoop.READ, IOLoop.WRITE, IOLoop.ERROR) == (0x001, 0x004, 0x018)
    assert (iostream.READ, iostream.WRITE, iostream.ERROR) == (READ, WRITE, ERROR)
    assert (IOLoop.READ, IOLoop.WRITE, IOLoop.ERROR) == (READ, WRITE, ERROR)


def test_no_poller_argument_uses_choose() -> None:
    loop = IOLoop()
    try:
        assert type(loop.poller) is pollers.choose()
        assert isinstance(loop.poller, pollers.Poller)
    finally:
        loop.close()
    loop = IOLoop(None)
    try:
        assert type(loop.poller) is pollers.choose()
    finally:
        loop.close()


def test_poller_name_picks_that_backend(poller_name: str) -> None:
    for name in (poller_name, poller_name.upper()):
        loop = IOLoop(name)
        try:
            assert loop.poller.name == poller_name
            assert type(loop.poller) is pollers.choose(poller_name)
        finally:
            loop.close()


def test_poller_instance_is_used_as_is(poller_name: str) -> None:
    poller = pollers.choose(poller_name)()
    loop = IOLoop(poller)
    try:
        assert loop.poller is poller
        waiter = Waiter(loop)
        loop.add_callback(waiter.callback, "ran")
        run_loop(loop)
        assert waiter.values == ["ran"]
    finally:
        loop.close()
    # close() releases the poller it was given: a closed poller refuses work.
    a, b = socket.socketpair()
    with a, b, pytest.raises(ValueError):
        poller.register(a, READ)


@pytest.mark.parametrize(
    "bad",
    [42, 1.5, b"epoll", ["epoll"], object(), pollers.SelectPoller],
    ids=["int", "float", "bytes", "list", "object", "poller-class"],
)
def test_poller_of_a_bad_type_raises_type_error_naming_poller(bad: Any) -> None:
    with pytest.raises(TypeError, match="poller"):
        IOLoop(bad)


def test_unknown_poller_name_raises_value_error() -> None:
    with pytest.raises(ValueError, match="no-such-poller"):
        IOLoop("no-such-poller")


def test_known_but_unavailable_poller_name_raises_poller_unavailable() -> None:
    known = ("epoll", "kqueue", "devpoll", "poll", "select")
    missing = [name for name in known if name not in pollers.available()]
    if not missing:
        pytest.skip("every backend is available here")
    with pytest.raises(pollers.PollerUnavailable) as info:
        IOLoop(missing[0])
    assert isinstance(info.value, RuntimeError)


def test_refused_constructor_leaks_no_fd() -> None:
    path = fd_dir()
    if path is None:
        pytest.skip("no fd directory to count open fds")
    before = open_fd_count(path)
    for bad in (42, "no-such-poller"):
        with pytest.raises((TypeError, ValueError)):
            IOLoop(bad)  # type: ignore[arg-type]
    assert open_fd_count(path) == before


def test_instance_is_one_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(IOLoop, "_instance", None)
    first = IOLoop.instance()
    try:
        assert isinstance(first, IOLoop)
        assert IOLoop.instance() is first
        assert IOLoop.instance() is first
    finally:
        first.close()


def test_instance_is_made_once_when_threads_race(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(IOLoop, "_instance", None)
    made: list[IOLoop] = []
    real_init = IOLoop.__init__

    def slow_init(self: IOLoop, poller: Any = None) -> None:
        # A slow constructor widens the window in which an unlocked
        # instance() would let a second thread build a second loop.
        made.append(self)
        time.sleep(0.05)
        real_init(self, poller)

    monkeypatch.setattr(IOLoop, "__init__", slow_init)
    n_threads = 8
    barrier = threading.Barrier(n_threads)
    results: list[IOLoop] = []

    def get() -> None:
        barrier.wait(DEADLINE)
        results.append(IOLoop.instance())

    threads = [threading.Thread(target=get) for _ in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    try:
        assert len(results) == n_threads
        assert len(made) == 1, f"{len(made)} loops were built"
        assert all(loop is results[0] for loop in results)
    finally:
        for loop in made:
            if hasattr(loop, "_waker"):
                loop.close()


# -- handlers -------------------------------------------------------------------


def test_handler_receives_the_int_fd_as_passed(io_loop: IOLoop) -> None:
    a, b = _readable_pair()
    with a, b:
        fileno = a.fileno()
        waiter = Waiter(io_loop)
        io_loop.add_handler(fileno, lambda fd, events: waiter.done((fd, events)), READ)
        run_loop(io_loop)
        io_loop.remove_handler(fileno)
    fd, events = waiter.values[0]
    assert type(fd) is int
    assert fd == fileno
    assert events & READ


def test_handler_receives_the_socket_object_as_passed(io_loop: IOLoop) -> None:
    client, server = loopback_pair()
    with client, server:
        client.send(b"x")
        waiter = Waiter(io_loop)
        io_loop.add_handler(server, lambda fd, events: waiter.done((fd, events)), READ)
        run_loop(io_loop)
        io_loop.remove_handler(server)
    fd, events = waiter.values[0]
    assert fd is server
    assert events & READ


def test_adding_an_fd_twice_raises_and_keeps_the_first_handler(
    io_loop: IOLoop, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    first: list[int] = []
    second: list[int] = []

    def on_first(fd: Any, events: int) -> None:
        first.append(events)
        io_loop.stop()

    io_loop.add_handler(a, on_first, READ)
    with pytest.raises(FileExistsError):
        io_loop.add_handler(a, lambda fd, events: second.append(events), READ)
    # The same fd under its number is the same fd.
    with pytest.raises(FileExistsError):
        io_loop.add_handler(a.fileno(), lambda fd, events: second.append(events), WRITE)
    assert io_loop.handler_count() == 1
    b.send(b"x")
    run_loop(io_loop)
    assert first and first[0] & READ
    assert second == []


def test_update_handler_switches_write_on_then_off(
    io_loop: IOLoop, spy: PollSpy, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, _ = pair
    writes: list[int] = []
    iterations_after_off: list[int] = []

    def handler(fd: Any, events: int) -> None:
        if events & WRITE:
            writes.append(spy.calls)
            io_loop.update_handler(a, READ)  # WRITE off
            io_loop.add_callback(keep_going)

    def keep_going() -> None:
        # One callback per iteration: the loop polls (with timeout 0) in
        # between, so a still-watched WRITE would be reported each time.
        iterations_after_off.append(spy.calls)
        if len(iterations_after_off) >= 20:
            io_loop.stop()
        else:
            io_loop.add_callback(keep_going)

    io_loop.add_handler(a, handler, READ)  # nothing to read: silent
    io_loop.update_handler(a, READ | WRITE)  # a socket with room is writable
    run_loop(io_loop)
    assert len(writes) == 1, f"WRITE reported {len(writes)} times after it was switched off"
    assert iterations_after_off[-1] - writes[0] >= 19  # the loop did poll again


def test_update_handler_without_a_handler_raises(io_loop: IOLoop) -> None:
    a, b = socket.socketpair()
    with a, b, pytest.raises(FileNotFoundError):
        io_loop.update_handler(a, READ)


def test_update_handler_finds_a_socket_by_identity(
    io_loop: IOLoop, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, _ = pair
    waiter = Waiter(io_loop)
    io_loop.add_handler(a, lambda fd, events: waiter.done(events), READ)
    io_loop.update_handler(a, WRITE)
    run_loop(io_loop)
    assert waiter.values[0] & WRITE


def test_remove_handler_of_an_unknown_fd_is_silent(io_loop: IOLoop) -> None:
    a, b = socket.socketpair()
    with a, b:
        io_loop.remove_handler(a)
        io_loop.remove_handler(a.fileno())
    io_loop.remove_handler(a)  # closed, never registered
    io_loop.remove_handler(12345)
    assert io_loop.handler_count() == 0


def test_removed_handler_is_not_called(
    io_loop: IOLoop, spy: PollSpy, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    calls: list[int] = []
    io_loop.add_handler(a, lambda fd, events: calls.append(events), READ)
    io_loop.remove_handler(a)
    io_loop.remove_handler(a)  # twice: still silent
    assert io_loop.handler_count() == 0
    b.send(b"x")  # a is readable now, for ever (nobody reads it)
    waiter = Waiter(io_loop)
    io_loop.call_later(0.05, waiter.callback)
    run_loop(io_loop)
    assert calls == []
    assert spy.calls >= 1


def test_remove_handler_by_socket_after_close(io_loop: IOLoop) -> None:
    a, b = socket.socketpair()
    with b:
        old_fd = a.fileno()
        io_loop.add_handler(a, lambda fd, events: None, READ)
        a.close()
        assert a.fileno() == -1
        io_loop.remove_handler(a)
        assert io_loop.handler_count() == 0
        # The fd number is free in the loop and in its poller: a new socket
        # that gets it can be added, and its events are delivered to it.
        c, d = socket.socketpair()
        with c, d:
            reused = c if c.fileno() == old_fd else d
            if reused.fileno() != old_fd:
                pytest.skip("the kernel did not reuse the fd number")
            other = d if reused is c else c
            waiter = Waiter(io_loop)
            io_loop.add_handler(reused, lambda fd, events: waiter.done(fd), READ)
            other.send(b"x")
            run_loop(io_loop)
            io_loop.remove_handler(reused)
            assert waiter.values == [reused]


def test_handler_removing_another_ready_fd_in_the_same_batch(io_loop: IOLoop, spy: PollSpy) -> None:
    a, a_peer = _readable_pair()
    b, b_peer = _readable_pair()
    sockets = [a, a_peer, b, b_peer]
    calls: dict[str, int] = {"a": 0, "b": 0}

    def make_handler(me: str, other: socket.socket) -> Callable[[Any, int], None]:
        def handler(fd: Any, events: int) -> None:
            calls[me] += 1
            # Remove and close the other fd, as a stream closing its peer
            # would: its handler must not run, although its event is already
            # in this batch.
            io_loop.remove_handler(other)
            other.close()
            io_loop.remove_handler(fd)
            io_loop.add_callback(io_loop.stop)

        return handler

    try:
        io_loop.add_handler(a, make_handler("a", b), READ)
        io_loop.add_handler(b, make_handler("b", a), READ)
        fds = {a.fileno(), b.fileno()}
        run_loop(io_loop)
        # Both were reported by one poll: the scenario did happen.
        assert any(fds <= {fd for fd, _ in batch} for batch in spy.results)
        assert sorted(calls.values()) == [0, 1], calls
    finally:
        for sock in sockets:
            sock.close()


# -- callbacks ------------------------------------------------------------------


def test_callbacks_run_in_fifo_order_with_their_args(io_loop: IOLoop) -> None:
    order: list[tuple[int, str]] = []
    waiter = Waiter(io_loop, expected=50)

    def record(i: int, tag: str) -> None:
        order.append((i, tag))
        waiter.done()

    for i in range(50):
        io_loop.add_callback(record, i, f"t{i}")
    run_loop(io_loop)
    assert order == [(i, f"t{i}") for i in range(50)]


def test_callback_added_by_a_callback_runs_on_the_next_iteration(
    io_loop: IOLoop, spy: PollSpy
) -> None:
    seen: list[tuple[str, int]] = []

    def first() -> None:
        seen.append(("first", spy.calls))
        io_loop.add_callback(added)

    def sibling() -> None:  # queued before the loop started: same iteration
        seen.append(("sibling", spy.calls))

    def added() -> None:
        seen.append(("added", spy.calls))
        io_loop.stop()

    io_loop.add_callback(first)
    io_loop.add_callback(sibling)
    run_loop(io_loop)
    assert [name for name, _ in seen] == ["first", "sibling", "added"]
    calls = dict(seen)
    assert calls["first"] == calls["sibling"]
    assert calls["added"] > calls["first"], "the loop did not poll before the added callback"
    # Callbacks were pending, so that poll did not wait.
    assert spy.timeouts[calls["added"] - 1] == 0


def test_a_callback_re_adding_itself_does_not_starve_io(
    io_loop: IOLoop, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    spins = [0]
    handled: list[int] = []

    def spin() -> None:
        spins[0] += 1
        if not handled and spins[0] < 10_000:
            io_loop.add_callback(spin)

    def on_read(fd: Any, events: int) -> None:
        handled.append(spins[0])
        io_loop.stop()

    io_loop.add_handler(a, on_read, READ)
    b.send(b"x")
    io_loop.add_callback(spin)
    run_loop(io_loop)
    assert handled and handled[0] <= 3, f"I/O waited for {handled} callback iterations"


def test_add_callback_from_another_thread_wakes_a_sleeping_loop(
    io_loop: IOLoop, spy: PollSpy
) -> None:
    # No timer at all: without a wake-up the loop sleeps for ever, and only
    # the watchdog (its own socket pair) ends the test.
    waiter = Waiter(io_loop)
    woken_at: list[float] = []

    def poke() -> None:
        woken_at.append(time.monotonic())
        io_loop.add_callback(waiter.callback, threading.get_ident())

    thread = after_long_sleep(spy, poke)
    run_loop(io_loop)
    thread.join(DEADLINE)
    assert spy.timeouts[0] is None, "the loop was not sleeping without a deadline"
    assert waiter.values == [thread.ident]
    assert time.monotonic() - woken_at[0] < 2.0


def test_add_callback_from_many_threads_runs_each_callback_once(io_loop: IOLoop) -> None:
    n_threads, per_thread = 4, 500
    ran: dict[int, list[int]] = {t: [] for t in range(n_threads)}
    waiter = Waiter(io_loop, expected=n_threads * per_thread)
    barrier = threading.Barrier(n_threads)

    def record(t: int, i: int) -> None:
        ran[t].append(i)
        waiter.done()

    def producer(t: int) -> None:
        barrier.wait(DEADLINE)
        for i in range(per_thread):
            io_loop.add_callback(record, t, i)

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    run_loop(io_loop)
    for thread in threads:
        thread.join(DEADLINE)
    for t in range(n_threads):
        assert ran[t] == list(range(per_thread))  # each once, FIFO per thread


@contextlib.contextmanager
def _sigusr1_handler(handler: Callable[[int, Any], None]) -> Iterator[None]:
    if not hasattr(signal, "SIGUSR1"):
        pytest.skip("no SIGUSR1 on this platform")
    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


@pytest.mark.usefixtures("main_thread_only")
def test_add_callback_from_a_signal_handler_wakes_a_sleeping_loop(
    io_loop: IOLoop, spy: PollSpy
) -> None:
    if not hasattr(signal, "pthread_kill"):
        pytest.skip("signal.pthread_kill is not available")
    waiter = Waiter(io_loop)
    sent_at: list[float] = []

    def on_signal(signum: int, frame: Any) -> None:
        io_loop.add_callback(waiter.callback, signum)

    def send_signal() -> None:
        sent_at.append(time.monotonic())
        # To the loop's thread, which is blocked in poll: the handler runs
        # there, between the interrupted wait and its automatic retry.
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    with _sigusr1_handler(on_signal):
        thread = after_long_sleep(spy, send_signal)
        run_loop(io_loop)
        thread.join(DEADLINE)
    assert spy.timeouts[0] is None, "the loop was not sleeping without a deadline"
    assert waiter.values == [signal.SIGUSR1]
    assert time.monotonic() - sent_at[0] < 2.0


@pytest.mark.usefixtures("main_thread_only")
def test_add_callback_from_a_signal_arriving_just_before_the_loop_blocks(
    io_loop: IOLoop,
) -> None:
    """A signal may land at any bytecode, including after the loop decided
    that no callback is pending (so it will wait for ever) and before it
    enters poll. The callback its handler adds must still wake the loop.

    White-box: the loop marks "about to wait in poll" in ``_polling``; the
    signal is raised from inside that assignment, the last moment before the
    wait.
    """
    if "_polling" not in vars(io_loop):
        pytest.skip("IOLoop no longer has the _polling flag this check hooks")
    waiter = Waiter(io_loop)
    raised: list[bool] = []
    handled: list[bool] = []

    def on_signal(signum: int, frame: Any) -> None:
        handled.append(True)
        io_loop.add_callback(waiter.callback, "from-signal")

    class HookedIOLoop(type(io_loop)):  # type: ignore[misc]
        @property
        def _polling(self) -> bool:
            return bool(self.__dict__["_polling"])

        @_polling.setter
        def _polling(self, value: bool) -> None:
            if value and not raised:
                raised.append(True)
                signal.raise_signal(signal.SIGUSR1)
                for _ in range(3):  # let the interpreter run the Python handler
                    if handled:
                        break
                    os.getpid()
            self.__dict__["_polling"] = value

    with _sigusr1_handler(on_signal):
        io_loop.__class__ = HookedIOLoop
        try:
            run_loop(io_loop, timeout=3.0)
        finally:
            io_loop.__class__ = IOLoop
    assert raised and handled
    assert waiter.values == ["from-signal"]


# -- timers ---------------------------------------------------------------------


def test_call_later_runs_in_deadline_order_with_args(io_loop: IOLoop) -> None:
    order: list[str] = []
    waiter = Waiter(io_loop, expected=4)

    def record(tag: str) -> None:
        order.append(tag)
        waiter.done()

    io_loop.call_later(0.04, record, "c")
    io_loop.call_later(0.01, record, "a")
    io_loop.call_later(0.06, record, "d")
    io_loop.call_later(0.02, record, "b")
    run_loop(io_loop)
    assert order == ["a", "b", "c", "d"]


def test_timers_with_the_same_deadline_run_in_insertion_order(io_loop: IOLoop) -> None:
    order: list[int] = []
    waiter = Waiter(io_loop, expected=20)
    deadline = io_loop.time() + 0.02

    def record(i: int) -> None:
        order.append(i)
        waiter.done()

    for i in range(20):
        io_loop.add_timeout(deadline, record, i)
    run_loop(io_loop)
    assert order == list(range(20))


def test_add_timeout_on_the_loop_clock(io_loop: IOLoop) -> None:
    deadline = io_loop.time() + 0.05
    waiter = Waiter(io_loop)
    io_loop.add_timeout(deadline, lambda: waiter.done(io_loop.time()))
    run_loop(io_loop)
    ran_at = waiter.values[0]
    assert deadline <= ran_at < deadline + 1.0


def test_add_timeout_with_a_timedelta(io_loop: IOLoop) -> None:
    start = io_loop.time()
    waiter = Waiter(io_loop)
    io_loop.add_timeout(datetime.timedelta(milliseconds=50), lambda: waiter.done(io_loop.time()))
    run_loop(io_loop)
    assert start + 0.05 <= waiter.values[0] < start + 1.0


def test_call_later_delay_is_respected(io_loop: IOLoop) -> None:
    start = io_loop.time()
    waiter = Waiter(io_loop)
    io_loop.call_later(0.05, lambda: waiter.done(io_loop.time()))
    run_loop(io_loop)
    assert start + 0.05 <= waiter.values[0] < start + 1.0


def test_zero_and_past_deadlines_run_at_once(io_loop: IOLoop) -> None:
    waiter = Waiter(io_loop, expected=3)
    io_loop.call_later(0, waiter.callback, "zero")
    io_loop.call_later(-5, waiter.callback, "negative")
    io_loop.add_timeout(io_loop.time() - 100, waiter.callback, "past")
    assert run_loop(io_loop) < 1.0
    assert sorted(waiter.values) == ["negative", "past", "zero"]


def test_removed_timeout_never_runs(io_loop: IOLoop) -> None:
    ran: list[str] = []
    handle = io_loop.call_later(0.01, ran.append, "cancelled")
    io_loop.add_timeout(io_loop.time() + 0.01, ran.append, "kept")
    io_loop.remove_timeout(handle)
    io_loop.remove_timeout(handle)  # twice: a no-op
    waiter = Waiter(io_loop)
    io_loop.call_later(0.05, waiter.callback)
    run_loop(io_loop)
    assert ran == ["kept"]


def test_timer_removing_a_later_timer_due_in_the_same_iteration(io_loop: IOLoop) -> None:
    ran: list[str] = []
    deadline = io_loop.time() + 0.02
    handles: dict[str, Any] = {}

    def first() -> None:
        ran.append("first")
        io_loop.remove_timeout(handles["second"])

    io_loop.add_timeout(deadline, first)
    handles["second"] = io_loop.add_timeout(deadline, ran.append, "second")
    waiter = Waiter(io_loop)
    io_loop.add_timeout(deadline + 0.03, waiter.callback)
    run_loop(io_loop)
    assert ran == ["first"]


def test_remove_timeout_of_a_timer_that_already_ran_is_a_no_op(io_loop: IOLoop) -> None:
    waiter = Waiter(io_loop)
    handle = io_loop.call_later(0, waiter.callback, "ran")
    run_loop(io_loop)
    assert waiter.values == ["ran"]
    io_loop.remove_timeout(handle)
    io_loop.remove_timeout(handle)
    # The loop's timers are intact: a new timer still runs, once.
    second = Waiter(io_loop)
    io_loop.call_later(0.01, second.callback, "again")
    run_loop(io_loop)
    assert second.values == ["again"]
    assert waiter.values == ["ran"]


def _churn_timers(io_loop: IOLoop, rounds: int, per_round: int) -> list[int]:
    """While the loop runs, add and cancel ``rounds * per_round`` far timers,
    ``per_round`` per iteration, behind a live far timer (so cancelled entries
    cannot simply be popped off the top of the heap). Return the heap size seen
    after each round."""
    sizes: list[int] = []
    io_loop.call_later(DEADLINE * 10, lambda: None)  # live, and before them all

    def one_round() -> None:
        for i in range(per_round):
            io_loop.remove_timeout(io_loop.call_later(3600.0 + i, lambda: None))
        sizes.append(len(io_loop._timers))
        if len(sizes) < rounds:
            io_loop.add_callback(one_round)
        else:
            io_loop.stop()

    io_loop.add_callback(one_round)
    run_loop(io_loop, timeout=30.0)
    return sizes


def test_cancelled_timers_do_not_grow_the_heap_without_bound(io_loop: IOLoop) -> None:
    sizes = _churn_timers(io_loop, rounds=100, per_round=100)  # 10,000 add+remove
    assert len(sizes) == 100
    assert max(sizes) <= 2_000, f"the heap reached {max(sizes)} entries"
    assert len(io_loop._timers) <= 2_000


def test_timers_still_run_after_many_cancellations(io_loop: IOLoop) -> None:
    _churn_timers(io_loop, rounds=100, per_round=100)
    # The loop must still see new timers, whatever it did to its heap.
    waiter = Waiter(io_loop)
    io_loop.call_later(0.01, waiter.callback, "after-churn")
    run_loop(io_loop, timeout=3.0)
    assert waiter.values == ["after-churn"]


def test_timers_added_while_the_loop_runs_after_many_cancellations(io_loop: IOLoop) -> None:
    # Same, without restarting the loop in between.
    waiter = Waiter(io_loop)
    io_loop.call_later(DEADLINE * 10, lambda: None)
    rounds = [0]

    def churn() -> None:
        for i in range(100):
            io_loop.remove_timeout(io_loop.call_later(3600.0 + i, lambda: None))
        rounds[0] += 1
        if rounds[0] < 20:
            io_loop.add_callback(churn)
        else:
            io_loop.call_later(0.01, waiter.callback, "fired")

    io_loop.add_callback(churn)
    run_loop(io_loop, timeout=3.0)
    assert waiter.values == ["fired"]


# -- exceptions -----------------------------------------------------------------


class _Boom(Exception):
    pass


@pytest.mark.parametrize("where", ["callback", "handler", "timeout"])
def test_an_exception_is_logged_and_the_loop_goes_on(
    io_loop: IOLoop,
    caplog: pytest.LogCaptureFixture,
    where: str,
    pair: tuple[socket.socket, socket.socket],
) -> None:
    caplog.set_level(logging.ERROR, logger="iostream")
    boom = _Boom(f"boom in a {where}")
    waiter = Waiter(io_loop)

    def fail(*args: Any) -> None:
        if where == "handler":
            io_loop.remove_handler(pair[0])
        # The loop must go on to the next event: a later timer.
        io_loop.call_later(0.01, waiter.callback, "went on")
        raise boom

    if where == "callback":
        io_loop.add_callback(fail)
    elif where == "handler":
        io_loop.add_handler(pair[0], fail, READ)
        pair[1].send(b"x")
    else:
        io_loop.call_later(0.01, fail)
    run_loop(io_loop)
    assert waiter.values == ["went on"]
    records = [r for r in caplog.records if r.exc_info and r.exc_info[1] is boom]
    assert len(records) == 1, caplog.text
    record = records[0]
    assert record.name == "iostream" or record.name.startswith("iostream.")
    assert record.levelno >= logging.ERROR


# -- start / stop / time ----------------------------------------------------------


def test_stop_before_start_makes_the_next_start_return_at_once(io_loop: IOLoop) -> None:
    io_loop.stop()
    with Watchdog(io_loop, timeout=2.0) as watchdog:
        started = time.monotonic()
        io_loop.start()
        elapsed = time.monotonic() - started
    assert not watchdog.fired, "start() after stop() did not return"
    assert elapsed < 1.0
    assert not io_loop.running()
    # The start after that one runs normally: until its own stop.
    # (A start() that returned at once again would not have run the timer.)
    waiter = Waiter(io_loop)
    io_loop.call_later(0.05, waiter.callback, "ran")
    run_loop(io_loop)
    assert waiter.values == ["ran"]


def test_stop_from_a_callback(io_loop: IOLoop) -> None:
    ran: list[bool] = []

    def stop() -> None:
        assert io_loop.running()
        ran.append(True)
        io_loop.stop()

    io_loop.add_callback(stop)
    run_loop(io_loop)
    assert ran == [True]
    assert not io_loop.running()


def test_stop_from_a_handler(io_loop: IOLoop, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    calls: list[int] = []

    def handler(fd: Any, events: int) -> None:
        calls.append(events)
        io_loop.stop()

    io_loop.add_handler(a, handler, READ)
    b.send(b"x")
    run_loop(io_loop)
    assert len(calls) == 1
    assert not io_loop.running()


def test_stop_from_another_thread(io_loop: IOLoop, spy: PollSpy) -> None:
    thread = after_long_sleep(spy, io_loop.stop)
    run_loop(io_loop)
    thread.join(DEADLINE)
    assert spy.timeouts[0] is None
    assert not io_loop.running()


def test_start_on_a_running_loop_raises(io_loop: IOLoop, spy: PollSpy) -> None:
    errors: list[BaseException] = []
    after: list[str] = []

    def nested_start() -> None:
        try:
            io_loop.start()
        except RuntimeError as e:
            errors.append(e)
        # The refused start() did not disturb the running loop.
        assert io_loop.running()
        io_loop.add_callback(after.append, "still running")

    def from_thread() -> None:
        try:
            io_loop.start()
        except RuntimeError as e:
            errors.append(e)
        io_loop.stop()

    io_loop.add_callback(nested_start)
    thread = after_long_sleep(spy, from_thread)
    run_loop(io_loop)
    thread.join(DEADLINE)
    assert len(errors) == 2, errors
    assert all(isinstance(e, RuntimeError) for e in errors)
    assert after == ["still running"]


def test_time_is_monotonic_seconds(io_loop: IOLoop) -> None:
    readings = [io_loop.time() for _ in range(1000)]
    assert all(isinstance(t, float) for t in readings)
    assert readings == sorted(readings)
    # Seconds: it advances as fast as the monotonic clock over a 0.1 s timer.
    loop_start, mono_start = io_loop.time(), time.monotonic()
    waiter = Waiter(io_loop)
    io_loop.call_later(0.1, lambda: waiter.done((io_loop.time(), time.monotonic())))
    run_loop(io_loop)
    loop_end, mono_end = waiter.values[0]
    assert loop_end - loop_start == pytest.approx(mono_end - mono_start, abs=0.02)
    assert loop_end - loop_start >= 0.1


# -- close ----------------------------------------------------------------------


def test_close_releases_the_poller_and_the_waker(poller_name: str) -> None:
    path = fd_dir()
    if path is None:
        pytest.skip("no fd directory to count open fds")
    before = open_fd_count(path)
    loop = IOLoop(poller_name)
    # The waker is a socket pair; epoll/kqueue/devpoll also hold a kernel fd.
    assert open_fd_count(path) >= before + 2
    loop.close()
    assert loop.closed()
    assert open_fd_count(path) == before
    loop.close()  # idempotent
    loop.close(all_fds=True)
    assert open_fd_count(path) == before


def test_close_without_all_fds_leaves_registered_sockets_open(poller_name: str) -> None:
    loop = IOLoop(poller_name)
    a, b = socket.socketpair()
    with a, b:
        loop.add_handler(a, lambda fd, events: None, READ)
        loop.close()
        assert a.fileno() != -1
        b.send(b"x")
        assert a.recv(1) == b"x"


def test_close_all_fds_closes_registered_sockets_and_fds(poller_name: str) -> None:
    loop = IOLoop(poller_name)
    a, b = socket.socketpair()
    c, d = loopback_pair()
    pipe_fds: tuple[int, int] | None = None
    try:
        loop.add_handler(a, lambda fd, events: None, READ)
        loop.add_handler(c, lambda fd, events: None, READ | WRITE)
        if sys.platform != "win32":  # int fds that are not sockets: POSIX only
            pipe_fds = os.pipe()
            loop.add_handler(pipe_fds[0], lambda fd, events: None, READ)
        loop.close(all_fds=True)
        assert a.fileno() == -1
        assert c.fileno() == -1
        assert b.fileno() != -1 and d.fileno() != -1  # not registered: left alone
        if pipe_fds is not None:
            with pytest.raises(OSError):
                os.fstat(pipe_fds[0])
            os.fstat(pipe_fds[1])  # not registered: still open
        loop.close(all_fds=True)  # idempotent
    finally:
        for sock in (a, b, c, d):
            sock.close()
        if pipe_fds is not None:
            os.close(pipe_fds[1])


# -- no busy loop -----------------------------------------------------------------


def test_idle_loop_with_a_far_timer_sleeps(io_loop: IOLoop, spy: PollSpy) -> None:
    io_loop.call_later(3600.0, lambda: None)
    waiter = Waiter(io_loop)
    started = io_loop.time()
    io_loop.call_later(0.5, lambda: waiter.done(io_loop.time()))
    cpu_start = time.process_time()
    run_loop(io_loop)
    cpu = time.process_time() - cpu_start
    elapsed = waiter.values[0] - started
    assert elapsed >= 0.5
    assert spy.calls <= 5, f"poll called {spy.calls} times: {spy.timeouts}"
    assert cpu < 0.1, f"an idle loop used {cpu:.3f}s of CPU in {elapsed:.3f}s"


def test_idle_loop_without_timers_waits_without_a_deadline(io_loop: IOLoop, spy: PollSpy) -> None:
    stopper = threading.Timer(0.3, io_loop.stop)
    cpu_start = time.process_time()
    started = time.monotonic()
    stopper.start()
    try:
        run_loop(io_loop)
    finally:
        stopper.cancel()
        stopper.join(DEADLINE)
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu_start
    assert elapsed >= 0.3
    assert spy.calls <= 3, f"poll called {spy.calls} times: {spy.timeouts}"
    assert spy.timeouts[0] is None
    assert cpu < 0.1, f"an idle loop used {cpu:.3f}s of CPU in {elapsed:.3f}s"


def test_a_pending_timer_does_not_make_the_loop_spin(io_loop: IOLoop, spy: PollSpy) -> None:
    waiter = Waiter(io_loop)
    started = io_loop.time()
    io_loop.call_later(0.3, lambda: waiter.done((spy.calls, io_loop.time())))
    run_loop(io_loop)
    polls_before_timer, ran_at = waiter.values[0]
    assert ran_at - started >= 0.3
    assert polls_before_timer <= 5, f"poll called {polls_before_timer} times: {spy.timeouts}"
    first_timeout = spy.timeouts[0]
    assert first_timeout is not None and 0 < first_timeout <= 0.3


# -- bad input ------------------------------------------------------------------


def test_add_callback_refuses_a_non_callable(io_loop: IOLoop) -> None:
    with pytest.raises(TypeError, match="callback"):
        io_loop.add_callback(42)  # type: ignore[arg-type]
    # Nothing was queued: the loop has nothing to fail on later.
    assert len(io_loop._callbacks) == 0


@pytest.mark.parametrize("method", ["call_later", "add_timeout"])
def test_timers_refuse_a_non_callable(io_loop: IOLoop, method: str) -> None:
    schedule = getattr(io_loop, method)
    when = 0.01 if method == "call_later" else io_loop.time() + 0.01
    with pytest.raises(TypeError, match="callback"):
        schedule(when, "not callable")
    assert len(io_loop._timers) == 0


def test_timers_refuse_a_bad_delay_or_deadline(io_loop: IOLoop) -> None:
    with pytest.raises(TypeError, match="delay"):
        io_loop.call_later("1", lambda: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="deadline"):
        io_loop.add_timeout("soon", lambda: None)  # type: ignore[arg-type]
    assert len(io_loop._timers) == 0


def _assert_nothing_registered(io_loop: IOLoop, sock: socket.socket) -> None:
    """The loop and its poller have no trace of *sock*: it can be added again
    and its events are delivered."""
    assert io_loop.handler_count() == 0
    waiter = Waiter(io_loop)
    io_loop.add_handler(sock, lambda fd, events: waiter.done(events), WRITE)
    run_loop(io_loop)
    io_loop.remove_handler(sock)
    assert waiter.values[0] & WRITE


def test_add_handler_refuses_a_non_callable_handler(
    io_loop: IOLoop, pair: tuple[socket.socket, socket.socket]
) -> None:
    with pytest.raises(TypeError, match="handler"):
        io_loop.add_handler(pair[0], None, READ)  # type: ignore[arg-type]
    _assert_nothing_registered(io_loop, pair[0])


def test_add_handler_refuses_a_closed_socket(io_loop: IOLoop) -> None:
    a, b = socket.socketpair()
    a.close()
    b.close()
    with pytest.raises(ValueError):
        io_loop.add_handler(a, lambda fd, events: None, READ)
    with pytest.raises(ValueError):
        io_loop.add_handler(-1, lambda fd, events: None, READ)
    assert io_loop.handler_count() == 0


@pytest.mark.parametrize("bad", ["3", 3.0, None, object()], ids=["str", "float", "None", "object"])
def test_add_handler_refuses_a_non_fd(io_loop: IOLoop, bad: Any) -> None:
    with pytest.raises(TypeError, match="fd"):
        io_loop.add_handler(bad, lambda fd, events: None, READ)
    assert io_loop.handler_count() == 0


def test_add_handler_refuses_bad_events_and_registers_nothing(
    io_loop: IOLoop, pair: tuple[socket.socket, socket.socket]
) -> None:
    with pytest.raises(ValueError, match="events"):
        io_loop.add_handler(pair[0], lambda fd, events: None, 0x100)
    _assert_nothing_registered(io_loop, pair[0])


def test_a_high_fd_select_refuses_falls_back_and_the_loop_keeps_working(
    io_loop: IOLoop, poller_name: str, pair: tuple[socket.socket, socket.socket]
) -> None:
    """docs/pollers.md, "Per-fd fallback" (which serves add_handler): select
    cannot hold an fd >= FD_SETSIZE, so the loop watches it another way (poll),
    the chosen poller keeps the rest, and the fd gets its events."""
    if poller_name != "select" or sys.platform == "win32":
        pytest.skip("only select on POSIX has an fd limit (FD_SETSIZE)")
    high = 4000
    try:
        os.dup2(pair[0].fileno(), high)
    except OSError:
        pytest.skip("cannot open an fd above FD_SETSIZE here (RLIMIT_NOFILE)")
    seen: list[tuple[object, int]] = []
    try:
        with pytest.raises(ValueError):
            io_loop.poller.register(high, READ)  # the chosen poller alone refuses

        def on_high(fd: object, events: int) -> None:
            seen.append((fd, events))
            io_loop.stop()

        io_loop.add_handler(high, on_high, READ)
        assert io_loop.handler_count() == 1
        assert len(io_loop.poller) == 1  # type: ignore[arg-type]  # only the waker
        pair[1].send(b"x")
        run_loop(io_loop)
        assert seen == [(high, READ)]
        io_loop.remove_handler(high)
        assert io_loop.handler_count() == 0
        _assert_nothing_registered(io_loop, pair[0])
    finally:
        os.close(high)
