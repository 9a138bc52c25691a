"""Per-fd fallback (docs/pollers.md, "Per-fd fallback"): :class:`FallbackPoller`.

First the whole poller contract (``test_pollers.TestContract``) runs on a
FallbackPoller over every backend here, twice: with nothing fallen back
(straight delegation) and *engaged*, with a refused fd parked in the
secondary (registered, then modified to no events, so it reports nothing)
so that every contract test goes through the combined wait. Then each
refusal the issue names, on Linux: regular files under epoll, a tty under a
kqueue stand-in that refuses ttys with EINVAL as macOS does, and an fd >=
FD_SETSIZE under select. Each shows events arriving on the fallback fd and
on a primary fd in the same sequence of poll calls.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import resource
import select
import socket
import tempfile
import threading
import time
import types
import unittest
from collections.abc import Callable, Iterator
from typing import Any

import fake_kqueue as kq
import pytest
import test_pollers
from _poller_helpers import EVENT_TIMEOUT, drain, loopback_pair, poll_until
from conftest import POLLER_NAMES

from iostream import pollers
from iostream.pollers import ERROR, READ, WRITE, Poller
from iostream.pollers.fallback import FallbackPoller, default_secondaries, with_fallback
from iostream.pollers.kqueue import KqueuePoller
from iostream.pollers.poll import PollPoller
from iostream.pollers.select_ import FD_SETSIZE_POSIX, SelectPoller

Pair = tuple[socket.socket, socket.socket]

HAVE_EPOLL = "epoll" in pollers.available()
HAVE_POLL = "poll" in pollers.available()
needs_epoll = pytest.mark.skipif(not HAVE_EPOLL, reason="needs epoll (Linux)")
needs_poll = pytest.mark.skipif(not HAVE_POLL, reason="needs poll")
needs_pty = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs os.openpty")


# -- a kqueue that refuses ttys, as macOS's does ------------------------------------


class _TtyRefusingQueue(kq.kqueue):
    """The kqueue stand-in, refusing a tty with EINVAL as macOS's kqueue does.

    Why macOS does: the tty driver has no kqueue filter (``kevent`` on
    /dev/tty and some other character devices fails with EINVAL), which is
    why prompt_toolkit/urwid-based tools install a select-based loop there.
    """

    def control(
        self, changelist: Any, max_events: int, timeout: float | None = None
    ) -> list[kq.kevent]:
        changes = list(changelist) if changelist is not None else []
        for change in changes:
            if change.flags & kq.KQ_EV_ADD and _isatty(change.ident):
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return super().control(changes, max_events, timeout)


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


_TTY_REFUSING_SELECT = types.SimpleNamespace(
    **{name: getattr(kq, name) for name in dir(kq) if name.startswith("KQ_")},
    kevent=kq.kevent,
    kqueue=_TtyRefusingQueue,
)


class TtyRefusingKqueuePoller(KqueuePoller):
    """KqueuePoller over a stand-in kqueue that refuses ttys (macOS)."""

    _select = _TTY_REFUSING_SELECT


class _PollableTtyRefusingQueue(_TtyRefusingQueue):
    """...with, as a real kqueue has, an fd that is readable while events are pending.

    (FreeBSD and XNU implement poll/select on a kqueue descriptor.)
    Modelled with an epoll set kept in step with the notes after every
    ``control``: EVFILT_READ as EPOLLIN|EPOLLRDHUP (EPOLLRDHUP alone for the
    NOTE_LOWAT note that watches for errors only), EVFILT_WRITE as EPOLLOUT.
    Not modelled: EV_CLEAR (a retrieved event still rings; the fallback
    copes with a lying doorbell, see the test of that).
    """

    def __init__(self) -> None:
        super().__init__()
        self._ring = select.epoll()
        #: fd -> (mask, file) as registered in the ring.
        self._ring_fds: dict[int, tuple[int, tuple[int, int]]] = {}

    def fileno(self) -> int:
        """The fd that select()/poll() see readable while events are pending."""
        return self._ring.fileno()

    def close(self) -> None:
        """Close the queue and its ring."""
        super().close()
        self._ring.close()

    def control(
        self, changelist: Any, max_events: int, timeout: float | None = None
    ) -> list[kq.kevent]:
        try:
            return super().control(changelist, max_events, timeout)
        finally:
            if not self.closed:
                self._sync_ring()

    def _sync_ring(self) -> None:
        want: dict[int, tuple[int, tuple[int, int]]] = {}
        for (fd, flt), note in self._notes.items():
            if not note.enabled:
                continue
            if flt == kq.KQ_FILTER_READ:
                lowat = note.fflags & kq.KQ_NOTE_LOWAT
                bit = select.EPOLLRDHUP if lowat else select.EPOLLIN | select.EPOLLRDHUP
            else:
                bit = select.EPOLLOUT
            mask = want.get(fd, (0, note.file))[0]
            want[fd] = (mask | bit, note.file)
        rebuild = False
        for fd, entry in list(self._ring_fds.items()):
            if want.get(fd) != entry:
                del self._ring_fds[fd]
                try:
                    self._ring.unregister(fd)
                except OSError:
                    # Closed meanwhile. kqueue drops a closed fd's notes, but
                    # epoll keeps the entry while a dup of the file lives:
                    # only a new epoll set is rid of it.
                    rebuild = True
        if rebuild:
            self._ring.close()
            self._ring = select.epoll()
            self._ring_fds.clear()
        for fd, entry in want.items():
            if fd not in self._ring_fds:
                try:
                    self._ring.register(fd, entry[0])
                except OSError:
                    continue
                self._ring_fds[fd] = entry


class PollableTtyRefusingKqueuePoller(KqueuePoller):
    """KqueuePoller over the tty-refusing stand-in whose queue has an fd (as macOS's)."""

    _select = types.SimpleNamespace(
        **{name: value for name, value in vars(_TTY_REFUSING_SELECT).items() if name != "kqueue"},
        kqueue=_PollableTtyRefusingQueue,
    )


# -- helpers -------------------------------------------------------------------------


@pytest.fixture
def pair() -> Iterator[Pair]:
    """A connected loopback pair, closed afterwards."""
    a, b = loopback_pair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture(autouse=True)
def _restore_fd_limit() -> Iterator[None]:
    """Put RLIMIT_NOFILE back after a test that raised it (``_high_fd`` may)."""
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield
    if resource.getrlimit(resource.RLIMIT_NOFILE) != limits:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def _high_fd(fd: int) -> int:
    """A dup of *fd* numbered >= FD_SETSIZE (skips if the fd limit is too low)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < FD_SETSIZE_POSIX + 200:
        want = FD_SETSIZE_POSIX + 200
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for an fd >= 1024")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    for high in range(FD_SETSIZE_POSIX + 100, FD_SETSIZE_POSIX + 200):
        try:
            os.fstat(high)
        except OSError:
            os.dup2(fd, high)
            return high
    pytest.skip("no free fd between 1124 and 1224")


def _refused_fd(name: str, keep: list[int]) -> int:
    """An open fd that the *name* primary refuses; closed by the caller via *keep*."""
    if name == "epoll":
        fd = os.open(os.devnull, os.O_RDWR)  # a character device with no poll: EPERM
    elif name == "select":
        low = os.open(os.devnull, os.O_RDWR)
        try:
            fd = _high_fd(low)
        finally:
            os.close(low)
    elif name == "kqueue":
        if not hasattr(os, "openpty"):
            pytest.skip("needs a pty")
        master, fd = os.openpty()
        keep.append(master)
    else:
        pytest.skip(f"{name} refuses no fd on this OS")
    keep.append(fd)
    return fd


# -- the contract, through the wrapper ------------------------------------------------


#: The backends that refuse some fd on this OS, so that the fallback can be engaged.
_REFUSING = ("epoll", "select")

#: (poller, mode) for the contract: every poller plain; engaged where it refuses something.
_CONTRACT_CASES = [(name, "plain") for name in POLLER_NAMES] + [
    (name, "engaged") for name in POLLER_NAMES if name in _REFUSING
]


class _FallbackContract(test_pollers.TestContract):
    """The poller contract on FallbackPoller; a subclass provides ``mode``.

    Plain: nothing fell back. Engaged: a refused fd sits in the secondary.
    """

    def primary_class(self, name: str) -> type[Poller]:
        """The backend wrapped for *name*."""
        return pollers.BACKENDS[name]

    #: The secondaries to use (None: the default).
    secondaries: list[type[Poller]] | None = None

    #: How the engaged wait combines (FallbackPoller.wait_mode), by primary name.
    engaged_wait = {"epoll": "doorbell", "select": "mirror", "kqueue": "mirror"}

    @pytest.fixture
    def make(self, name: str, mode: str) -> Iterator[Callable[[], Poller]]:
        """Makes a FallbackPoller over the backend, engaged in ``engaged`` mode."""
        keep: list[int] = []
        cls = self.primary_class(name)

        def make_one() -> Poller:
            poller = FallbackPoller(cls(), secondaries=self.secondaries)
            assert poller.wait_mode == "direct"
            if mode == "engaged":
                fd = _refused_fd(name, keep)
                poller.register(fd, READ)
                poller.modify(fd, 0)  # parked: reports nothing, engages the wait
                assert list(poller.fallbacks) == [fd]
                assert poller.secondary is not None
                assert poller.wait_mode == self.engaged_wait[name]
            return poller

        try:
            yield make_one
        finally:
            for fd in keep:
                os.close(fd)


@pytest.mark.parametrize(("poller_name", "mode"), _CONTRACT_CASES)
class TestFallbackContract(_FallbackContract):
    """The contract through FallbackPoller over each backend here."""

    def test_high_fd(self, poller: Poller, pair: Pair, name: str) -> None:
        """Through the wrapper an fd >= 1024 works on every backend, select included."""
        a, b = pair
        high = _high_fd(b.fileno())
        try:
            poller.register(a, WRITE)
            poller.register(high, READ)
            a.send(b"x")
            events, _ = poll_until(poller, high, READ)
            assert events == READ
            assert isinstance(poller, FallbackPoller)
            assert (high in poller.fallbacks) == (name == "select")
            poller.unregister(high)
            assert poller.poll(0) == [(a.fileno(), WRITE)]
        finally:
            os.close(high)


@needs_pty
@needs_poll
class TestTtyRefusingKqueueContract(_FallbackContract):
    """The contract on FallbackPoller over the kqueue stand-in that refuses ttys."""

    @pytest.fixture(params=["plain", "engaged"])
    def mode(self, request: pytest.FixtureRequest) -> str:
        """Plain, or engaged with a pty parked in the secondary."""
        value: str = request.param
        return value

    @pytest.fixture
    def name(self) -> str:
        """The backend's name."""
        return "kqueue"

    def primary_class(self, name: str) -> type[Poller]:
        """The tty-refusing kqueue stand-in."""
        return TtyRefusingKqueuePoller

    def socket_error(self, sock: socket.socket) -> int:
        """The stand-in read (and so cleared) SO_ERROR: it remembers it."""
        return kq.socket_error(sock.fileno())

    def test_high_fd(self, poller: Poller, pair: Pair, name: str) -> None:
        """kqueue takes a high fd itself (nothing falls back)."""
        a, b = pair
        high = _high_fd(b.fileno())
        try:
            poller.register(high, READ)
            a.send(b"x")
            events, _ = poll_until(poller, high, READ)
            assert events == READ
            assert isinstance(poller, FallbackPoller)
            assert high not in poller.fallbacks
        finally:
            poller.unregister(high)
            os.close(high)


@needs_pty
@needs_epoll
class TestMacosShapedKqueueContract(TestTtyRefusingKqueueContract):
    """As on macOS: kqueue (with a pollable queue fd) refusing ttys, select as the secondary."""

    secondaries = [SelectPoller]
    engaged_wait = {"kqueue": "doorbell"}

    def primary_class(self, name: str) -> type[Poller]:
        """The tty-refusing kqueue stand-in whose queue has an fd."""
        return PollableTtyRefusingKqueuePoller


def test_the_stand_in_refuses_ttys_only(pair: Pair) -> None:
    """The stand-in itself: EINVAL for a pty, a socket still accepted."""
    if not hasattr(os, "openpty"):
        pytest.skip("needs a pty")
    master, slave = os.openpty()
    try:
        with TtyRefusingKqueuePoller() as poller:
            with pytest.raises(OSError) as info:
                poller.register(slave, READ)
            assert info.value.errno == errno.EINVAL
            poller.register(pair[1], READ)
    finally:
        os.close(master)
        os.close(slave)


# -- regular files under epoll ----------------------------------------------------------


@needs_epoll
def test_regular_file_under_epoll_is_always_ready(pair: Pair) -> None:
    a, b = pair
    with tempfile.TemporaryFile() as file, FallbackPoller(pollers.EpollPoller()) as poller:
        assert poller.name == "epoll"
        poller.register(file, READ | WRITE)
        poller.register(b, READ)
        reason = poller.fallbacks[file.fileno()]
        assert "epoll refused it" in reason and "regular file" in reason
        assert poller.secondary is None  # a file needs no second backend
        # Always ready: a long timeout returns at once.
        start = time.monotonic()
        assert poller.poll(EVENT_TIMEOUT) == [(file.fileno(), READ | WRITE)]
        assert time.monotonic() - start < EVENT_TIMEOUT / 2
        # The socket's event arrives alongside, in the same call.
        a.send(b"x")
        events, results = poll_until(poller, b.fileno(), READ)
        assert events == READ
        assert (file.fileno(), READ | WRITE) in results[-1]
        # Exactly what was asked: READ only, then nothing (and then it waits).
        poller.modify(file, READ)
        assert dict(poller.poll(0)) == {file.fileno(): READ, b.fileno(): READ}
        drain(b)
        poller.modify(file.fileno(), 0)
        start = time.monotonic()
        assert poller.poll(0.2) == []
        assert time.monotonic() - start >= 0.15
        poller.unregister(file)
        assert poller.fallbacks == {}


@needs_epoll
def test_directory_under_epoll_is_always_ready() -> None:
    with tempfile.TemporaryDirectory() as path, FallbackPoller(pollers.EpollPoller()) as poller:
        fd = os.open(path, os.O_RDONLY)
        try:
            poller.register(fd, READ)
            assert poller.poll(0) == [(fd, READ)]
        finally:
            poller.unregister(fd)
            os.close(fd)


@needs_epoll
@needs_poll
def test_device_epoll_refuses_goes_to_poll_and_the_wait_hears_both(pair: Pair) -> None:
    """/dev/null (EPERM under epoll) is watched by poll; epoll's fds still wake the wait."""
    a, b = pair
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with FallbackPoller(pollers.EpollPoller()) as poller:
            poller.register(b, READ)
            poller.register(null, WRITE)
            assert "watched by poll" in poller.fallbacks[null]
            assert isinstance(poller.secondary, PollPoller)
            assert poller.poll(0) == [(null, WRITE)]  # poll() says /dev/null is writable
            poller.modify(null, 0)
            # Blocking in the secondary, woken by epoll's fd when b gets data.
            start = time.monotonic()
            assert poller.poll(0.1) == []
            assert time.monotonic() - start >= 0.08
            a.send(b"x")
            assert poller.poll(EVENT_TIMEOUT) == [(b.fileno(), READ)]
            poller.modify(null, READ)
            assert dict(poller.poll(0)) == {b.fileno(): READ, null: READ}
            poller.unregister(null)
            assert poller.secondary is None and poller.fallbacks == {}
            assert poller.poll(0) == [(b.fileno(), READ)]
    finally:
        os.close(null)


# -- a tty under kqueue (the stand-in refuses it as macOS does) ----------------------------


@needs_pty
@pytest.mark.parametrize("secondary", ["poll", "select"])
@pytest.mark.parametrize("queue_fd", [False, True], ids=["mirror", "doorbell"])
def test_tty_refused_by_kqueue_falls_back(pair: Pair, secondary: str, queue_fd: bool) -> None:
    """READ, WRITE and hang-up on the pty, and READ on a kqueue socket, in one sequence.

    Twice: over the stand-in queue (no fd: the secondary mirrors kqueue's
    fds) and over one with an fd, as macOS's has (the secondary watches it).
    """
    if secondary not in pollers.available():
        pytest.skip(f"{secondary} is not available here")
    if queue_fd and not HAVE_EPOLL:
        pytest.skip("the pollable stand-in queue needs epoll")
    a, b = pair
    master, slave = os.openpty()
    master_open = True
    try:
        primary = PollableTtyRefusingKqueuePoller() if queue_fd else TtyRefusingKqueuePoller()
        secondaries = [pollers.BACKENDS[secondary]]
        with FallbackPoller(primary, secondaries=secondaries) as poller:
            assert poller.name == "kqueue"
            poller.register(b, READ)
            poller.register(slave, READ | WRITE)
            reason = poller.fallbacks[slave]
            assert "kqueue refused it" in reason and "Invalid argument" in reason
            assert f"watched by {secondary}" in reason
            assert poller.wait_mode == ("doorbell" if queue_fd else "mirror")
            # WRITE on the tty at once; READ is not there yet.
            events, _ = poll_until(poller, slave, WRITE)
            assert events == WRITE
            poller.modify(slave, READ)
            assert poller.poll(0) == []
            # Both wake the same wait: the socket (kqueue), then the tty (fallback).
            a.send(b"sock")
            events, _ = poll_until(poller, b.fileno(), READ)
            assert events == READ
            assert drain(b) == b"sock"
            os.write(master, b"line\n")
            events, results = poll_until(poller, slave, READ)
            assert events == READ
            assert all(fd != b.fileno() for result in results for fd, _ in result)
            assert os.read(slave, 100) == b"line\n"
            # Hang-up: the terminal's master side goes away.
            os.close(master)
            master_open = False
            events, _ = poll_until(poller, slave, READ | ERROR)
            if secondary == "poll":
                assert events & ERROR  # POLLHUP; select sees a hang-up as READ only
            # The kqueue socket still works next to the hung-up tty.
            assert poller.wait_mode == ("doorbell" if queue_fd else "mirror")  # kept throughout
            poller.unregister(slave)
            a.send(b"more")
            events, _ = poll_until(poller, b.fileno(), READ)
            assert events == READ
            assert poller.secondary is None and poller.wait_mode == "direct"
    finally:
        if master_open:
            os.close(master)
        os.close(slave)


@needs_pty
def test_default_secondary_is_poll_where_available_else_select() -> None:
    assert [cls.name for cls in default_secondaries("kqueue")] == (
        ["poll", "select"] if HAVE_POLL else ["select"]
    )
    assert [cls.name for cls in default_secondaries("select")] == (["poll"] if HAVE_POLL else [])
    assert [cls.name for cls in default_secondaries("poll")] == ["select"]


# -- select's FD_SETSIZE --------------------------------------------------------------------


@needs_poll
def test_select_high_fd_goes_to_poll(pair: Pair) -> None:
    """An fd >= FD_SETSIZE is watched by poll; select's own fds keep select's semantics."""
    a, b = pair
    c, d = loopback_pair()
    high = _high_fd(d.fileno())
    d.close()
    try:
        with FallbackPoller(SelectPoller()) as poller:
            poller.register(b, READ)
            poller.register(high, READ | WRITE)
            reason = poller.fallbacks[high]
            assert "FD_SETSIZE" in reason and "watched by poll" in reason
            events, _ = poll_until(poller, high, WRITE)
            assert events == WRITE
            poller.modify(high, READ)
            assert poller.poll(0) == []
            a.send(b"low")
            assert poller.poll(EVENT_TIMEOUT) == [(b.fileno(), READ)]
            drain(b)
            c.send(b"high")
            assert poller.poll(EVENT_TIMEOUT) == [(high, READ)]
            assert os.read(high, 100) == b"high"
            # Hang-ups: select reports b's as READ; poll reports the high fd's.
            a.close()
            c.close()
            seen: dict[int, int] = {}
            deadline = time.monotonic() + EVENT_TIMEOUT
            while len(seen) < 2 and time.monotonic() < deadline:
                for fd, events in poller.poll(1.0):
                    seen[fd] = seen.get(fd, 0) | events
            assert seen.keys() == {b.fileno(), high}
            assert seen[b.fileno()] == READ
            assert seen[high] & (READ | ERROR)
            assert b.recv(10) == b""
            assert os.read(high, 10) == b""
            poller.unregister(high)
    finally:
        os.close(high)


@needs_poll
def test_select_primary_write_only_hangup_does_not_spin() -> None:
    """A mirror poll() rings for but select never confirms is muted, not a busy loop.

    The read end of a pipe watched for WRITE: when the writer goes, poll()
    reports POLLHUP, which select() never puts in its write set.
    """
    r, w = os.pipe()
    null = os.open(os.devnull, os.O_RDWR)
    high = _high_fd(null)
    os.close(null)
    try:
        with FallbackPoller(SelectPoller()) as poller:
            poller.register(high, READ)
            poller.modify(high, 0)  # engaged, silent
            poller.register(r, WRITE)
            os.close(w)
            w = -1
            # The first wait may be cut short by the ring that finds the mute;
            # from then on the hang-up nobody asked for wakes nothing.
            assert poller.poll(0.2) == []
            for _ in range(2):
                start = time.monotonic()
                assert poller.poll(0.2) == []
                assert time.monotonic() - start >= 0.15  # waited: no spinning
            # Modifying the fd unmutes it: READ is reported (hang-up = READ for select).
            poller.modify(r, READ)
            events, _ = poll_until(poller, r, READ)
            assert events == READ
            poller.unregister(r)
            poller.unregister(high)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
        os.close(high)


# -- the contract for fallback fds themselves -------------------------------------------------


@needs_epoll
def test_fallback_fd_table_rules(tmp_path: Any) -> None:
    """FileExistsError, FileNotFoundError, identity, unregister after close: for fallback fds."""
    with FallbackPoller(pollers.EpollPoller()) as poller:
        file = open(tmp_path / "f", "wb")  # noqa: SIM115 - closed below, while registered
        fd = file.fileno()
        poller.register(file, READ)
        with pytest.raises(FileExistsError):
            poller.register(fd, READ)
        with pytest.raises(FileExistsError):
            poller.register(file, WRITE)
        with pytest.raises(ValueError, match="events"):
            poller.modify(file, 0x100)
        poller.modify(fd, WRITE)  # the int names the same fd
        assert poller.poll(0) == [(fd, WRITE)]
        file.close()
        poller.unregister(file)  # found by identity after close
        with pytest.raises(FileNotFoundError):
            poller.unregister(file)
        with pytest.raises(FileNotFoundError):
            poller.modify(fd, READ)
        assert poller.fallbacks == {}
    with pytest.raises(ValueError):
        poller.register(0, READ)


@needs_epoll
def test_nothing_can_watch_it_keeps_the_primarys_reason() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with FallbackPoller(pollers.EpollPoller(), secondaries=[]) as poller:
            with pytest.raises(ValueError, match=r"epoll refused it.*no other backend"):
                poller.register(null, READ)
            assert poller.fallbacks == {}
            # The primary's refusal stands: the wrapper still works for the rest.
            assert poller.poll(0) == []
    finally:
        os.close(null)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="primary"):
        FallbackPoller("epoll")  # type: ignore[arg-type]
    with SelectPoller() as inner, FallbackPoller(inner) as outer:
        with pytest.raises(TypeError, match="already a FallbackPoller"):
            FallbackPoller(outer)
        with pytest.raises(TypeError, match="secondaries"):
            FallbackPoller(inner, secondaries=[int])  # type: ignore[list-item]


