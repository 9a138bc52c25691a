"""The kqueue backend (macOS, FreeBSD, OpenBSD, NetBSD): :class:`KqueuePoller`.

kqueue does not think in event masks but in *filters*: readability
(EVFILT_READ) and writability (EVFILT_WRITE) are two separate kernel notes
on the same fd, each added and deleted on its own and each reported as its
own kevent. This backend keeps them in step with the table (``modify`` adds
or deletes only the filters that changed) and merges the kevents of one fd
back into a single ``(fd, events)`` pair. The semantics followed are those
of the FreeBSD kqueue(2) manual page.

Two cases have no filter of their own:

- **ERROR alone** (or no events): The contract wants errors and hang-ups reported
  for such an fd, but kqueue has no "errors only" filter. We add an
  EVFILT_READ note with ``NOTE_LOWAT`` set far above any buffer, so that
  data does not fire it but EOF and socket errors do (kqueue(2): the read
  filter sets EV_EOF "if the read direction of the socket has shutdown",
  with the error in fflags), and report it as ERROR only. Why EV_CLEAR too:
  macOS caps the low-water mark at the receive buffer's size, so a full
  buffer (a reader applying back-pressure, which is exactly when a stream
  watches ERROR alone) fires it; level-triggered, that would spin the loop.
  With EV_CLEAR it fires once per change of state, and a firing that is
  not EOF or an error is dropped. So ERROR alone is reported once per
  change, not on every poll().
- **Regular files**: kqueue(2)'s EVFILT_READ on a vnode fires only "when
  the file pointer is not at the end of file", so an empty file, or one read
  to its end, never reports READ and a stream reading it never sees EOF;
  poll() and select() report a regular file as always ready (POSIX), and
  epoll refuses it (the per-fd fallback then treats it as always ready).
  Decision: this backend follows poll/select. A regular file gets no kernel
  note; it is reported ready for what it is registered for (READ and/or
  WRITE; not ERROR alone) on every poll(), which then does not wait.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from typing import Any

from iostream.pollers.base import (
    ERROR,
    READ,
    WRITE,
    FdTablePoller,
    kernel_object_fd,
    normalize_timeout,
)

__all__ = ["KqueuePoller"]

#: The low-water mark of the ERROR-alone note: more than any receive buffer
#: holds, so data alone never reaches it (see the module docstring).
_EOF_ONLY_LOWAT = 0x7FFFFFFF


class KqueuePoller(FdTablePoller):
    """kqueue(2) with one EVFILT_READ and/or one EVFILT_WRITE note per fd."""

    name = "kqueue"
    # Why: "The queue is not inherited by a child created with fork(2)"
    # (kqueue(2)). The child's copy of the fd is dead — every call fails with
    # EBADF — so a child that goes on using the poller must get a new queue,
    # loaded from the table.
    _reopen_after_fork = True

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
        self._ev_clear: int = mod.KQ_EV_CLEAR
        self._note_lowat: int = mod.KQ_NOTE_LOWAT
        #: How many filters are in the queue: poll() must offer room for a
        #: kevent from each, or the rest wait for the next call.
        self._filters = 0
        #: The fds whose read note is the ERROR-alone one.
        self._error_only: set[int] = set()
        #: The registered fds that are regular files (no kernel note).
        self._regular: set[int] = set()

    def _kernel_close(self) -> None:
        self._kq.close()

    def _doorbell_fd(self) -> int | None:
        # FreeBSD and XNU implement poll/select on a kqueue fd (readable
        # while events are pending: that is how kqueues nest). It can ring
        # with nothing to collect when the event's condition stopped holding
        # first: FallbackPoller counts such empty rings.
        return kernel_object_fd(self._kq)

    def _changes(self, fd: int, old: int | None, new: int) -> list[Any]:
        """The kevents that take *fd* from events *old* (None: not
        registered) to events *new*."""
        changes = []
        kevent = self._kevent
        old_read = _NONE if old is None else _read_note(old)
        if old is None:
            old = 0
        new_read = _read_note(new)
        if old_read != new_read:
            if old_read:
                changes.append(kevent(fd, self._f_read, self._ev_delete))
            if new_read == _READ:
                changes.append(kevent(fd, self._f_read, self._ev_add))
            elif new_read == _EOF_ONLY:
                changes.append(
                    kevent(
                        fd,
                        self._f_read,
                        self._ev_add | self._ev_clear,
                        self._note_lowat,
                        _EOF_ONLY_LOWAT,
                    )
                )
        if new & WRITE and not old & WRITE:
            changes.append(kevent(fd, self._f_write, self._ev_add))
        elif old & WRITE and not new & WRITE:
            changes.append(kevent(fd, self._f_write, self._ev_delete))
        return changes

    def _apply(self, fd: int, changes: list[Any], events: int) -> None:
        if changes:
            # max_events=0: a change that fails raises OSError (with room in
            # the event list it would come back as an EV_ERROR kevent).
            self._kq.control(changes, 0, 0)
            for change in changes:
                self._filters += 1 if change.flags & self._ev_add else -1
        if _read_note(events) == _EOF_ONLY:
            self._error_only.add(fd)
        else:
            self._error_only.discard(fd)

    def _kernel_register(self, fd: int, events: int) -> None:
        if _is_regular_file(fd):
            self._regular.add(fd)
            return
        self._apply(fd, self._changes(fd, None, events), events)

    def _kernel_modify(self, fd: int, old: int, events: int) -> None:
        if fd in self._regular:
            return
        # Only the filters that change: adding an existing filter again would
        # be harmless, but deleting one that is not there fails with ENOENT.
        self._apply(fd, self._changes(fd, old, events), events)

    def _kernel_unregister(self, fd: int, old: int) -> None:
        self._error_only.discard(fd)
        if fd in self._regular:
            self._regular.discard(fd)
            return
        deletes = []
        if _read_note(old) != _NONE:
            deletes.append(self._kevent(fd, self._f_read, self._ev_delete))
        if old & WRITE:
            deletes.append(self._kevent(fd, self._f_write, self._ev_delete))
        for change in deletes:
            # One at a time: a failed change in a list stops the rest.
            self._filters -= 1
            try:
                self._kq.control([change], 0, 0)
            except OSError as exc:
                # kqueue(2): "Calling close() on a file descriptor will
                # remove any kevents that reference the descriptor." So for
                # an fd closed while registered the notes are already gone:
                # EBADF (the number is free) or ENOENT (reused by a file
                # without our notes). The contract: not an error.
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
        - The ERROR-alone note (see the module docstring): EV_EOF -> ERROR;
          without EV_EOF, nothing.
        - A registered regular file: what it is registered for, at once.
        """
        timeout = normalize_timeout(timeout)  # kqueue.control refuses a negative one
        ready_files: list[tuple[int, int]] = []
        if self._regular:
            table = self._fd_events
            for fd in self._regular:
                bits = table.get(fd, 0) & (READ | WRITE)
                if bits:
                    ready_files.append((fd, bits))
            if ready_files:
                timeout = 0.0
        try:
            # At least 1: with room for no events, kevent() returns at once
            # instead of waiting.
            kevents = self._kq.control(None, self._filters or 1, timeout)
        except InterruptedError:
            # CPython retries EINTR itself (PEP 475); this only happens if a
            # signal handler raised it. The contract: an interrupted wait returns.
            return []
        events: dict[int, int] = dict(ready_files)
        f_read = self._f_read
        eof = self._ev_eof
        error_only = self._error_only
        for kev in kevents:
            fd = kev.ident
            flags = kev.flags
            if flags & self._ev_error:
                bits = ERROR
            elif kev.filter == f_read:
                if error_only and fd in error_only:
                    # The ERROR-alone note: EOF or an error is a hang-up
                    # or an error; anything else (a full buffer) is not.
                    if not flags & eof:
                        continue
                    bits = ERROR
                else:
                    bits = READ | ERROR if flags & eof and kev.fflags else READ
            else:
                bits = WRITE | ERROR if flags & eof else WRITE
            events[fd] = events.get(fd, 0) | bits
        return list(events.items())


#: What the read note of an fd is: none, EVFILT_READ, or the ERROR-alone one.
_NONE, _READ, _EOF_ONLY = 0, 1, 2


def _read_note(events: int) -> int:
    if events & READ:
        return _READ
    if events & WRITE:
        return _NONE  # the write note reports errors and hang-ups (EV_EOF)
    return _EOF_ONLY


def _is_regular_file(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False  # let the kernel say what is wrong with it
