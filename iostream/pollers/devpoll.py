"""The /dev/poll backend (Solaris, illumos): :class:`DevpollPoller`.

It behaves as :class:`~iostream.pollers.poll.PollPoller` (same bits, same
POLLNVAL handling); only the kernel object differs. Unavailable elsewhere.
"""

from __future__ import annotations

import sys
from typing import Any

from iostream.pollers.poll import _ASKABLE, PollPoller

__all__ = ["DevpollPoller"]


class DevpollPoller(PollPoller):
    """Solaris /dev/poll, with poll()'s semantics."""

    name = "devpoll"
    # Why: a forked child inherits the /dev/poll fd but may not use it. poll(4D)
    # (illumos; poll(7D) on Solaris): "Any attempt to write or do ioctl by the
    # child process will result in an EACCES error. The child process should
    # close the inherited /dev/poll file descriptor and open its own".
    _reopen_after_fork = True
    # No _doorbell_fd, unlike epoll and kqueue: Solaris documents no poll
    # readiness for a /dev/poll fd itself, so FallbackPoller mirrors its fds.

    @classmethod
    def _unavailable_reason(cls) -> str | None:
        if not hasattr(cls._select, "devpoll"):
            return f"select.devpoll does not exist on {sys.platform} (it is Solaris only)"
        return None

    def _make(self) -> Any:
        # Why: a devpoll object sizes its result buffer from RLIMIT_NOFILE
        # when it is made; raising the limit later means poll() may return
        # only part of the ready fds (they come on the next call), lowering
        # it makes poll() fail. Make pollers after adjusting the limit.
        return self._select.devpoll()

    def _kernel_modify(self, fd: int, old: int, events: int) -> None:
        # Why not register() as for poll: writing an fd that is already in a
        # /dev/poll set ORs the new events into the old ones, so it cannot
        # drop WRITE. devpoll.modify() removes, then adds.
        self._pollobj.modify(fd, events & _ASKABLE)