class _CountingPoller(SelectPoller):
    """SelectPoller that counts its poll calls (to show straight delegation)."""

    calls = 0

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        self.calls += 1
        return super().poll(timeout)


def test_no_fallback_means_straight_delegation(pair: Pair) -> None:
    a, b = pair
    primary = _CountingPoller()
    with FallbackPoller(primary) as poller:
        poller.register(b, READ)
        a.send(b"x")
        assert poller.poll(EVENT_TIMEOUT) == [(b.fileno(), READ)]
        assert primary.calls == 1
        assert poller.secondary is None
        assert len(poller) == 1
    assert "closed" in repr(poller)


def test_closed_wrapper_refuses_everything(pair: Pair) -> None:
    poller = FallbackPoller(SelectPoller())
    poller.close()
    poller.close()
    with pytest.raises(ValueError):
        poller.register(pair[0], READ)
    with pytest.raises(ValueError):
        poller.poll(0)


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="needs epoll")
def test_epoll_ghost_rebuild_moves_the_doorbell(pair: Pair) -> None:
    """epoll rebuilds its kernel object after a ghost: the secondary follows the new fd."""
    a, b = pair
    null = os.open(os.devnull, os.O_RDWR)
    c, d = loopback_pair()
    other = os.dup(d.fileno())
    try:
        with FallbackPoller(pollers.EpollPoller()) as poller:
            poller.register(null, READ)
            poller.modify(null, 0)
            poller.register(d.fileno(), READ)
            poller.register(b, READ)
            before = poller.primary._epoll.fileno()  # type: ignore[attr-defined]
            d_fd = d.fileno()
            d.close()  # the file lives on in `other`: a ghost entry
            poller.unregister(d_fd)
            c.send(b"x")  # the ghost rings; epoll rebuilds
            assert poller.poll(0.5) == []
            # The new epoll took the lowest free number, d's old one.
            after = poller.primary._epoll.fileno()  # type: ignore[attr-defined]
            assert after != before
            assert poller.poll(0.1) == []
            # Blocked in the secondary: only the new epoll fd can wake it for b.
            timer = threading.Timer(0.05, a.send, (b"y",))
            timer.start()
            try:
                start = time.monotonic()
                assert poller.poll(EVENT_TIMEOUT) == [(b.fileno(), READ)]
                assert time.monotonic() - start < EVENT_TIMEOUT / 2
            finally:
                timer.join()
    finally:
        os.close(other)
        os.close(null)
        c.close()


