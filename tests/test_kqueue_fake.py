"""KqueuePoller on Linux, against a kqueue stand-in (``fake_kqueue``).

The stand-in follows the FreeBSD kqueue(2) manual page
(https://man.freebsd.org/cgi/man.cgi?query=kqueue&sektion=2); see its
docstring for the points modelled. The first tests check the stand-in
against the manual on real sockets; then the whole poller contract runs on
KqueuePoller over it; then the kqueue-specific logic: filter bookkeeping,
merging two kevents into one pair, EV_EOF and EV_ERROR.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import fake_kqueue as kq
import pytest
import test_pollers
from _poller_helpers import loopback_pair, poll_until, refused_connect

from iostream.pollers import ERROR, READ, WRITE, Poller
from iostream.pollers.kqueue import KqueuePoller

Pair = tuple[socket.socket, socket.socket]


@pytest.fixture
def pair() -> Iterator[Pair]:
    """A connected loopback pair, closed afterwards."""
    a, b = loopback_pair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make KqueuePoller use the stand-in."""
    monkeypatch.setattr(KqueuePoller, "_select", kq)


# -- the stand-in follows kqueue(2) ----------------------------------------------


def test_fake_separate_filters(pair: Pair) -> None:
    a, b = pair
    queue = kq.kqueue()
    queue.control(
        [kq.kevent(b, kq.KQ_FILTER_READ, kq.KQ_EV_ADD), kq.kevent(b, kq.KQ_FILTER_WRITE)], 0
    )
    a.send(b"abc")
    events = queue.control(None, 4, 5.0)
    assert sorted((e.ident, e.filter) for e in events) == [
        (b.fileno(), kq.KQ_FILTER_WRITE),
        (b.fileno(), kq.KQ_FILTER_READ),
    ]
    read = next(e for e in events if e.filter == kq.KQ_FILTER_READ)
    assert read.data == 3
    assert not read.flags & kq.KQ_EV_EOF


def test_fake_delete_missing_filter(pair: Pair) -> None:
    _, b = pair
    queue = kq.kqueue()
    change = kq.kevent(b, kq.KQ_FILTER_WRITE, kq.KQ_EV_DELETE)
    # Room in the event list: an EV_ERROR entry with the errno in data.
    [entry] = queue.control([change], 1, 0)
    assert entry.flags & kq.KQ_EV_ERROR
    assert entry.data == errno.ENOENT
    # No room: the call fails.
    with pytest.raises(FileNotFoundError):
        queue.control([change], 0, 0)


def test_fake_bad_fd_and_arguments(pair: Pair) -> None:
    queue = kq.kqueue()
    sock = socket.socket()
    fd = sock.fileno()
    sock.close()
    with pytest.raises(OSError) as info:
        queue.control([kq.kevent(fd, kq.KQ_FILTER_READ, kq.KQ_EV_ADD)], 0, 0)
    assert info.value.errno == errno.EBADF
    with pytest.raises(ValueError):
        queue.control(None, 1, -1)
    with pytest.raises(ValueError):
        queue.control(None, -1, 0)
    with pytest.raises(TypeError):
        queue.control([object()], 0, 0)  # type: ignore[list-item]
    queue.close()
    with pytest.raises(ValueError):
        queue.control(None, 1, 0)


def test_fake_eof_with_data_pending(pair: Pair) -> None:
    a, b = pair
    queue = kq.kqueue()
    queue.control([kq.kevent(b, kq.KQ_FILTER_READ, kq.KQ_EV_ADD)], 0)
    a.send(b"tail")
    a.close()
    [event] = queue.control(None, 2, 5.0)
    assert event.flags & kq.KQ_EV_EOF
    assert event.data == 4  # the data is still there
    assert event.fflags == 0  # no socket error


def test_fake_failed_connect_is_write_eof_with_errno() -> None:
    queue = kq.kqueue()
    with refused_connect() as sock:
        queue.control([kq.kevent(sock, kq.KQ_FILTER_WRITE, kq.KQ_EV_ADD)], 0)
        [event] = queue.control(None, 2, 5.0)
        assert event.filter == kq.KQ_FILTER_WRITE
        assert event.flags & kq.KQ_EV_EOF
        assert event.fflags == errno.ECONNREFUSED


def test_fake_close_removes_notes(pair: Pair) -> None:
    a, b = pair
    queue = kq.kqueue()
    queue.control([kq.kevent(b, kq.KQ_FILTER_WRITE, kq.KQ_EV_ADD)], 0)
    b.close()
    assert queue.control(None, 2, 0.05) == []
    queue.control([kq.kevent(a, kq.KQ_FILTER_WRITE, kq.KQ_EV_ADD)], 0)
    assert [e.ident for e in queue.control(None, 2, 0)] == [a.fileno()]


