"""The poller contract (docs/guarantees.md, "Pollers"), run on every poller available here.

:class:`TestContract` runs once per name of the ``poller_name`` fixture
(every backend available here, or just the one ``IOSTREAM_POLLER``
selects). ``test_kqueue_fake.py`` and ``test_select_windows.py`` run the
same class again on KqueuePoller over a kqueue stand-in and on SelectPoller
in Windows mode over a Winsock stand-in.
"""

from __future__ import annotations

import errno
import os
import resource
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from _poller_helpers import EVENT_TIMEOUT, drain, loopback_pair, poll_until, refused_connect

from iostream import pollers
from iostream.pollers import ERROR, READ, WRITE, Poller

Pair = tuple[socket.socket, socket.socket]


class TestContract:
    """What every backend must do alike. Subclasses swap the poller under test."""

    #: Does this backend see a reset / a failed connect as ERROR? (POSIX
    #: select sees only READ / WRITE, which docs/guarantees.md ("Event bits") allows.)
    @staticmethod
    def sees_errors(name: str) -> bool:
        """True if the backend reports errors (all but POSIX select)."""
        return name != "select"

    #: Can the poller be used in a forked child? (False for stand-ins of
    #: platforms that have no fork.)
    can_fork = True

    @pytest.fixture
    def name(self, poller_name: str) -> str:
        """The backend's name."""
        return poller_name

    @pytest.fixture
    def make(self, name: str) -> Callable[[], Poller]:
        """Makes a poller of the backend under test."""
        return pollers.BACKENDS[name]

    @pytest.fixture
    def poller(self, make: Callable[[], Poller]) -> Iterator[Poller]:
        """A poller of the backend under test, closed afterwards."""
        poller = make()
        try:
            yield poller
        finally:
            poller.close()

    @pytest.fixture
    def pair(self) -> Iterator[Pair]:
        """A connected loopback pair, closed afterwards."""
        a, b = loopback_pair()
        try:
            yield a, b
        finally:
            a.close()
            b.close()

    def socket_error(self, sock: socket.socket) -> int:
        """The pending error of *sock* (SO_ERROR)."""
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)

    # -- identity and the table rules ------------------------------------------

    def test_name_and_available(self, poller: Poller, name: str) -> None:
        assert poller.name == name
        assert type(poller).available()
        assert isinstance(poller, Poller)

    def test_register_twice_raises_file_exists(self, poller: Poller, pair: Pair) -> None:
        a, b = pair
        poller.register(a, READ)
        with pytest.raises(FileExistsError):
            poller.register(a, WRITE)
        with pytest.raises(FileExistsError):
            poller.register(a.fileno(), READ)
        poller.register(b.fileno(), READ)
        with pytest.raises(FileExistsError):
            poller.register(b, READ)

    def test_unknown_fd_raises_file_not_found(self, poller: Poller, pair: Pair) -> None:
        a, _ = pair
        with pytest.raises(FileNotFoundError):
            poller.modify(a, READ)
        with pytest.raises(FileNotFoundError):
            poller.unregister(a.fileno())
        poller.register(a, READ)
        poller.unregister(a)
        with pytest.raises(FileNotFoundError):
            poller.unregister(a)
        with pytest.raises(FileNotFoundError):
            poller.modify(a.fileno(), WRITE)

    def test_object_and_int_name_the_same_fd(self, poller: Poller, pair: Pair) -> None:
        a, b = pair
        poller.register(a, WRITE)
        poller.modify(a.fileno(), READ)
        poller.unregister(a.fileno())
        poller.register(b.fileno(), READ)
        poller.modify(b, WRITE)
        poller.unregister(b)
        assert poller.poll(0) == []

    @pytest.mark.parametrize("events", [0x100, 0x002, -1, READ | 0x40])
    def test_bad_event_bits_raise_value_error(
        self, poller: Poller, pair: Pair, events: int
    ) -> None:
        a, _ = pair
        with pytest.raises(ValueError, match="events"):
            poller.register(a, events)
        poller.register(a, READ)  # the refused register left nothing behind
        with pytest.raises(ValueError, match="events"):
            poller.modify(a, events)

    @pytest.mark.parametrize("events", ["r", 1.0, None, True])
    def test_non_int_events_are_refused(self, poller: Poller, pair: Pair, events: object) -> None:
        a, _ = pair
        with pytest.raises(TypeError, match="events"):
            poller.register(a, events)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="events"):
            poller.register(a, events)  # type: ignore[arg-type]

    @pytest.mark.parametrize("fd", [object(), "3", 3.0, None])
    def test_non_fd_raises_type_error(self, poller: Poller, fd: object) -> None:
        with pytest.raises(TypeError, match="fd"):
            poller.register(fd, READ)  # type: ignore[arg-type]

    def test_negative_fd_raises_value_error(self, poller: Poller) -> None:
        with pytest.raises(ValueError, match="fd"):
            poller.register(-1, READ)

    def test_error_only_registration(self, poller: Poller, pair: Pair) -> None:
        a, b = pair
        poller.register(b, ERROR)  # writable, and has data: neither was asked for
        a.send(b"x")
        assert poller.poll(0.05) == []

    # -- readiness -------------------------------------------------------------

    def test_readable(self, poller: Poller, pair: Pair) -> None:
        a, b = pair
        poller.register(b, READ)
        assert poller.poll(0) == []
        a.send(b"hello")
        events, _ = poll_until(poller, b.fileno(), READ)
        assert events == READ
        assert drain(b) == b"hello"
        assert poller.poll(0) == []

    def test_writable(self, poller: Poller, pair: Pair) -> None:
        a, _ = pair
        poller.register(a, WRITE)
        assert poller.poll(0) == [(a.fileno(), WRITE)]

    def test_one_pair_per_fd(self, poller: Poller, pair: Pair) -> None:
        a, b = pair
        b.send(b"x")
        poller.register(a, READ | WRITE)
        events, _ = poll_until(poller, a.fileno(), READ)
        assert events == READ | WRITE
        assert poller.poll(0) == [(a.fileno(), READ | WRITE)]

    def test_many_ready_fds_each_reported_once(self, poller: Poller) -> None:
        pairs = [loopback_pair() for _ in range(40)]
        try:
            for a, b in pairs:
                poller.register(b, READ)
                a.send(b"x")
            want = {b.fileno() for _, b in pairs}
            seen: set[int] = set()
            deadline = time.monotonic() + EVENT_TIMEOUT
            while seen != want and time.monotonic() < deadline:
                result = poller.poll(0.5)
                fds = [fd for fd, _ in result]
                assert len(fds) == len(set(fds))
                assert all(events == READ for _, events in result)
                assert set(fds) <= want
                seen |= set(fds)
            assert seen == want
        finally:
            for a, b in pairs:
                a.close()
                b.close()

    def test_modify_changes_interest(self, poller: Poller, pair: Pair) -> None:
        a, b = pair
        poller.register(a, READ)
        assert poller.poll(0) == []
        poller.modify(a, READ | WRITE)
        assert poller.poll(0) == [(a.fileno(), WRITE)]
        b.send(b"x")
        poll_until(poller, a.fileno(), READ)
        poller.modify(a, READ)
        assert poller.poll(0) == [(a.fileno(), READ)]
        poller.modify(a, 0)
        assert poller.poll(0) == []
        poller.modify(a, WRITE)
        assert poller.poll(0) == [(a.fileno(), WRITE)]

    def test_unregister_stops_reports(self, poller: Poller, pair: Pair) -> None:
        a, b = pair
        poller.register(a, READ | WRITE)
        poller.register(b, WRITE)
        poller.unregister(a)
        assert poller.poll(0) == [(b.fileno(), WRITE)]

    def test_peer_close_is_read_then_empty_recv(self, poller: Poller, pair: Pair) -> None:
        a, b = pair
        poller.register(b, READ)
        a.close()
        events, _ = poll_until(poller, b.fileno(), READ | ERROR)
        assert events & (READ | ERROR)
        assert b.recv(10) == b""

    def test_peer_close_with_data_pending_is_not_an_error(self, poller: Poller, pair: Pair) -> None:
        # kqueue flags EOF while data is still buffered: that must stay READ.
        a, b = pair
        poller.register(b, READ)
        a.send(b"last words")
        a.close()
        events, _ = poll_until(poller, b.fileno(), READ)
        assert events == READ
        assert b.recv(100) == b"last words"
        assert b.recv(100) == b""

    def test_peer_reset(self, poller: Poller, pair: Pair, name: str) -> None:
        a, b = pair
        poller.register(b, READ)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        a.close()
        events, _ = poll_until(poller, b.fileno(), READ | ERROR)
        if self.sees_errors(name):
            assert events & ERROR
        try:
            assert b.recv(10) == b""
        except ConnectionResetError:
            pass

    @pytest.mark.parametrize("registered", [ERROR, 0])
    def test_peer_reset_on_error_only_registration(
        self, poller: Poller, pair: Pair, name: str, registered: int
    ) -> None:
        # docs/guarantees.md, "Event bits": every poller but select reports an
        # error on an fd registered for ERROR alone or nothing; select has no
        # set to put it in, and says nothing (a stream watches READ while idle).
        a, b = pair
        poller.register(b, registered)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        a.close()
        if self.sees_errors(name):
            events, _ = poll_until(poller, b.fileno(), ERROR)
            assert events & ERROR and not events & ~ERROR, events
        else:
            assert poller.poll(0.05) == []
            poller.modify(b, READ)
            events, _ = poll_until(poller, b.fileno(), READ)
            assert events == READ

    def test_failed_connect(self, poller: Poller, name: str) -> None:
        with refused_connect() as sock:
            poller.register(sock, WRITE)
            events, _ = poll_until(poller, sock.fileno(), WRITE | ERROR)
            if self.sees_errors(name):
                assert events & ERROR, events
                assert events & ~(WRITE | ERROR) == 0
            else:
                assert events == WRITE
            assert self.socket_error(sock) == errno.ECONNREFUSED

    # -- closed fds --------------------------------------------------------------

    def test_unregister_int_after_close(self, poller: Poller) -> None:
        a, b = loopback_pair()
        fd = b.fileno()
        poller.register(fd, READ)
        a.close()
        b.close()
        poller.unregister(fd)  # does not raise
        with pytest.raises(FileNotFoundError):
            poller.unregister(fd)

    def test_unregister_object_after_close(self, poller: Poller) -> None:
        a, b = loopback_pair()
        poller.register(b, READ)
        a.close()
        b.close()
        assert b.fileno() == -1
        poller.unregister(b)  # found by identity
        with pytest.raises(FileNotFoundError):
            poller.unregister(b)
        with pytest.raises(FileNotFoundError):
            poller.modify(b, READ)

    def test_fd_number_reused_after_unregister(self, poller: Poller) -> None:
        a, b = loopback_pair()
        fd = b.fileno()
        poller.register(b, READ)
        b.close()
        poller.unregister(b)
        c, d = loopback_pair()
        try:
            new = c if c.fileno() == fd else d
            other = d if new is c else c
            poller.register(new, READ)
            other.send(b"x")
            events, _ = poll_until(poller, new.fileno(), READ)
            assert events == READ
        finally:
            a.close()
            c.close()
            d.close()

    def test_closed_while_the_file_lives_on(self, poller: Poller, pair: Pair) -> None:
        # epoll keys its set on the file, not the number: a socket closed
        # while registered but still open elsewhere (dup, forked child) stays
        # in the kernel's set, out of reach of unregister().
        a, b = pair
        fd = b.fileno()
        poller.register(fd, READ)
        other = os.dup(fd)
        try:
            b.close()
            poller.unregister(fd)
            a.send(b"x")  # the file is readable now
            assert poller.poll(0) == []
            start = time.monotonic()
            assert poller.poll(0.2) == []
            assert time.monotonic() - start >= 0.15  # waited: no ghost spinning
        finally:
            os.close(other)

    def test_modify_of_an_fd_closed_while_registered(self, poller: Poller, pair: Pair) -> None:
        # The one call whose outcome differs by backend (docs/guarantees.md):
        # a kernel that is asked at once (epoll_ctl, kevent) refuses with
        # EBADF; poll, /dev/poll and select only learn at the next wait and
        # report the fd as ERROR there. Either way the fd is never reported
        # ready for READ or WRITE, and unregister() still works.
        _, b = pair
        fd = b.fileno()
        poller.register(fd, READ)
        b.close()
        try:
            poller.modify(fd, READ | WRITE)
        except OSError as exc:
            assert exc.errno == errno.EBADF, exc
            assert poller.poll(0) == []
        else:
            events, _ = poll_until(poller, fd, ERROR)
            assert events & ERROR, events
            assert not events & (READ | WRITE), events
        poller.unregister(fd)
        with pytest.raises(FileNotFoundError):
            poller.modify(fd, READ)

    def test_closed_fd_does_not_starve_the_others(self, poller: Poller, pair: Pair) -> None:
        # select: one EBADF fails the whole call; poll: POLLNVAL every time.
        a, b = pair
        c, d = loopback_pair()
        bad = d.fileno()
        poller.register(b, READ)
        poller.register(bad, READ)
        d.close()  # closed while registered
        a.send(b"x")
        bad_reports = []
        good_reports = 0
        for _ in range(20):  # b stays readable: each poll returns at once
            for fd, events in poller.poll(EVENT_TIMEOUT):
                if fd == bad:
                    bad_reports.append(events)
                elif fd == b.fileno():
                    good_reports += 1
        assert good_reports == 20
        assert len(bad_reports) <= 1, bad_reports
        assert all(events & ERROR for events in bad_reports)
        # Nothing left to report: the call waits instead of spinning.
        drain(b)
        start = time.monotonic()
        assert poller.poll(0.2) == []
        assert time.monotonic() - start >= 0.15
        poller.unregister(bad)
        c.close()

    # -- timeouts and signals -----------------------------------------------------

    def test_timeouts(self, poller: Poller, pair: Pair) -> None:
        a, _ = pair
        poller.register(a, READ)
        start = time.monotonic()
        assert poller.poll(0) == []
        assert poller.poll(-1) == []  # negative: as 0
        assert time.monotonic() - start < 0.5
        start = time.monotonic()
        assert poller.poll(0.1) == []
        elapsed = time.monotonic() - start
        assert 0.09 <= elapsed < 5

    def test_empty_poller_waits_for_the_timeout(self, poller: Poller) -> None:
        start = time.monotonic()
        assert poller.poll(0.1) == []
        assert 0.09 <= time.monotonic() - start < 5

    def test_none_blocks_until_an_event(self, poller: Poller, pair: Pair) -> None:
        a, b = pair
        poller.register(b, READ)
        timer = threading.Timer(0.05, a.send, (b"x",))
        timer.start()
        try:
            assert poller.poll(None) == [(b.fileno(), READ)]
        finally:
            timer.cancel()

    @pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
    @pytest.mark.parametrize("handler_raises", [False, True])
    def test_signal_during_wait_returns_normally(
        self, poller: Poller, pair: Pair, handler_raises: bool
    ) -> None:
        _, b = pair
        poller.register(b, READ)
        received: list[int] = []

        def handler(signum: int, frame: object) -> None:
            received.append(signum)
            if handler_raises:
                # What a wait sees when the handler does not let CPython
                # retry (PEP 475): InterruptedError.
                raise InterruptedError(errno.EINTR, "Interrupted system call")

        main = threading.get_ident()
        old = signal.signal(signal.SIGUSR1, handler)
        timer = threading.Timer(0.05, signal.pthread_kill, (main, signal.SIGUSR1))
        try:
            timer.start()
            start = time.monotonic()
            assert poller.poll(0.5) == []
            assert time.monotonic() - start < 5
        finally:
            timer.cancel()
            timer.join()
            signal.signal(signal.SIGUSR1, old)
        assert received == [signal.SIGUSR1]

    @pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
    def test_signal_handler_wakes_the_wait(self, poller: Poller, pair: Pair) -> None:
        # The IOLoop's add_callback from a signal handler: the handler writes
        # to a registered socket, and the interrupted wait reports it.
        a, b = pair
        poller.register(b, READ)

        def handler(signum: int, frame: object) -> None:
            a.send(b"!")

        old = signal.signal(signal.SIGUSR1, handler)
        timer = threading.Timer(0.05, signal.pthread_kill, (threading.get_ident(), signal.SIGUSR1))
        try:
            timer.start()
            start = time.monotonic()
            assert poller.poll(EVENT_TIMEOUT) == [(b.fileno(), READ)]
            assert time.monotonic() - start < EVENT_TIMEOUT / 2
        finally:
            timer.cancel()
            timer.join()
            signal.signal(signal.SIGUSR1, old)

    # -- life cycle ------------------------------------------------------------

    def test_close_is_idempotent_and_final(self, make: Callable[[], Poller], pair: Pair) -> None:
        a, _ = pair
        with make() as poller:
            poller.register(a, READ)
        poller.close()
        poller.close()
        with pytest.raises(ValueError):
            poller.register(a, READ)
        with pytest.raises(ValueError):
            poller.poll(0)

    def test_high_fd(self, poller: Poller, pair: Pair, name: str) -> None:
        """An fd >= 1024: select refuses it at register and names a backend that can."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 1200:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
            except (ValueError, OSError):
                pytest.skip("cannot raise RLIMIT_NOFILE above 1024")
            if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1200:
                pytest.skip("cannot raise RLIMIT_NOFILE above 1024")
        high = next((fd for fd in range(1100, 1200) if not _is_open(fd)), None)
        assert high is not None
        a, b = pair
        os.dup2(b.fileno(), high)
        try:
            poller.register(a, WRITE)
            if name == "select" and not self.windows_select:
                with pytest.raises(ValueError, match=r"FD_SETSIZE.*'(epoll|poll|kqueue)'"):
                    poller.register(high, READ)
                # The fds already registered keep working.
                assert poller.poll(0) == [(a.fileno(), WRITE)]
                return
            poller.register(high, READ)
            a.send(b"x")
            events, _ = poll_until(poller, high, READ)
            assert events == READ
            poller.unregister(high)
        finally:
            os.close(high)
        if soft < 1200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    #: SelectPoller in Windows mode has no FD_SETSIZE limit on fd values.
    windows_select = False

    @pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
    def test_fork_child_has_its_own_interest_set(self, poller: Poller, pair: Pair) -> None:
        if not self.can_fork or not hasattr(os, "fork"):
            pytest.skip("no fork here")
        a, b = pair
        poller.register(b, READ)
        assert poller.poll(0) == []
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report through the pipe, never return
            code = 1
            try:
                os.close(rfd)
                # Give up the fd the parent watches, watch a new one: neither
                # may change the parent's set.
                poller.unregister(b)
                c, d = loopback_pair()
                poller.register(d, READ)
                c.send(b"child")
                poll_until(poller, d.fileno(), READ, timeout=5)
                a.send(b"x")  # b is readable now, in both processes
                seen = [fd for fd, _ in poller.poll(0.05)]
                os.write(wfd, b"ok" if b.fileno() not in seen else f"saw b: {seen}".encode())
                code = 0
            except BaseException as exc:
                os.write(wfd, repr(exc).encode()[:1000])
            finally:
                os._exit(code)
        os.close(wfd)
        try:
            ready, _, _ = select.select([rfd], [], [], EVENT_TIMEOUT)
            message = os.read(rfd, 2000) if ready else b"child timed out"
        finally:
            os.close(rfd)
            os.waitpid(pid, 0)
        assert message == b"ok"
        # The parent still hears about b (the child unregistered it in its own set),
        # and only about b (not the child's new fd).
        events, results = poll_until(poller, b.fileno(), READ, timeout=5)
        assert events == READ
        assert {fd for result in results for fd, _ in result} == {b.fileno()}


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_the_poller_the_environment_selects() -> None:
    """choose() (IOSTREAM_POLLER, or the best) gives a poller that works."""
    cls = pollers.choose()
    a, b = loopback_pair()
    try:
        with cls() as poller:
            poller.register(b, READ)
            a.send(b"x")
            events, _ = poll_until(poller, b.fileno(), READ)
            assert events == READ
    finally:
        a.close()
        b.close()


class _DevpollShim:
    """select.devpoll's interface over select.poll (Solaris is not here)."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self.closed = False
        self.modified: list[tuple[int, int]] = []

    def register(self, fd: int, events: int) -> None:
        self._poll.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self.modified.append((fd, events))
        self._poll.modify(fd, events)

    def unregister(self, fd: int) -> None:
        self._poll.unregister(fd)

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        if self.closed:
            raise ValueError("I/O operation on closed devpoll object")
        return self._poll.poll(timeout)

    def close(self) -> None:
        self.closed = True