class _WriteFilterRefusingQueue(kq.kqueue):
    """The kqueue stand-in, refusing EVFILT_WRITE (only) on a tty with EINVAL.

    A device whose driver has a read filter and no write filter: accepted
    at register(READ), refused at the modify() that first asks for WRITE.
    """

    def control(
        self, changelist: Any, max_events: int, timeout: float | None = None
    ) -> list[kq.kevent]:
        changes = list(changelist) if changelist is not None else []
        for change in changes:
            if (
                change.flags & kq.KQ_EV_ADD
                and change.filter == kq.KQ_FILTER_WRITE
                and _isatty(change.ident)
            ):
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return super().control(changes, max_events, timeout)


class WriteFilterRefusingKqueuePoller(KqueuePoller):
    """KqueuePoller over a stand-in whose ttys have no EVFILT_WRITE."""

    _select = types.SimpleNamespace(
        **{name: value for name, value in vars(_TTY_REFUSING_SELECT).items() if name != "kqueue"},
        kqueue=_WriteFilterRefusingQueue,
    )


@needs_pty
@needs_poll
def test_fd_refused_at_modify_moves_out(pair: Pair) -> None:
    """Accepted for READ, refused (EINVAL) at modify(READ|WRITE): moves to poll."""
    a, b = pair
    master, slave = os.openpty()
    try:
        with FallbackPoller(WriteFilterRefusingKqueuePoller()) as poller:
            poller.register(b, READ)
            poller.register(slave, READ)  # the read filter: accepted
            assert poller.fallbacks == {}
            poller.modify(slave, READ | WRITE)  # EINVAL: moves to poll
            assert "watched by poll" in poller.fallbacks[slave]
            with pytest.raises(FileExistsError):
                poller.register(slave, READ)
            events, _ = poll_until(poller, slave, WRITE)
            assert events == WRITE
            poller.modify(slave, READ)
            os.write(master, b"x\n")  # a line: the tty is in canonical mode
            a.send(b"y")
            seen: dict[int, int] = {}
            deadline = time.monotonic() + EVENT_TIMEOUT
            while len(seen) < 2 and time.monotonic() < deadline:
                seen.update(poller.poll(1.0))
            assert seen == {slave: READ, b.fileno(): READ}
            poller.unregister(slave)
            with pytest.raises(FileNotFoundError):
                poller.unregister(slave)
    finally:
        os.close(master)
        os.close(slave)