# -- the contract, on KqueuePoller over the stand-in -------------------------------


class TestKqueueOnFakeContract(test_pollers.TestContract):
    """The whole poller contract, on KqueuePoller over the stand-in."""

    @pytest.fixture
    def name(self) -> str:
        """The backend's name."""
        return "kqueue"

    @pytest.fixture
    def make(self, fake: None) -> Callable[[], Poller]:
        """KqueuePoller, using the stand-in."""
        return KqueuePoller

    def socket_error(self, sock: socket.socket) -> int:
        """The fake read (and so cleared) SO_ERROR: it remembers it."""
        return kq.socket_error(sock.fileno())


# -- kqueue-specific logic -------------------------------------------------------


def _changes(poller: KqueuePoller) -> list[list[tuple[int, int, int]]]:
    queue: Any = poller._kq
    return [[(c.ident, c.filter, c.flags) for c in cl] for cl in queue.changelists if cl]


def test_modify_touches_only_changed_filters(fake: None, pair: Pair) -> None:
    a, _ = pair
    fd = a.fileno()
    with KqueuePoller() as poller:
        poller.register(a, READ)
        poller.modify(a, READ | WRITE)
        poller.modify(a, WRITE)
        poller.modify(a, WRITE | ERROR)  # the write note reports errors: no change at all
        poller.modify(a, 0)  # no READ or WRITE: the ERROR-alone read note
        poller.modify(a, ERROR)  # the same note: no change
        poller.modify(a, READ)  # a plain read note replaces it
        poller.unregister(a)
        r, w, add, delete = kq.KQ_FILTER_READ, kq.KQ_FILTER_WRITE, kq.KQ_EV_ADD, kq.KQ_EV_DELETE
        clear = kq.KQ_EV_CLEAR
        assert _changes(poller) == [
            [(fd, r, add)],
            [(fd, w, add)],
            [(fd, r, delete)],
            [(fd, r, add | clear), (fd, w, delete)],
            [(fd, r, delete), (fd, r, add)],
            [(fd, r, delete)],
        ]


def test_read_and_write_merge_into_one_pair(fake: None, pair: Pair) -> None:
    a, b = pair
    with KqueuePoller() as poller:
        poller.register(a, READ | WRITE)
        b.send(b"x")
        events, _ = poll_until(poller, a.fileno(), READ)
        assert events == READ | WRITE


def test_reset_is_read_with_error(fake: None, pair: Pair) -> None:
    # EV_EOF on the read filter with a socket error in fflags: ERROR.
    a, b = pair
    with KqueuePoller() as poller:
        poller.register(b, READ)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        a.close()
        events, _ = poll_until(poller, b.fileno(), READ)
        assert events == READ | ERROR


def test_failed_connect_is_write_and_error(fake: None) -> None:
    with KqueuePoller() as poller, refused_connect() as sock:
        poller.register(sock, WRITE)
        events, _ = poll_until(poller, sock.fileno(), WRITE)
        assert events == WRITE | ERROR


class _ScriptedQueue:
    """A queue whose control() returns given kevents (for EV_ERROR entries)."""

    def __init__(self, events: list[kq.kevent]) -> None:
        self.events = events
        self.closed = False

    def control(self, changes: Any, max_events: int, timeout: float | None = None) -> Any:
        return [] if changes else self.events

    def close(self) -> None:
        self.closed = True