@pytest.mark.skipif(not hasattr(select, "poll"), reason="needs select.poll for the shim")
def test_devpoll_logic_over_a_shim(monkeypatch: pytest.MonkeyPatch) -> None:
    """DevpollPoller's own code (modify, POLLNVAL, close) over a devpoll-like shim."""
    import select
    import types

    from iostream.pollers.devpoll import DevpollPoller

    stand_in = types.SimpleNamespace(
        **{name: getattr(select, name) for name in dir(select) if name.startswith("POLL")},
        devpoll=_DevpollShim,
    )
    monkeypatch.setattr(DevpollPoller, "_select", stand_in)
    a, b = loopback_pair()
    c, d = loopback_pair()
    with pollers.DevpollPoller() as poller:
        shim = poller._pollobj
        poller.register(b, READ | WRITE)
        poller.modify(b, READ)  # devpoll: modify(), never a second register()
        assert shim.modified == [(b.fileno(), READ)]
        bad = d.fileno()
        poller.register(bad, READ)
        d.close()
        a.send(b"x")
        assert dict(poller.poll(1.0)) == {b.fileno(): READ, bad: ERROR}
        assert dict(poller.poll(1.0)) == {b.fileno(): READ}  # POLLNVAL reported once
        poller.unregister(bad)
    assert shim.closed
    for sock in (a, b, c):
        sock.close()


def test_fd_limit_is_select_fd_setsize_and_none_elsewhere() -> None:
    from iostream.pollers import BACKENDS
    from iostream.pollers.select_ import FD_SETSIZE_POSIX, FD_SETSIZE_WINDOWS

    for name, cls in BACKENDS.items():
        if name == "select":
            assert cls.fd_limit() in (FD_SETSIZE_POSIX, FD_SETSIZE_WINDOWS)
        else:
            assert cls.fd_limit() is None, name