@needs_pty
def test_modify_refused_everywhere_leaves_the_fd_on_the_primary() -> None:
    master, slave = os.openpty()
    try:
        with FallbackPoller(WriteFilterRefusingKqueuePoller(), secondaries=[]) as poller:
            poller.register(slave, READ)
            with pytest.raises(ValueError, match="kqueue refused it"):
                poller.modify(slave, READ | WRITE)
            assert poller.fallbacks == {}
            with pytest.raises(FileExistsError):  # still on the primary, for READ
                poller.register(slave, READ)
            os.write(master, b"x\n")
            events, _ = poll_until(poller, slave, READ)
            assert events == READ
            poller.unregister(slave)
    finally:
        os.close(master)
        os.close(slave)


# -- CPython's selector tests, through the fallback -------------------------------------------


def _cpython_selector_cases() -> dict[str, type]:
    """CPython's ``BaseSelectorTestCase`` on PollerSelector(FallbackPoller(each poller)).

    And ``ScalableSelectorMixIn`` on select through the fallback: more fds
    than FD_SETSIZE, which select alone refuses (CPython's SelectSelector
    does not get that test) and the fallback moves to poll. Skipped where
    the interpreter has no ``test`` package or iostream.asyncio is missing.
    """
    try:
        test_selectors: Any = importlib.import_module("test.test_selectors")
        from iostream.asyncio import PollerSelector
    except ImportError:
        return {}

    cases: dict[str, type] = {}
    for name in POLLER_NAMES:
        backend = pollers.BACKENDS[name]

        def selector_class(backend: type[Poller] = backend) -> type:
            class Bound(PollerSelector):
                def __init__(self) -> None:
                    super().__init__(FallbackPoller(backend()))

            Bound.__name__ = Bound.__qualname__ = f"PollerSelector_fallback_{backend.name}"
            return Bound

        bases: list[type] = [test_selectors.BaseSelectorTestCase]
        if name == "select" and HAVE_POLL:
            bases.append(test_selectors.ScalableSelectorMixIn)
        bases.append(unittest.TestCase)
        cls_name = f"TestCPythonSelectorsThroughFallback_{name}"
        cases[cls_name] = type(cls_name, tuple(bases), {"SELECTOR": selector_class()})
    return cases


