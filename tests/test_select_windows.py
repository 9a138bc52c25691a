"""SelectPoller's Windows logic, on Linux, against a Winsock stand-in (``fake_winselect``).

The stand-in follows Microsoft's "select function (winsock2.h)"
documentation
(https://learn.microsoft.com/en-us/windows/win32/api/winsock2/nf-winsock2-select):
a call with three empty sets fails with WSAEINVAL, a failed non-blocking
connect shows only in the exceptional set, a set holds at most 512 sockets
(as CPython builds it), a closed socket fails the call with WSAENOTSOCK.
SelectPoller is switched to Windows mode by setting its class attributes
``_windows`` and ``_select`` (the pollers' one way to take stand-ins);
then the poller contract runs again, plus the Windows-only checks.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable, Iterator

import fake_winselect as ws
import pytest
import test_pollers
from _poller_helpers import loopback_pair, poll_until, refused_connect

from iostream.pollers import ERROR, READ, WRITE, Poller
from iostream.pollers.select_ import SelectPoller


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put SelectPoller in Windows mode over the stand-in (for pollers made after)."""
    monkeypatch.setattr(SelectPoller, "_windows", True)
    monkeypatch.setattr(SelectPoller, "_select", ws.STAND_IN)
    ws.calls.clear()


@pytest.fixture
def poller(windows: None) -> Iterator[SelectPoller]:
    """A SelectPoller in Windows mode."""
    with SelectPoller() as poller:
        yield poller


# -- the stand-in follows the Winsock documentation ----------------------------------


def test_fake_empty_sets_fail_with_wsaeinval() -> None:
    with pytest.raises(OSError) as info:
        ws.select_([], [], [], 0.01)
    assert info.value.errno == ws.WSAEINVAL


def test_fake_failed_connect_only_exceptional() -> None:
    with refused_connect() as sock:
        r, w, x = ws.select_([], [sock], [sock], 5.0)
        assert (r, w, x) == ([], [], [sock.fileno()])
        start = time.monotonic()
        assert ws.select_([sock], [sock], [], 0.1) == ([], [], [])
        assert time.monotonic() - start >= 0.09


def test_fake_limit_and_closed_socket() -> None:
    with pytest.raises(ValueError, match="too many"):
        ws.select_(list(range(513)), [], [], 0)
    sock = socket.socket()
    fd = sock.fileno()
    sock.close()
    with pytest.raises(OSError) as info:
        ws.select_([fd], [], [], 0)
    assert info.value.errno == ws.WSAENOTSOCK


# -- the contract, in Windows mode ----------------------------------------------------


class TestSelectWindowsModeContract(test_pollers.TestContract):
    """The whole poller contract, on SelectPoller in Windows mode over the stand-in."""

    windows_select = True
    can_fork = False  # Windows has no fork()

    @staticmethod
    def sees_errors(name: str) -> bool:
        """In Windows mode a failed connect is ERROR; a reset is still only READ."""
        return False

    @pytest.fixture
    def name(self) -> str:
        """The backend's name."""
        return "select"

    @pytest.fixture
    def make(self, windows: None) -> Callable[[], Poller]:
        """SelectPoller, in Windows mode."""
        return SelectPoller

    def test_failed_connect(self, poller: Poller, name: str) -> None:
        """Windows: a failed connect is ERROR (from the exceptional set), not WRITE."""
        with refused_connect() as sock:
            poller.register(sock, WRITE)
            events, _ = poll_until(poller, sock.fileno(), WRITE | ERROR)
            assert events == ERROR
            assert self.socket_error(sock) == errno.ECONNREFUSED


# -- Windows-only behaviour -----------------------------------------------------------


def test_no_fd_at_all_sleeps_instead_of_failing(poller: SelectPoller) -> None:
    start = time.monotonic()
    assert poller.poll(0.1) == []
    assert time.monotonic() - start >= 0.09
    assert poller.poll(0) == []
    assert ws.calls == []  # Winsock's select was never called with empty sets


def test_error_only_registration_sleeps_too(poller: SelectPoller) -> None:
    a, b = loopback_pair()
    try:
        poller.register(a, 0)
        start = time.monotonic()
        assert poller.poll(0.1) == []
        assert time.monotonic() - start >= 0.09
    finally:
        a.close()
        b.close()


def test_more_than_512_sockets_refused(poller: SelectPoller) -> None:
    socks = [socket.socket() for _ in range(513)]
    try:
        for sock in socks[:512]:
            poller.register(sock, READ)
        with pytest.raises(ValueError, match=r"512.*'(epoll|poll|kqueue)'") as info:
            poller.register(socks[512], READ)
        assert "Windows" in str(info.value)
        poller.unregister(socks[0])
        poller.register(socks[512], READ)  # room again
    finally:
        for sock in socks:
            sock.close()


def test_no_fd_setsize_limit_on_values(poller: SelectPoller) -> None:
    # Windows socket handles are arbitrary numbers: only the count matters.
    a, b = loopback_pair()
    try:
        poller.register(a, WRITE)
        poller.register(4096, READ)  # refused on POSIX (>= FD_SETSIZE)
        poller.unregister(4096)
    finally:
        a.close()
        b.close()


def test_writers_are_watched_for_errors(poller: SelectPoller) -> None:
    a, b = loopback_pair()
    try:
        poller.register(a, READ)
        poller.register(b, WRITE)
        poller.poll(0)
        r, w, x, _ = ws.calls[-1]
        assert (r, w, x) == ([a.fileno()], [b.fileno()], [b.fileno()])
    finally:
        a.close()
        b.close()


def test_closed_socket_reported_once_others_served(poller: SelectPoller) -> None:
    a, b = loopback_pair()
    c, d = loopback_pair()
    try:
        poller.register(b, READ)
        poller.register(d, WRITE)
        bad = d.fileno()
        d.close()
        a.send(b"x")
        first = dict(poller.poll(1.0))
        assert first == {b.fileno(): READ, bad: ERROR}
        assert dict(poller.poll(1.0)) == {b.fileno(): READ}
        poller.unregister(bad)
    finally:
        for sock in (a, b, c):
            sock.close()
