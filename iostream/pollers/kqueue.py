"""The kqueue backend (macOS, FreeBSD, OpenBSD, NetBSD): :class:`KqueuePoller`.

kqueue does not think in event masks but in *filters*: readability
(EVFILT_READ) and writability (EVFILT_WRITE) are two separate kernel notes
on the same fd, each added and deleted on its own and each reported as its
own kevent. This backend keeps them in step with the table (``modify`` adds
or deletes only the filters that changed) and merges the kevents of one fd
back into a single ``(fd, events)`` pair. The semantics followed are those
of the FreeBSD kqueue(2) manual page.
"""

from __future__ import annotations

import errno
import select
import sys
from typing import Any, ClassVar

from iostream.pollers.base import ERROR, READ, WRITE, FdTablePoller, normalize_timeout


class KqueuePoller(FdTablePoller):
    """kqueue(2) with one EVFILT_READ and/or one EVFILT_WRITE note per fd."""

    name = "kqueue"
    # Why: "The queue is not inherited by a child created with fork(2)"
    # (kqueue(2)). The child's copy of the fd is dead — every call fails with
    # EBADF — so a child that goes on using the poller must get a new queue,
    # loaded from the table.
    _reopen_after_fork = True

    #: Where ``kqueue``, ``kevent`` and the ``KQ_*`` constants come from: the
    #: ``select`` module, or a stand-in a test puts here before making a poller.
    _select: ClassVar[Any] = select

    @classmethod
    def _unavailable_reason(cls) -> str | None:
        if not hasattr(cls._select, "kqueue"):
            return f"select.kqueue does not exist on {sys.platform} (it is BSD and macOS only)"
        return None

    def _kernel_open(self) -> None:
        mod = self._select
        self._kq: Any = mod.kqueue()
        self._kevent: Any = mod.kevent
        self._f_read: int = mod.KQ_FILTER_READ
        self._f_write: int = mod.KQ_FILTER_WRITE
        self._ev_add: int = mod.KQ_EV_ADD
        self._ev_delete: int = mod.KQ_EV_DELETE
        self._ev_eof: int = mod.KQ_EV_EOF
        self._ev_error: int = mod.KQ_EV_ERROR
        #: How many filters are in the queue: poll() must offer room for a
        #: kevent from each, or the rest wait for the next call.
        self._filters = 0

    def _kernel_close(self) -> None:
        self._kq.close()

    def _changes(self, fd: int, old: int, new: int) -> list[Any]:
        """The kevents that take *fd* from filters *old* to filters *new*."""
        changes = []
        kevent = self._kevent
        for bit, flt in ((READ, self._f_read), (WRITE, self._f_write)):
            if new & bit and not old & bit:
                changes.append(kevent(fd, flt, self._ev_add))
            elif old & bit and not new & bit:
                changes.append(kevent(fd, flt, self._ev_delete))
        return changes

    def _apply(self, changes: list[Any]) -> None:
        if changes:
            # max_events=0: a change that fails raises OSError (with room in
            # the event list it would come back as an EV_ERROR kevent).
            self._kq.control(changes, 0, 0)
            for change in changes:
                self._filters += 1 if change.flags == self._ev_add else -1

    def _kernel_register(self, fd: int, events: int) -> None:
        # ERROR alone adds no filter: kqueue has no "errors only" filter,
        # and both filters report errors (EV_EOF with fflags) anyway.
        self._apply(self._changes(fd, 0, events))

    def _kernel_modify(self, fd: int, old: int, events: int) -> None:
        # Only the filters that change: adding an existing filter again would
        # be harmless, but deleting one that is not there fails with ENOENT.
        self._apply(self._changes(fd, old, events))

    def _kernel_unregister(self, fd: int, old: int) -> None:
        for change in self._changes(fd, old, 0):
            # One at a time: a failed change in a list stops the rest.
            self._filters -= 1
            try:
                self._kq.control([change], 0, 0)
            except OSError as exc:
                # kqueue(2): "Calling close() on a file descriptor will
                # remove any kevents that reference the descriptor." So for
                # an fd closed while registered the notes are already gone:
                # EBADF (the number is free) or ENOENT (reused by a file
                # without our notes). SPEC: not an error.
                if exc.errno not in (errno.EBADF, errno.ENOENT):
                    raise

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        """Wait up to *timeout* seconds (None: for ever; negative: 0) for events.

        Each fd's kevents are merged into one pair:

        - EVFILT_READ -> READ. EV_EOF on it means the peer has shut down its
          side — but kqueue(2) says EOF can be flagged "while there is still
          data pending in the socket buffer", so it is not an error: READ
          alone, and ``recv`` returns the data, then ``b""``. Only a socket
          error in ``fflags`` (a reset) adds ERROR.
        - EVFILT_WRITE -> WRITE. EV_EOF on it means nothing more can be
          written: the peer is gone, or — the usual case — a non-blocking
          connect failed (``fflags`` holds the errno). WRITE|ERROR, as epoll
          reports a refused connect.
        - EV_ERROR (an entry for a change that failed; ``data`` is the errno)
          -> ERROR.
        """
        timeout = normalize_timeout(timeout)  # kqueue.control refuses a negative one
        try:
            # At least 1: with room for no events, kevent() returns at once
            # instead of waiting.
            kevents = self._kq.control(None, self._filters or 1, timeout)
        except InterruptedError:
            # CPython retries EINTR itself (PEP 475); this only happens if a
            # signal handler raised it. SPEC: an interrupted wait returns.
            return []
        events: dict[int, int] = {}
        f_read = self._f_read
        eof = self._ev_eof
        for kev in kevents:
            fd = kev.ident
            flags = kev.flags
            if flags & self._ev_error:
                bits = ERROR
            elif kev.filter == f_read:
                bits = READ | ERROR if flags & eof and kev.fflags else READ
            else:
                bits = WRITE | ERROR if flags & eof else WRITE
            events[fd] = events.get(fd, 0) | bits
        return list(events.items())