globals().update(_cpython_selector_cases())


# -- IOLoop.add_handler through the fallback -------------------------------------------------


@needs_epoll
@needs_poll
def test_ioloop_handlers_on_fallback_and_primary_fds(pair: Pair) -> None:
    """An IOLoop on FallbackPoller(epoll) calls the handlers of a file, a device and a socket."""
    from iostream import IOLoop

    a, b = pair
    null = os.open(os.devnull, os.O_RDWR)
    calls: dict[str, int] = {}
    loop = IOLoop(FallbackPoller(pollers.EpollPoller()))
    try:
        with tempfile.TemporaryFile() as file:

            def on(label: str, fd: int) -> Callable[[int, int], None]:
                def handler(got_fd: int, events: int) -> None:
                    assert got_fd == fd
                    calls[label] = calls.get(label, 0) | events
                    loop.remove_handler(fd)
                    if len(calls) == 3:
                        loop.stop()

                return handler

            loop.add_handler(file.fileno(), on("file", file.fileno()), READ)
            loop.add_handler(null, on("devnull", null), WRITE)
            loop.add_handler(b.fileno(), on("socket", b.fileno()), READ)
            a.send(b"x")
            loop.call_later(EVENT_TIMEOUT, loop.stop)
            loop.start()
        assert calls == {"file": READ, "devnull": WRITE, "socket": READ}
        assert isinstance(loop.poller, FallbackPoller)
        assert loop.poller.fallbacks == {}  # each handler removed its fd
    finally:
        loop.close()
        os.close(null)


