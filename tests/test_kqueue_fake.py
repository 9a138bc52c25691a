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
        poller.modify(a, WRITE | ERROR)  # ERROR adds no filter: no change at all
        poller.modify(a, 0)
        poller.unregister(a)
        r, w, add, delete = kq.KQ_FILTER_READ, kq.KQ_FILTER_WRITE, kq.KQ_EV_ADD, kq.KQ_EV_DELETE
        assert _changes(poller) == [
            [(fd, r, add)],
            [(fd, w, add)],
            [(fd, r, delete)],
            [(fd, w, delete)],
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
