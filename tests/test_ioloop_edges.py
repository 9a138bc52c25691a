"""IOLoop and poller edges from issue 9, on every poller.

- far timers (item 2): any finite delay works; the wait given to the
  poller is capped, so 30 days or 30 years never overflow a C int of
  milliseconds (epoll, poll);
- stale events after fd reuse (item 4): after ``remove_handler(fd)`` no event
  polled before the removal reaches a handler added in the same iteration
  for a new file with the same fd number;
- ``handler_count()`` after ``close()`` (item 10).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import fake_kqueue
import pytest
from _ioloop_helpers import PollSpy, run_loop
from conftest import POLLER_NAMES

from iostream import READ, IOLoop
from iostream.pollers import BACKENDS, Poller, SelectPoller
from iostream.pollers.base import MAX_TIMEOUT, FileDescriptorLike, fd_of
from iostream.pollers.kqueue import KqueuePoller

THIRTY_DAYS = 30 * 86400.0
THIRTY_YEARS = 30 * 365 * 86400.0


@pytest.fixture(params=[*POLLER_NAMES, "kqueue-stand-in"])
def any_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[IOLoop]:
    """An IOLoop on each poller here, and on KqueuePoller over ``fake_kqueue``."""
    if request.param == "kqueue-stand-in":
        monkeypatch.setattr(KqueuePoller, "_select", fake_kqueue)
        loop = IOLoop(KqueuePoller(), make_current=False)
    else:
        loop = IOLoop(request.param, make_current=False)
    try:
        yield loop
    finally:
        loop.close(all_fds=True)


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


# -- far timers -------------------------------------------------------------------


@pytest.mark.parametrize("delay", [THIRTY_DAYS, THIRTY_YEARS, 1e300], ids=["30d", "30y", "1e300"])
def test_a_far_timer_does_not_break_the_loop(
    any_loop: IOLoop, delay: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = PollSpy(any_loop.poller.poll)
    monkeypatch.setattr(any_loop.poller, "poll", spy)
    ran: list[bool] = []
    far = any_loop.call_later(delay, lambda: ran.append(True))
    # Let the loop reach poll() with the far timer first in the heap, then
    # stop it from a handler (the poller, not a timer, wakes it).
    a, b = socket.socketpair()
    try:
        any_loop.add_handler(a, lambda fd, events: any_loop.stop(), READ)
        any_loop.add_callback(b.send, b"x")
        run_loop(any_loop)
        any_loop.remove_handler(a)
    finally:
        a.close()
        b.close()
    assert ran == []
    assert not far.cancelled()
    waits = [t for t in spy.timeouts if t is not None and t > 0]
    assert waits and max(waits) <= MAX_TIMEOUT


@pytest.mark.parametrize("name", sorted(BACKENDS))
@pytest.mark.parametrize("timeout", [THIRTY_DAYS, THIRTY_YEARS, 1e300], ids=["30d", "30y", "1e300"])
def test_poller_accepts_a_far_timeout(
    name: str, timeout: float, pair: tuple[socket.socket, socket.socket]
) -> None:
    cls = BACKENDS[name]
    if not cls.available():
        pytest.skip(f"{name} is not available here")
    a, b = pair
    b.send(b"x")
    with cls() as poller:
        poller.register(a, READ)
        # Ready at once, so this returns at once (no OverflowError).
        assert poller.poll(timeout) == [(a.fileno(), READ)]


def test_max_timeout_is_a_day_at_most() -> None:
    # asyncio caps at 24 h; a C int of milliseconds holds 24.8 days.
    assert 0 < MAX_TIMEOUT <= 86400.0


# -- stale events after fd reuse ----------------------------------------------------


def test_removed_fd_reused_in_the_same_iteration_gets_no_stale_event(
    any_loop: IOLoop,
) -> None:
    """Handler of X removes Y (readable, already polled), closes it, and opens a
    new socket that gets Y's number: the new handler must not see Y's event."""
    x_reader, x_writer = socket.socketpair()
    y_reader, y_writer = socket.socketpair()
    new_sockets: list[socket.socket] = []
    calls: list[str] = []
    reused: list[bool] = []
    try:
        x_writer.send(b"x")
        y_writer.send(b"y")
        y_fd = y_reader.fileno()

        def replace_y(fd: object, events: int) -> None:
            if "x" in calls:
                return
            calls.append("x")
            if y_reader.fileno() != -1:
                any_loop.remove_handler(y_reader)
                y_reader.close()
                # The lowest free number is y_fd again: the new socket (idle,
                # nothing to read) takes it.
                fresh, peer = socket.socketpair()
                new_sockets.extend((fresh, peer))
                reused.append(y_fd in (fresh.fileno(), peer.fileno()))
                any_loop.add_handler(fresh if fresh.fileno() == y_fd else peer, on_new, READ)
            any_loop.add_callback(any_loop.stop)

        def on_y(fd: object, events: int) -> None:
            calls.append("y")
            # Polled in the same batch before X: then X's handler does the
            # swap on the next iteration — make X go first by swapping here.
            replace_y(fd, events)

        def on_new(fd: object, events: int) -> None:
            calls.append(f"new {events}")

        any_loop.add_handler(x_reader, replace_y, READ)
        any_loop.add_handler(y_reader, on_y, READ)
        run_loop(any_loop)
        assert "x" in calls
        assert reused == [True]
        assert not any(call.startswith("new") for call in calls), calls
    finally:
        for sock in (x_reader, x_writer, y_reader, y_writer, *new_sockets):
            sock.close()


def test_stale_event_is_dropped_with_a_scripted_batch(
    any_loop: IOLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same rule with the batch fixed: [(A, READ), (B, READ)], A's handler
    removes B and adds a new handler on B's number."""
    a, a_peer = socket.socketpair()
    b_fd = os.dup(a_peer.fileno())
    calls: list[str] = []
    batches = [[(a.fileno(), READ), (b_fd, READ)]]
    real_poll = any_loop.poller.poll

    def scripted(timeout: float | None) -> list[tuple[int, int]]:
        if batches:
            return batches.pop()
        return real_poll(timeout)

    monkeypatch.setattr(any_loop.poller, "poll", scripted)
    try:

        def on_a(fd: object, events: int) -> None:
            calls.append("a")
            any_loop.remove_handler(b_fd)
            any_loop.add_handler(b_fd, lambda fd, events: calls.append("new b"), READ)
            any_loop.add_callback(any_loop.stop)

        any_loop.add_handler(a, on_a, READ)
        any_loop.add_handler(b_fd, lambda fd, events: calls.append("old b"), READ)
        run_loop(any_loop)
        assert calls == ["a"]
        any_loop.remove_handler(b_fd)
    finally:
        os.close(b_fd)
        a.close()
        a_peer.close()