def test_with_fallback_wraps_once() -> None:
    inner = SelectPoller()
    wrapped = with_fallback(inner)
    try:
        assert isinstance(wrapped, FallbackPoller)
        assert wrapped.primary is inner
        assert with_fallback(wrapped) is wrapped
        with pytest.raises(TypeError, match="primary"):
            with_fallback("select")  # type: ignore[arg-type]
    finally:
        wrapped.close()
    assert inner._closed  # the wrapper owns its primary


# -- a differential check of the combined wait ------------------------------------------------


@needs_poll
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("primary", ["select", "epoll"])
def test_random_operations_match_a_plain_poll_poller(seed: int, primary: str) -> None:
    """The combined wait reports what poll() alone reports.

    select: some fds are dup'ed above FD_SETSIZE (mirror path). epoll: a
    /dev/null parked in the secondary (doorbell path). Random
    register/modify/unregister/send/drain steps (seeded, bounded) on socket
    pairs; after each step both pollers are asked with timeout 0.
    Level-triggered readiness, nothing consumed in between: the answers
    must be equal.
    """
    import random

    if primary not in pollers.available():
        pytest.skip(f"needs {primary}")
    rng = random.Random(seed)
    pairs = [loopback_pair() for _ in range(12)]
    highs: list[int] = []
    fds: list[int] = []
    peers: dict[int, socket.socket] = {}
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for i, (a, b) in enumerate(pairs):
            fd = b.fileno()
            if primary == "select" and i % 3 == 0:
                fd = _high_fd(b.fileno())
                highs.append(fd)
            fds.append(fd)
            peers[fd] = a
        with FallbackPoller(pollers.BACKENDS[primary]()) as poller, PollPoller() as reference:
            if primary == "epoll":
                poller.register(null, READ)
                poller.modify(null, 0)
                highs.append(null)
            registered: dict[int, int] = {}
            for _ in range(300):
                fd = rng.choice(fds)
                step = rng.choice(["register", "modify", "unregister", "send", "drain"])
                events = rng.choice([0, READ, WRITE, READ | WRITE])
                if step == "register" and fd not in registered:
                    poller.register(fd, events)
                    reference.register(fd, events)
                    registered[fd] = events
                elif step == "modify" and fd in registered:
                    poller.modify(fd, events)
                    reference.modify(fd, events)
                    registered[fd] = events
                elif step == "unregister" and fd in registered:
                    poller.unregister(fd)
                    reference.unregister(fd)
                    del registered[fd]
                elif step == "send":
                    peers[fd].send(b"x")
                elif step == "drain":
                    while True:
                        try:
                            if not os.read(fd, 4096):
                                break
                        except BlockingIOError:
                            break
                want = dict(reference.poll(0))
                got = poller.poll(0)
                assert len(got) == len({fd for fd, _ in got})
                assert dict(got) == want, (step, fd, events, registered)
                if primary == "select":
                    assert set(poller.fallbacks) == {fd for fd in highs if fd in registered}
                else:
                    assert set(poller.fallbacks) == {null}
    finally:
        for fd in highs:
            if fd != null:
                os.close(fd)
        os.close(null)
        for a, b in pairs:
            a.close()
            b.close()


