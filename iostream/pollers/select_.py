"""The select() backend (everywhere, the only one on Windows): :class:`SelectPoller`.

(The module is ``select_`` so that it can never be mistaken for the standard
library's ``select``, which it uses.)

select() is portable, but each platform gives it a trap; each is handled
beside the code it concerns:

- one closed fd fails the whole call (EBADF, WSAENOTSOCK on Windows): the
  bad fds are found, reported once as ERROR and dropped, the others' events
  are returned;
- POSIX: fds >= FD_SETSIZE (1024) cannot be put in an fd_set at all;
  Windows: an fd_set holds at most 512 sockets — both refused at register;
- Windows: a failed non-blocking connect is reported only in the
  exceptional set, never as writable; and a call with no fd at all fails
  (WSAEINVAL) instead of sleeping.

select() sees a hang-up only as READ (then ``recv`` returns ``b""``), and an
error only on an fd in the read set (POSIX's exceptional set means
out-of-band data, not errors; Windows also puts a failed connect there): an
fd registered for ERROR alone, or no events, is in no set and is never
reported. That is enough for a stream, which watches READ while idle.
Bits returned are exactly READ, WRITE and ERROR.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import ClassVar

from iostream._platform import _WINDOWS
from iostream.pollers.base import (
    ERROR,
    READ,
    WRITE,
    FdTablePoller,
    normalize_timeout,
    other_backends_hint,
)

__all__ = ["FD_SETSIZE_POSIX", "FD_SETSIZE_WINDOWS", "SelectPoller"]

#: POSIX: the size of an fd_set, in fd *values*. CPython's select() refuses
#: (ValueError) any fd >= FD_SETSIZE, because FD_SET() on it would write past
#: the end of the fd_set. It is 1024 on Linux, macOS and the BSDs as CPython
#: is built.
FD_SETSIZE_POSIX = 1024

#: Windows: an fd_set is an array of at most FD_SETSIZE *sockets* (any
#: handle values); CPython builds it with 512 and refuses more.
FD_SETSIZE_WINDOWS = 512

#: How long one sleep lasts when waiting with no fd at all and no timeout.
_LONG_SLEEP = 86400.0


class SelectPoller(FdTablePoller):
    """select(2). See the module docstring for the platform traps."""

    name = "select"

    #: Winsock's select() rules (a test stand-in may set it on POSIX).
    _windows: ClassVar[bool] = _WINDOWS

    @classmethod
    def fd_limit(cls) -> int | None:
        """FD_SETSIZE: 512 sockets on Windows; on POSIX, fds below 1024."""
        return FD_SETSIZE_WINDOWS if cls._windows else FD_SETSIZE_POSIX

    def _kernel_open(self) -> None:
        self._readers: set[int] = set()
        self._writers: set[int] = set()
        # On Windows, the writers again, as the exceptional set: see poll().
        self._excepts: set[int] = self._writers if self._windows else set()

    def _kernel_register(self, fd: int, events: int) -> None:
        if self._windows:
            if len(self._fd_events) >= FD_SETSIZE_WINDOWS:
                raise ValueError(
                    f"select() on Windows cannot watch more than {FD_SETSIZE_WINDOWS} "
                    f"sockets (FD_SETSIZE), and {len(self._fd_events)} are registered: "
                    f"{other_backends_hint(self.name)}, or spread the sockets over "
                    "several loops"
                )
        elif fd >= FD_SETSIZE_POSIX:
            raise ValueError(
                f"select() cannot watch fd {fd}: fds >= FD_SETSIZE ({FD_SETSIZE_POSIX}) "
                f"do not fit in an fd_set; {other_backends_hint(self.name)}"
            )
        self._kernel_modify(fd, 0, events)

    def _kernel_modify(self, fd: int, old: int, events: int) -> None:
        if events & READ:
            self._readers.add(fd)
        else:
            self._readers.discard(fd)
        if events & WRITE:
            self._writers.add(fd)
        else:
            self._writers.discard(fd)

    def _kernel_unregister(self, fd: int, old: int) -> None:
        self._readers.discard(fd)
        self._writers.discard(fd)

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        """Wait up to *timeout* seconds (None: for ever; negative: 0) for events."""
        if self._closed:
            self._check_open()
        timeout = normalize_timeout(timeout)
        readers = self._readers
        writers = self._writers
        if self._windows and not readers and not writers:
            # Why: Winsock's select() with three empty sets fails with
            # WSAEINVAL instead of sleeping, as POSIX's does. Sleep instead.
            return self._sleep(timeout)
        try:
            # Windows: why the writers go in the exceptional set too. A
            # non-blocking connect that fails is reported there only: the
            # socket never becomes writable, so a caller waiting for WRITE
            # would wait for ever. (On POSIX the exceptional set means
            # out-of-band data, not errors, so it is left empty.)
            r, w, x = self._select.select(readers, writers, self._excepts, timeout)
        except InterruptedError:
            # CPython retries EINTR itself (PEP 475); this only happens if a
            # signal handler raised it. The contract: an interrupted wait returns.
            return []
        except OSError as exc:
            return self._poll_one_by_one(exc)
        if not w and not x:
            return [(fd, READ) for fd in r]
        return _merge(r, w, x)

    def _sleep(self, timeout: float | None) -> list[tuple[int, int]]:
        if timeout is None:
            while True:  # what select() with no fd and no timeout does: block
                time.sleep(_LONG_SLEEP)
        if timeout > 0:
            time.sleep(timeout)
        return []

    def _poll_one_by_one(self, exc: OSError) -> list[tuple[int, int]]:
        """After select() failed: find the bad fds; report them as ERROR, once.

        Why: select() fails as a whole if any one fd in its sets is not open
        (EBADF; WSAENOTSOCK on Windows) — typically a socket closed while
        registered. Re-raising would stop the loop; retrying would fail
        again; either way every other fd starves. So each fd is tried alone,
        with no wait: the good ones give their events, the bad ones are
        reported as ERROR (their handler closes the stream) and dropped from
        the sets, so the next call is clean. The table keeps them, so
        ``unregister`` still works, and ``modify`` puts them back. If no fd
        is bad, the failure was something else: re-raise it.
        """
        bad: list[int] = []
        ready: list[tuple[list[int], list[int], list[int]]] = []
        for fd in self._readers | self._writers:
            r1 = [fd] if fd in self._readers else []
            w1 = [fd] if fd in self._writers else []
            x1 = w1 if self._windows else []
            try:
                ready.append(self._select.select(r1, w1, x1, 0))
            except (OSError, ValueError):
                bad.append(fd)
        if not bad:
            raise exc
        for fd in bad:
            self._readers.discard(fd)
            self._writers.discard(fd)
        r = [fd for rwx in ready for fd in rwx[0]]
        w = [fd for rwx in ready for fd in rwx[1]]
        x = [fd for rwx in ready for fd in rwx[2]]
        x.extend(bad)
        return _merge(r, w, x)


def _merge(r: Iterable[int], w: Iterable[int], x: Iterable[int]) -> list[tuple[int, int]]:
    """One ``(fd, events)`` pair per fd from select()'s three lists."""
    events = dict.fromkeys(r, READ)
    get = events.get
    for fd in w:
        events[fd] = get(fd, 0) | WRITE
    for fd in x:
        events[fd] = get(fd, 0) | ERROR
    return list(events.items())
