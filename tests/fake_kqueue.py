"""A stand-in for ``select.kqueue``/``select.kevent``, so KqueuePoller runs on Linux.

It follows the FreeBSD kqueue(2) manual page
(https://man.freebsd.org/cgi/man.cgi?query=kqueue&sektion=2), on real
sockets: readiness comes from ``select.poll`` underneath. What it models,
in the manual's words where they matter:

- A kevent is identified by ``(ident, filter)``: EVFILT_READ and
  EVFILT_WRITE on one fd are two separate notes, each reported on its own.
- ``EV_ADD`` adds a note or modifies an existing one; ``EV_DELETE`` removes
  one, and fails with ENOENT if there is none; an ident that is not an open
  fd fails with EBADF.
- "If an error occurs while processing an element of the changelist and
  there is enough room in the eventlist, then the event will be placed in
  the eventlist with EV_ERROR set in flags and the system error in data.
  Otherwise, -1 will be returned, and errno will be set" — here: OSError.
  When errors were placed in the eventlist, only they are returned.
- EVFILT_READ on a socket: ``data`` is the number of bytes in the receive
  buffer; "If the read direction of the socket has shutdown, then the filter
  also sets EV_EOF in flags, and returns the socket error (if any) in
  fflags. It is possible for EOF to be returned (indicating the connection
  is gone) while there is still data pending in the socket buffer."
- EVFILT_WRITE: ``data`` is the space left in the send buffer; "The filter
  will set EV_EOF when the reader disconnects" — and a failed non-blocking
  connect is reported this way too, with the error in ``fflags``.
- "Calling close() on a file descriptor will remove any kevents that
  reference the descriptor."
- "The queue is not inherited by a child created with fork(2)": here every
  call from another process fails with EBADF.
- ``control(changelist, max_events, timeout)`` as CPython's
  ``select.kqueue.control``: ``timeout`` in seconds, ``None`` blocks, a
  negative one is a ValueError; with ``max_events == 0`` it never waits.

One Linux limit: reading a socket's pending error (SO_ERROR) clears it, so
the fake remembers the error it read and keeps reporting it in ``fflags``;
:func:`socket_error` gives it to a test.

- ``EV_CLEAR``: "After the event is retrieved by the user, its state is
  reset" — here a note with EV_CLEAR is reported when it fires in a state
  (EOF, error, amount of data) other than the one last reported, and once
  it stopped firing, again at the next firing.
- ``NOTE_LOWAT`` on EVFILT_READ: fire only when at least ``data`` bytes are
  pending (or at EOF or on an error). As on macOS, the mark is capped at the
  receive buffer's size (SO_RCVBUF), so a full buffer fires.
- EVFILT_READ on a regular file (a vnode): "Returns when the file pointer
  is not at the end of file"; ``data`` is the offset to the end. An empty
  file, or one read to its end, does not fire. EVFILT_WRITE on one always
  fires.

Not modelled (KqueuePoller does not use them): EV_RECEIPT, the other
filters, the other ``NOTE_*`` flags. Asking for them raises
NotImplementedError.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import stat
import termios
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

KQ_FILTER_READ = -1
KQ_FILTER_WRITE = -2
KQ_EV_ADD = 0x0001
KQ_EV_DELETE = 0x0002
KQ_EV_ENABLE = 0x0004
KQ_EV_DISABLE = 0x0008
KQ_EV_ONESHOT = 0x0010
KQ_EV_CLEAR = 0x0020
KQ_EV_SYSFLAGS = 0xF000
KQ_EV_FLAG1 = 0x2000
KQ_EV_ERROR = 0x4000
KQ_EV_EOF = 0x8000
KQ_NOTE_LOWAT = 0x0001

_UNSUPPORTED_FLAGS = 0
# The action flags that are not kept in a note (kqueue_register strips them).
_ACTION_FLAGS = KQ_EV_ADD | KQ_EV_DELETE | KQ_EV_ENABLE | KQ_EV_DISABLE

_POLLRDHUP: int = getattr(select, "POLLRDHUP", 0x2000)

# (fd, st_dev, st_ino) -> the socket error read (and so cleared) from it.
_SOCKET_ERRORS: dict[tuple[int, int, int], int] = {}


class kevent:  # (the name select gives it)
    """A kernel event, as ``select.kevent``."""

    def __init__(
        self,
        ident: Any,
        filter: int = KQ_FILTER_READ,  # (select.kevent's own name)
        flags: int = KQ_EV_ADD,
        fflags: int = 0,
        data: int = 0,
        udata: int = 0,
    ) -> None:
        self.ident: int = ident if isinstance(ident, int) else ident.fileno()
        self.filter = filter
        self.flags = flags
        self.fflags = fflags
        self.data = data
        self.udata = udata

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, kevent):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[int, int, int, int, int, int]:
        return (self.ident, self.filter, self.flags, self.fflags, self.data, self.udata)

    def __repr__(self) -> str:
        return (
            f"<fake kevent ident={self.ident} filter={self.filter} flags={self.flags:#x} "
            f"fflags={self.fflags} data={self.data} udata={self.udata}>"
        )


@dataclass
class _Note:
    flags: int
    fflags: int
    data: int
    udata: int
    enabled: bool
    file: tuple[int, int]  # (st_dev, st_ino) of the fd when added
    #: EV_CLEAR: the state last reported while firing, None if not firing.
    reported: tuple[int, int, int] | None = None


def _file_of(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def socket_error(fd: int) -> int:
    """The socket error of *fd* (SO_ERROR), remembered once the fake read it."""
    file = _file_of(fd)
    if file is None:
        return 0
    key = (fd, *file)
    if key not in _SOCKET_ERRORS:
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            return 0  # not a socket
        try:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        finally:
            sock.detach()
        if not err:
            return 0
        _SOCKET_ERRORS[key] = err
    return _SOCKET_ERRORS[key]


def _ioctl_int(fd: int, request: int) -> int | None:
    try:
        buf = fcntl.ioctl(fd, request, b"\0\0\0\0")
    except OSError:
        return None
    return int.from_bytes(buf, "little", signed=True)


def _send_space(fd: int) -> int:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return 1
    try:
        size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    finally:
        sock.detach()
    queued = _ioctl_int(fd, termios.TIOCOUTQ) or 0
    return max(size - queued, 1)


class kqueue:  # (the name select gives it)
    """A kernel event queue, as ``select.kqueue``."""

    def __init__(self) -> None:
        self._notes: dict[tuple[int, int], _Note] = {}
        self._closed = False
        self._pid = os.getpid()
        #: Every changelist passed to control(), for tests that check them.
        self.changelists: list[list[kevent]] = []

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._closed

    def close(self) -> None:
        """Close the queue. Idempotent."""
        self._closed = True
        self._notes.clear()

    def control(
        self, changelist: Iterable[kevent] | None, max_events: int, timeout: float | None = None
    ) -> list[kevent]:
        """Apply *changelist*, then wait up to *timeout* for up to *max_events* events."""
        if self._closed:
            raise ValueError("I/O operation on closed kqueue object")
        if max_events < 0:
            raise ValueError(f"Length of eventlist must be 0 or positive, got {max_events}")
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be positive or None")
        changes = list(changelist) if changelist is not None else []
        for change in changes:
            if not isinstance(change, kevent):
                raise TypeError("changelist must be an iterable of select.kevent objects")
        if os.getpid() != self._pid:
            # Not inherited across fork(): the child's descriptor is dead.
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        self.changelists.append(changes)
        self._forget_closed()
        errors: list[kevent] = []
        for change in changes:
            err = self._apply(change)
            if err:
                if len(errors) >= max_events:
                    raise OSError(err, os.strerror(err))
                errors.append(
                    kevent(change.ident, change.filter, KQ_EV_ERROR, 0, err, change.udata)
                )
        if errors or max_events == 0:
            return errors
        return self._wait(max_events, timeout)

    def _forget_closed(self) -> None:
        """close(fd) removes the fd's notes: drop notes whose fd is not that file now."""
        for key, note in list(self._notes.items()):
            if _file_of(key[0]) != note.file:
                del self._notes[key]

    def _apply(self, change: kevent) -> int:
        """Apply one change; return an errno, or 0."""
        if change.flags & _UNSUPPORTED_FLAGS:
            raise NotImplementedError(f"the fake kqueue does not model flags {change.flags:#x}")
        if change.filter not in (KQ_FILTER_READ, KQ_FILTER_WRITE):
            raise NotImplementedError(f"the fake kqueue does not model filter {change.filter}")
        if change.fflags & ~(KQ_NOTE_LOWAT if change.filter == KQ_FILTER_READ else 0):
            raise NotImplementedError(f"the fake kqueue does not model fflags {change.fflags:#x}")
        file = _file_of(change.ident)
        if file is None:
            return errno.EBADF
        key = (change.ident, change.filter)
        note = self._notes.get(key)
        if change.flags & KQ_EV_DELETE:
            if note is None:
                return errno.ENOENT
            del self._notes[key]
            return 0
        if change.flags & KQ_EV_ADD:
            note = _Note(
                flags=change.flags & ~_ACTION_FLAGS,
                fflags=change.fflags,
                data=change.data,
                udata=change.udata,
                enabled=True,
                file=file,
            )
            self._notes[key] = note
        elif note is None:
            return errno.ENOENT
        if change.flags & KQ_EV_ENABLE:
            note.enabled = True
        if change.flags & KQ_EV_DISABLE:
            note.enabled = False
        return 0

    def _wait(self, max_events: int, timeout: float | None) -> list[kevent]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            masks: dict[int, int] = {}
            for (fd, flt), note in self._notes.items():
                if note.enabled:
                    bit = select.POLLIN | _POLLRDHUP if flt == KQ_FILTER_READ else select.POLLOUT
                    masks[fd] = masks.get(fd, 0) | bit
            pollobj = select.poll()
            for fd, mask in masks.items():
                pollobj.register(fd, mask)
            if deadline is None:
                wait_ms: float | None = None
            else:
                wait_ms = max(deadline - time.monotonic(), 0.0) * 1000.0
            # A note that does not fire on what poll() reports (EV_CLEAR
            # already reported, NOTE_LOWAT not reached, a regular file at
            # its end) would make poll() return at once for ever: sleep a
            # little between such rounds instead of spinning.
            revents = dict(pollobj.poll(wait_ms))
            result = self._collect(revents, max_events)
            if result or (deadline is not None and time.monotonic() >= deadline):
                return result
            if revents:
                time.sleep(0.001)

    def _collect(self, revents: dict[int, int], max_events: int) -> list[kevent]:
        result: list[kevent] = []
        for (fd, flt), note in list(self._notes.items()):
            bits = revents.get(fd, 0)
            if not note.enabled or not bits or len(result) >= max_events:
                continue
            flags = note.flags
            regular = _is_regular(fd)
            if flt == KQ_FILTER_READ and regular:
                # A vnode: readable while the offset is before the end.
                eof = 0
                data = _left_in_file(fd)
                fires = data > 0
            elif flt == KQ_FILTER_READ:
                eof = bits & (_POLLRDHUP | select.POLLHUP)
                pending = _ioctl_int(fd, termios.FIONREAD)
                data = (1 if bits & select.POLLIN else 0) if pending is None else pending
                if note.fflags & KQ_NOTE_LOWAT:
                    low = min(note.data, _recv_buffer_size(fd))
                    fires = bool(eof or bits & select.POLLERR or data >= max(low, 1))
                else:
                    fires = bool(eof or bits & (select.POLLIN | select.POLLERR))
            else:
                eof = 0 if regular else bits & (select.POLLHUP | select.POLLERR)
                fires = bool(bits & select.POLLOUT or eof)
                data = _send_space(fd)
            if not fires:
                note.reported = None
                continue
            fflags = 0 if flt == KQ_FILTER_READ and note.fflags & KQ_NOTE_LOWAT else note.fflags
            if eof or bits & select.POLLERR:
                error = socket_error(fd)
                if eof:
                    flags |= KQ_EV_EOF
                    fflags = error
            if note.flags & KQ_EV_CLEAR:
                state = (flags & KQ_EV_EOF, fflags, data)
                if note.reported == state:
                    continue  # already retrieved: reset until the state changes
                note.reported = state
            result.append(kevent(fd, flt, flags, fflags, data, note.udata))
            if note.flags & KQ_EV_ONESHOT:
                del self._notes[(fd, flt)]
        return result


def _is_regular(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def _left_in_file(fd: int) -> int:
    """Bytes from the file offset to the end of a regular file."""
    try:
        return max(os.fstat(fd).st_size - os.lseek(fd, 0, os.SEEK_CUR), 0)
    except OSError:
        return 0


def _recv_buffer_size(fd: int) -> int:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return 1 << 16  # a pipe: its usual capacity
    try:
        size: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    finally:
        sock.detach()
    return size