# -- the doorbell a kernel fd gives, and when it lies -------------------------------------------


class _RingingEpoll:
    """An epoll object whose fileno() is a pipe that is always readable."""

    def __init__(self, epoll: Any, fd: int) -> None:
        self._epoll = epoll
        self._fd = fd

    def __getattr__(self, name: str) -> Any:
        return getattr(self._epoll, name)

    def fileno(self) -> int:
        return self._fd


class AlwaysRingingEpollPoller(pollers.EpollPoller):
    """EpollPoller whose kernel fd (as the fallback sees it) rings with nothing behind it."""

    def _kernel_open(self) -> None:
        super()._kernel_open()
        self._ring_r, self._ring_w = os.pipe()
        os.write(self._ring_w, b"!")
        self._epoll = _RingingEpoll(self._epoll, self._ring_r)

    def _kernel_close(self) -> None:
        super()._kernel_close()
        os.close(self._ring_r)
        os.close(self._ring_w)


@needs_epoll
@needs_poll
def test_a_doorbell_that_rings_for_nothing_is_dropped_for_the_mirror(pair: Pair) -> None:
    a, b = pair
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with FallbackPoller(AlwaysRingingEpollPoller()) as poller:
            poller.register(b, READ)
            poller.register(null, READ)
            poller.modify(null, 0)
            # The first waits return at once (the lie); within a bounded
            # number of them the doorbell is dropped and the wait waits.
            assert poller.wait_mode == "doorbell"
            for _ in range(20):
                assert poller.poll(0.05) == []
                if poller.wait_mode == "mirror":
                    break
            else:
                raise AssertionError("the lying doorbell was kept")
            start = time.monotonic()
            assert poller.poll(0.2) == []
            assert time.monotonic() - start >= 0.15
            # The primary's fds are still heard, now through the mirror.
            timer = threading.Timer(0.05, a.send, (b"x",))
            timer.start()
            try:
                assert poller.poll(EVENT_TIMEOUT) == [(b.fileno(), READ)]
            finally:
                timer.join()
    finally:
        os.close(null)