def test_an_fd_re_added_after_the_batch_gets_its_events(
    any_loop: IOLoop, pair: tuple[socket.socket, socket.socket]
) -> None:
    """Dropping stale events lasts one batch only."""
    a, b = pair
    calls: list[str] = []

    def first(fd: object, events: int) -> None:
        any_loop.remove_handler(a)
        any_loop.add_callback(add_again)

    def add_again() -> None:
        any_loop.add_handler(a, second, READ)

    def second(fd: object, events: int) -> None:
        calls.append("second")
        any_loop.stop()

    b.send(b"x")
    any_loop.add_handler(a, first, READ)
    run_loop(any_loop)
    assert calls == ["second"]


# -- handler_count ------------------------------------------------------------------


def test_handler_count_after_close_is_zero(poller_name: str) -> None:
    loop = IOLoop(poller_name, make_current=False)
    a, b = socket.socketpair()
    try:
        loop.add_handler(a, lambda fd, events: None, READ)
        assert loop.handler_count() == 1
        loop.close()
        assert loop.handler_count() == 0
    finally:
        a.close()
        b.close()


# -- an empty regular file, backend by backend (issue 9 item 5) ----------------------


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_empty_regular_file(name: str, tmp_path: Path) -> None:
    """poll and select: always ready (POSIX); epoll: refused (EPERM) with a
    ValueError naming the backends that can; kqueue: ready too, by decision
    (tests/test_kqueue_fake.py)."""
    cls = BACKENDS[name]
    if not cls.available():
        pytest.skip(f"{name} is not available here")
    path = tmp_path / "empty"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    try:
        with cls() as poller:
            if name == "epoll":
                with pytest.raises(ValueError, match="regular file"):
                    poller.register(fd, READ)
                return
            poller.register(fd, READ)
            assert poller.poll(5.0) == [(fd, READ)]
    finally:
        os.close(fd)


# -- one object table: the poller's (issue 13 item 5) --------------------------------


def test_the_loop_finds_closed_sockets_through_its_poller(poller_name: str) -> None:
    loop = IOLoop(poller_name, make_current=False)
    a, b = socket.socketpair()
    try:
        number = a.fileno()
        loop.add_handler(a, lambda fd, events: None, READ)
        assert not hasattr(loop, "_fd_of_object")
        a.close()
        assert loop.poller.fileno_of(a) == number
        loop.remove_handler(a)
        assert loop.handler_count() == 0
        with pytest.raises(FileNotFoundError):
            loop.poller.fileno_of(a)
    finally:
        loop.close()
        b.close()


class _IntOnlyPoller(Poller):
    """A third-party poller with no identity table: it takes ints only."""

    name = "int-only"

    def __init__(self) -> None:
        self.inner = SelectPoller()

    @classmethod
    def available(cls) -> bool:
        return True

    def register(self, fd: FileDescriptorLike, events: int) -> None:
        self.inner.register(fd_of(fd), events)

    def modify(self, fd: FileDescriptorLike, events: int) -> None:
        self.inner.modify(fd_of(fd), events)

    def unregister(self, fd: FileDescriptorLike) -> None:
        self.inner.unregister(fd_of(fd))

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        return self.inner.poll(timeout)

    def close(self) -> None:
        self.inner.close()


def test_remove_a_closed_socket_with_a_poller_without_identity() -> None:
    loop = IOLoop(_IntOnlyPoller(), make_current=False)
    a, b = socket.socketpair()
    try:
        loop.add_handler(a, lambda fd, events: None, READ)
        a.close()
        loop.remove_handler(a)
        assert loop.handler_count() == 0
        loop.remove_handler(a)  # silent, as for any fd without a handler
    finally:
        loop.close()
        b.close()


# -- per-fd fallback serves add_handler (docs/pollers.md, "Per-fd fallback") ---------------


def test_an_empty_regular_file_is_always_ready_through_the_loop(
    io_loop: IOLoop, poller_name: str, tmp_path: Path
) -> None:
    """epoll refuses a regular file; the loop still watches it, as always
    ready, like poll and select do; io_loop.poller stays the chosen backend."""
    path = tmp_path / "empty"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    seen: list[tuple[object, int]] = []
    try:
        assert type(io_loop.poller) is BACKENDS[poller_name]

        def on_file(got: object, events: int) -> None:
            seen.append((got, events))
            io_loop.remove_handler(fd)
            io_loop.stop()

        io_loop.add_handler(fd, on_file, READ)
        run_loop(io_loop)
        assert seen == [(fd, READ)]
        assert io_loop.handler_count() == 0
    finally:
        os.close(fd)