def test_ev_error_entry_is_error(fake: None, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted = [
        kq.kevent(7, kq.KQ_FILTER_READ, kq.KQ_EV_ERROR, 0, errno.EBADF),
        kq.kevent(8, kq.KQ_FILTER_WRITE, 0),
        kq.kevent(8, kq.KQ_FILTER_READ, kq.KQ_EV_EOF, 0, 5),  # EOF, data left, no error
    ]
    monkeypatch.setattr(kq, "kqueue", lambda: _ScriptedQueue(scripted))
    with KqueuePoller() as poller:
        assert sorted(poller.poll(0)) == [(7, ERROR), (8, READ | WRITE)]


def test_poll_offers_room_for_every_filter(fake: None) -> None:
    pairs = [loopback_pair() for _ in range(5)]
    try:
        with KqueuePoller() as poller:
            for a, _ in pairs:
                poller.register(a, READ | WRITE)
            for _, b in pairs:
                b.send(b"x")
            poll_until(poller, pairs[-1][0].fileno(), READ)
            result = dict(poller.poll(0))
            assert result == {a.fileno(): READ | WRITE for a, _ in pairs}
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_available_follows_the_select_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(KqueuePoller, "_select", object())
    assert not KqueuePoller.available()
    assert "select.kqueue does not exist" in (KqueuePoller._unavailable_reason() or "")
    monkeypatch.setattr(KqueuePoller, "_select", kq)
    assert KqueuePoller.available()


# -- ERROR alone (issue 9 item 5) ---------------------------------------------------


def _reset(sock: socket.socket) -> None:
    """Close *sock* with an RST (SO_LINGER on, 0 s)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def test_fake_lowat_note_ignores_data_and_fires_on_eof(pair: Pair) -> None:
    a, b = pair
    queue = kq.kqueue()
    note = kq.kevent(
        b, kq.KQ_FILTER_READ, kq.KQ_EV_ADD | kq.KQ_EV_CLEAR, kq.KQ_NOTE_LOWAT, 0x7FFFFFFF
    )
    queue.control([note], 0)
    a.send(b"data")
    assert queue.control(None, 1, 0.05) == []
    a.close()
    events = queue.control(None, 1, 5.0)
    assert len(events) == 1 and events[0].flags & kq.KQ_EV_EOF
    # EV_CLEAR: retrieved once, then reset until the state changes.
    assert queue.control(None, 1, 0.05) == []


def test_fake_empty_regular_file_is_not_readable(tmp_path: Any) -> None:
    """kqueue(2): EVFILT_READ on a vnode fires only before the end of file."""
    path = tmp_path / "empty"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDWR)
    try:
        queue = kq.kqueue()
        queue.control([kq.kevent(fd, kq.KQ_FILTER_READ, kq.KQ_EV_ADD)], 0)
        assert queue.control(None, 1, 0.02) == []
        os.pwrite(fd, b"abc", 0)
        events = queue.control(None, 1, 1.0)
        assert [(e.ident, e.data) for e in events] == [(fd, 3)]
    finally:
        os.close(fd)


@pytest.mark.parametrize("events", [ERROR, 0], ids=["ERROR", "none"])
def test_error_alone_reports_a_reset_and_not_data(fake: None, pair: Pair, events: int) -> None:
    a, b = pair
    with KqueuePoller() as poller:
        poller.register(b, events)
        a.send(b"unread data")
        assert poller.poll(0.05) == []
        _reset(a)
        result, _ = poll_until(poller, b.fileno(), ERROR)
        assert result == ERROR


def test_error_alone_reports_a_clean_hang_up(fake: None, pair: Pair) -> None:
    a, b = pair
    with KqueuePoller() as poller:
        poller.register(b, ERROR)
        a.close()
        result, _ = poll_until(poller, b.fileno(), ERROR)
        assert result == ERROR


def test_error_alone_full_buffer_does_not_spin(fake: None, pair: Pair) -> None:
    """A full receive buffer reaches macOS's capped low-water mark: reported
    at most once (EV_CLEAR) and never as an event for the caller."""
    a, b = pair
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with KqueuePoller() as poller:
        poller.register(b, ERROR)
        chunk = b"x" * 65536
        try:
            for _ in range(1000):
                a.send(chunk)
        except BlockingIOError:
            pass
        for _ in range(3):
            assert poller.poll(0.02) == []


def test_error_alone_then_read_then_error_alone(fake: None, pair: Pair) -> None:
    a, b = pair
    with KqueuePoller() as poller:
        poller.register(b, ERROR)
        a.send(b"x")
        assert poller.poll(0.05) == []
        poller.modify(b, READ)
        result, _ = poll_until(poller, b.fileno(), READ)
        assert result == READ
        poller.modify(b, ERROR)
        assert poller.poll(0.05) == []
        poller.unregister(b)
        assert len(poller._kq._notes) == 0


def test_loop_handler_with_error_alone_learns_of_a_reset(fake: None, pair: Pair) -> None:
    from iostream import IOLoop

    a, b = pair
    loop = IOLoop(KqueuePoller(), make_current=False)
    seen: list[int] = []
    try:

        def on_event(fd: object, events: int) -> None:
            seen.append(events)
            loop.stop()

        loop.add_handler(b, on_event, ERROR)
        loop.call_later(5.0, loop.stop)
        _reset(a)
        loop.start()
        assert seen == [ERROR]
    finally:
        loop.remove_handler(b)
        loop.close()


# -- regular files: kqueue follows poll/select (issue 9 item 5) ---------------------


@pytest.mark.parametrize("events", [READ, WRITE, READ | WRITE])
def test_empty_regular_file_is_always_ready(fake: None, tmp_path: Any, events: int) -> None:
    """Decision: unlike the kernel (READ only before the end of file), the
    poller reports a regular file ready, as poll() and select() do."""
    path = tmp_path / "empty"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDWR)
    try:
        with KqueuePoller() as poller:
            poller.register(fd, events)
            assert poller.poll(None) == [(fd, events)]  # never waits
            poller.modify(fd, ERROR)
            assert poller.poll(0) == []
            poller.unregister(fd)
            assert poller.poll(0) == []
    finally:
        os.close(fd)
