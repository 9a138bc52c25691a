"""The epoll backend (Linux): :class:`EpollPoller`.

epoll's event bits are the poller's own: READ is EPOLLIN (0x001), WRITE is
EPOLLOUT (0x004), ERROR is EPOLLERR|EPOLLHUP (0x008|0x010). Only EPOLLIN and
EPOLLOUT are ever asked for (never EPOLLPRI, EPOLLRDHUP or EPOLLET), so the
kernel can only answer with bits inside READ|WRITE|ERROR, and :meth:`poll`
hands back the kernel's list as it is: no per-event Python work. A hang-up
or an error may come back as only one of ERROR's two bits, so test it with
``events & ERROR``.
"""

from __future__ import annotations

import errno
import os
import select
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

__all__ = ["EpollPoller"]

# The poller's bits must be the kernel's for the list to pass through as is.
assert not hasattr(select, "epoll") or (
    select.EPOLLIN == READ
    and select.EPOLLOUT == WRITE
    and select.EPOLLERR | select.EPOLLHUP == ERROR
)

#: What we ask the kernel for: READ and WRITE only. ERROR (EPOLLERR and
#: EPOLLHUP) is always reported by epoll, asked for or not.
_ASKABLE = READ | WRITE


class EpollPoller(FdTablePoller):
    """Level-triggered epoll. See the module docstring for the event bits."""

    name = "epoll"
    _reopen_after_fork = True

    @classmethod
    def _unavailable_reason(cls) -> str | None:
        if not hasattr(cls._select, "epoll"):
            return f"select.epoll does not exist on {sys.platform} (it is Linux only)"
        return None

    def _kernel_open(self) -> None:
        # select.epoll() sets EPOLL_CLOEXEC, so exec'd children do not
        # inherit it; forked ones do, which _reopen_after_fork handles.
        self._epoll: Any = self._select.epoll()
        # The fds whose unregister could not reach the kernel (the fd was
        # already closed): see _kernel_unregister and _drop_ghosts.
        self._ghost_fds: set[int] = set()

    def _kernel_close(self) -> None:
        self._epoll.close()

    def _doorbell_fd(self) -> int | None:
        # Linux implements poll on an epoll fd (readable while its ready
        # list is not empty: that is how epoll sets nest). The fd changes
        # after fork() and after a ghost forces a rebuild: ask each time.
        return kernel_object_fd(self._epoll)

    def _kernel_register(self, fd: int, events: int) -> None:
        # A new file under a ghost's number: from here on its events are
        # this fd's (see _drop_ghosts for the limit of this).
        self._ghost_fds.discard(fd)
        try:
            self._epoll.register(fd, events & _ASKABLE)
        except PermissionError:
            # EPERM: the file has no poll support. Regular files and
            # directories (always ready: nothing to wait for), and some
            # devices (/dev/null).
            raise ValueError(
                f"epoll cannot watch fd {fd} ({_refused_kind(fd)}); use 'poll' or 'select' for it"
            ) from None
        except FileExistsError:
            # EEXIST while our table says "not registered": the kernel still
            # holds an entry for this fd number from a registration we
            # dropped when its fd had been closed but its file lived on (see
            # _kernel_unregister). The caller means this fd now: take over.
            self._epoll.modify(fd, events & _ASKABLE)

    def _kernel_modify(self, fd: int, old: int, events: int) -> None:
        try:
            self._epoll.modify(fd, events & _ASKABLE)
        except FileNotFoundError:
            # ENOENT while our table says "registered": the fd was closed
            # (which removed it from the epoll set) and its number reused by
            # a new file. The table is the truth the caller sees, so add it.
            self._epoll.register(fd, events & _ASKABLE)

    def _kernel_unregister(self, fd: int, old: int) -> None:
        try:
            self._epoll.unregister(fd)
        except (FileNotFoundError, OSError) as exc:
            if not isinstance(exc, FileNotFoundError) and exc.errno != errno.EBADF:
                raise
            # The fd was closed while registered: EBADF (number free) or
            # ENOENT (number reused by a file we never registered). the contract says
            # this is not an error.
            #
            # Why the ghost check: epoll's interest list is keyed on the
            # *file description* (and the fd number), not the fd number
            # alone, and close(fd) removes the entry only when it was the
            # last reference to that file. If the socket was dup()ed, or a
            # forked child still holds it, the entry survives, keeps
            # reporting under the old number, and can no longer be removed
            # through any fd we have (EPOLL_CTL_DEL needs a live fd). Left
            # alone, a level-triggered ghost makes every poll() return at
            # once: a busy loop. So until the number is registered again,
            # poll() drops events for fds not in the table, and if one ever
            # shows up, rebuilds the epoll object from the table (that, and
            # only that, gets rid of a ghost). Unregister before closing to
            # keep poll() on its fast path.
            self._ghost_fds.add(fd)

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        """Wait up to *timeout* seconds (None: for ever; negative: 0) for events.

        Returns the kernel's ``(fd, events)`` list as it is: the bits already
        are READ/WRITE/ERROR.
        """
        timeout = normalize_timeout(timeout)
        try:
            # maxevents: select.epoll.poll defaults to FD_SETSIZE - 1 (1023), so
            # with more fds ready than that the rest would wait for the next
            # call; ask for as many as are registered (selectors does the same).
            events: list[tuple[int, int]] = self._epoll.poll(
                -1.0 if timeout is None else timeout, max(len(self._fd_events), 1)
            )
        except InterruptedError:
            # CPython retries EINTR itself (PEP 475) and only lets it out if
            # a signal handler raised InterruptedError; the contract says an
            # interrupted wait returns normally.
            return []
        if self._ghost_fds:
            return self._drop_ghosts(events)
        return events

    def _drop_ghosts(self, events: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Filter out fds not in the table; rebuild the kernel set if any were.

        The limit: a ghost whose number is registered again before it shows
        up reports under the new fd (a spurious event, as after any fd
        reuse); rebuilding at every such register instead would make
        "close, then unregister" cost O(fds) per connection.
        """
        table = self._fd_events
        kept = [pair for pair in events if pair[0] in table]
        if len(kept) != len(events):
            # A ghost entry (see _kernel_unregister): only a new epoll object
            # is free of it.
            self._reopen_in_child()
        return kept

    def _reopen_in_child(self) -> None:
        # Also used to rebuild after a ghost: a fresh epoll has none.
        super()._reopen_in_child()
        self._ghost_fds.clear()


def _refused_kind(fd: int) -> str:
    """What epoll refused, by its file type: the words its ValueError uses."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return "a file that does not support epoll"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return "a regular file or directory: always ready"
    kind = (
        "a character device"
        if stat.S_ISCHR(mode)
        else "a block device"
        if stat.S_ISBLK(mode)
        else "a special file"
    )
    return f"{kind} that does not support epoll"
