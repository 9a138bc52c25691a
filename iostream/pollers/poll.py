"""The poll() backend (POSIX except macOS): :class:`PollPoller`.

poll()'s bits are the poller's own on every system that has it: POLLIN is
READ (0x001), POLLOUT is WRITE (0x004), POLLERR|POLLHUP is ERROR. Only
POLLIN and POLLOUT are asked for, so the kernel answers within
READ|WRITE|ERROR, plus POLLNVAL (0x020) for an fd that is not open — the one
bit :meth:`poll` has to look for. A hang-up or an error may come back as
only one of ERROR's two bits, so test it with ``events & ERROR``.

Not offered on macOS, where poll() has a history of bugs (it did not work
on devices at all, and has misreported on sockets and pipes); kqueue is the
native backend there and select the portable one.
"""

from __future__ import annotations

import select
import sys
from typing import Any, ClassVar

from iostream._platform import _MACOS
from iostream.pollers.base import ERROR, READ, WRITE, FdTablePoller, normalize_timeout

__all__ = ["PollPoller"]

_POLLNVAL: int = getattr(select, "POLLNVAL", 0x020)

# Our bits must be the kernel's for the list to pass through as is. They are
# on Linux, the BSDs, Solaris and AIX alike.
assert not hasattr(select, "poll") or (
    select.POLLIN == READ and select.POLLOUT == WRITE and select.POLLERR | select.POLLHUP == ERROR
)

#: What we ask the kernel for. POLLERR/POLLHUP/POLLNVAL are always reported.
_ASKABLE = READ | WRITE


class PollPoller(FdTablePoller):
    """poll(2). See the module docstring for the event bits and POLLNVAL."""

    name = "poll"

    #: True on macOS, where poll() is not offered (a test stand-in may set it).
    _macos: ClassVar[bool] = _MACOS

    @classmethod
    def _unavailable_reason(cls) -> str | None:
        if not hasattr(cls._select, "poll"):
            return f"select.poll does not exist on {sys.platform}"
        if cls._macos:
            return "poll() is unreliable on macOS (darwin), so it is not offered there"
        return None

    def _make(self) -> Any:
        return self._select.poll()

    def _kernel_open(self) -> None:
        self._pollobj: Any = self._make()

    def _kernel_close(self) -> None:
        close = getattr(self._pollobj, "close", None)  # select.poll has none
        if close is not None:
            close()
        self._pollobj = None

    def _kernel_register(self, fd: int, events: int) -> None:
        self._pollobj.register(fd, events & _ASKABLE)

    def _kernel_modify(self, fd: int, old: int, events: int) -> None:
        # select.poll's register() adds or replaces, so it also re-adds an fd
        # that poll() dropped after POLLNVAL (the caller asked for it again).
        self._pollobj.register(fd, events & _ASKABLE)

    def _kernel_unregister(self, fd: int, old: int) -> None:
        try:
            self._pollobj.unregister(fd)
        except (KeyError, OSError):
            # Already dropped after POLLNVAL, or closed (devpoll): the contract says
            # unregistering a closed fd is not an error.
            pass

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        """Wait up to *timeout* seconds (None: for ever; negative: 0) for events."""
        timeout = normalize_timeout(timeout)
        if timeout is not None:
            # poll() counts milliseconds; CPython rounds a fraction up, so a
            # short timeout does not turn into a busy 0.
            timeout = timeout * 1000.0
        try:
            events: list[tuple[int, int]] = self._pollobj.poll(timeout)
        except InterruptedError:
            # CPython retries EINTR itself (PEP 475); this only happens if a
            # signal handler raised it. The contract: an interrupted wait returns.
            return []
        except AttributeError:
            self._check_open()  # poll() on a closed poller: a clear ValueError
            raise
        for _fd, bits in events:
            if bits & _POLLNVAL:
                return self._drop_invalid(events)
        return events

    def _drop_invalid(self, events: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Report each POLLNVAL fd as ERROR once, and stop asking the kernel about it.

        Why: POLLNVAL means the fd is not open (closed while registered). The
        kernel reports it on every call, at once, for as long as the fd is in
        the set — left there, the loop spins, and a caller that maps unknown
        bits to READ would read a closed fd for ever. We tell the caller once
        (ERROR, so its handler closes the stream) and take the fd out of the
        kernel's set; the table keeps it, so ``unregister`` still works and a
        ``modify`` puts it back.
        """
        result: list[tuple[int, int]] = []
        for fd, bits in events:
            if bits & _POLLNVAL:
                try:
                    self._pollobj.unregister(fd)
                except (KeyError, OSError):
                    pass
                result.append((fd, ERROR))
            else:
                result.append((fd, bits))
        return result