@needs_pty
@needs_poll
def test_number_reused_by_a_refused_fd_before_the_next_wait() -> None:
    """A primary fd unregistered and closed; its number, reused by a tty, falls back at once."""
    master, slave = os.openpty()
    c, d = loopback_pair()
    try:
        with FallbackPoller(TtyRefusingKqueuePoller()) as poller:
            poller.register(slave, READ)  # refused: mirror mode
            number = d.fileno()
            poller.register(d, READ)
            assert poller.poll(0) == []  # the mirror now holds d's number
            poller.unregister(d)
            d.close()
            tty = os.dup2(slave, number)  # a tty under the freed number
            try:
                poller.register(tty, WRITE)  # refused by kqueue, watched by poll
                assert tty in poller.fallbacks
                events, _ = poll_until(poller, tty, WRITE)
                assert events == WRITE
                poller.unregister(tty)
            finally:
                os.close(tty)
            poller.unregister(slave)
    finally:
        os.close(master)
        os.close(slave)
        c.close()


@needs_epoll
def test_a_fallback_is_logged_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="iostream")
    with tempfile.TemporaryFile() as file, FallbackPoller(pollers.EpollPoller()) as poller:
        poller.register(file, READ)
        fd = file.fileno()
    [record] = [r for r in caplog.records if r.name == "iostream.pollers"]
    assert record.levelno == logging.DEBUG
    assert f"fd {fd} falls back: epoll refused it" in record.getMessage()


@needs_poll
def test_fileno_of_finds_fallback_objects_by_identity(pair: Pair) -> None:
    """fileno_of (the IOLoop's object lookup) finds a fallback socket closed while registered."""
    _, b = pair
    c, d = loopback_pair()
    high = _high_fd(d.fileno())
    try:
        with FallbackPoller(SelectPoller()) as poller:
            poller.register(b, READ)
            wrapper = socket.socket(fileno=high)  # a socket object on the high fd
            poller.register(wrapper, READ)
            assert poller.fileno_of(wrapper) == high
            assert poller.fileno_of(high) == high
            assert poller.fileno_of(b) == b.fileno()
            wrapper.close()  # closed while registered: fileno() is -1 now
            assert poller.fileno_of(wrapper) == high
            poller.unregister(wrapper)
            with pytest.raises(FileNotFoundError):
                poller.fileno_of(wrapper)
            with pytest.raises(FileNotFoundError):
                poller.fileno_of(high)
    finally:
        c.close()
        d.close()


@needs_poll
@pytest.mark.parametrize("primary", ["select", "epoll"])
def test_neither_side_starves_the_other(pair: Pair, primary: str) -> None:
    """A primary fd and a fallback fd, both ready for ever: every poll reports both."""
    if primary not in pollers.available():
        pytest.skip(f"needs {primary}")
    a, b = pair
    a.send(b"unread")  # b stays readable: never drained
    null = os.open(os.devnull, os.O_RDWR)
    refused = _high_fd(null) if primary == "select" else null
    try:
        with FallbackPoller(pollers.BACKENDS[primary]()) as poller:
            poller.register(b, READ)
            poller.register(refused, READ)  # /dev/null: always readable
            assert refused in poller.fallbacks
            for _ in range(50):
                assert dict(poller.poll(EVENT_TIMEOUT)) == {b.fileno(): READ, refused: READ}
    finally:
        if refused != null:
            os.close(refused)
        os.close(null)
