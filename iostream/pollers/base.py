"""The poller interface and the fd bookkeeping every backend shares.

A *poller* watches file descriptors and reports which are ready, in the
event bits :data:`READ`, :data:`WRITE` and :data:`ERROR`. It is the lowest of
the three layers (see ``docs/guarantees.md``): the :class:`~iostream.IOLoop` drives one,
and the streams never know which.

The layout follows ``Lib/selectors.py``: :class:`~iostream.pollers.Poller` is the small
abstract interface; :class:`FdTablePoller` keeps the table of registered fds
(what was asked for, and which Python object it came from) and implements
the rules that are the same on every backend; each backend module then only
says how it talks to its kernel, in ``_kernel_register``,
``_kernel_modify``, ``_kernel_unregister`` and ``poll``.

Test stand-ins: a backend takes everything it uses of the OS from class
attributes, and only from them — ``_select`` (the :mod:`select` module, or
a stand-in with the same names: ``tests/fake_kqueue.py`` for kqueue,
``tests/fake_winselect.py`` for Winsock's select) and the platform flags
``SelectPoller._windows`` and ``PollPoller._macos``. A test sets them with
``monkeypatch.setattr(Backend, "_select", stand_in)`` (or on a subclass)
before making a poller; that is the one way to inject one.
"""

from __future__ import annotations

import abc
import os
import select
import types
import weakref
from typing import Any, ClassVar, Protocol, TypeVar

__all__ = [
    "ALL_EVENTS",
    "ERROR",
    "MAX_TIMEOUT",
    "READ",
    "WRITE",
    "FdTablePoller",
    "FileDescriptorLike",
    "HasFileno",
    "Poller",
    "PollerUnavailable",
    "check_events",
    "fd_of",
    "kernel_object_fd",
    "normalize_timeout",
    "other_backends_hint",
]

#: The fd is readable, or the peer has closed (a read then returns b"").
READ = 0x001
#: The fd is writable; for a connecting socket, the connect has finished.
WRITE = 0x004
#: An error or a hang-up (EPOLLERR | EPOLLHUP). Reported whether or not it
#: was asked for, where the kernel can tell.
ERROR = 0x018

#: Every event bit a caller may ask for.
ALL_EVENTS = READ | WRITE | ERROR


class HasFileno(Protocol):
    """Anything with a ``fileno()`` method, such as a socket."""

    def fileno(self) -> int: ...


#: What a poller accepts as an fd: an ``int``, or an object with ``fileno()``.
FileDescriptorLike = int | HasFileno


class PollerUnavailable(RuntimeError):
    """The poller that was asked for does not exist on this platform."""


def fd_of(fileobj: FileDescriptorLike) -> int:
    """Return the integer fd of *fileobj* (an int, or an object with ``fileno()``).

    Raises :class:`TypeError` naming the argument for anything else and
    :class:`ValueError` for a negative fd (a closed socket's ``fileno()``).
    """
    if isinstance(fileobj, int) and not isinstance(fileobj, bool):
        fd = fileobj
    else:
        fileno = getattr(fileobj, "fileno", None)
        if fileno is None:
            raise TypeError(
                f"fd must be an int or an object with fileno(), not {type(fileobj).__name__}"
            )
        fd = fileno()
        if not isinstance(fd, int):
            raise TypeError(f"fd.fileno() must return an int, not {type(fd).__name__}")
    if fd < 0:
        raise ValueError(f"fd must be a non-negative file descriptor, got {fd} (closed socket?)")
    return fd


_PollerT = TypeVar("_PollerT", bound="Poller")

#: The longest wait one ``poll()`` call makes, in seconds: a longer timeout
#: (a timer 30 days or 30 years away) waits this long and returns with what
#: it has, possibly nothing. Why a cap: epoll_wait() and poll() take a C int
#: of milliseconds, which holds only 24.8 days (a longer one raises
#: OverflowError); asyncio caps its waits at 24 h too.
MAX_TIMEOUT = 86400.0


def normalize_timeout(timeout: float | None) -> float | None:
    """``poll``'s timeout as ``None`` (block) or seconds >= 0.

    A negative timeout means "do not wait" (0); one above
    :data:`MAX_TIMEOUT` is cut to it. Anything that is not a real
    number, and NaN, gets an error that names ``timeout``.
    """
    if timeout is None:
        return None
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
        raise TypeError(
            f"timeout must be a number of seconds or None, not {type(timeout).__name__}"
        )
    if timeout != timeout:
        raise ValueError("timeout must be a number of seconds or None, not NaN")
    if timeout > MAX_TIMEOUT:
        return MAX_TIMEOUT
    return timeout if timeout > 0 else 0.0


class Poller(abc.ABC):
    """The abstract poller: register fds with event masks, then wait.

    Pollers are made with no arguments and are context managers;
    :meth:`close` is idempotent.
    """

    #: The backend's name, as accepted by :func:`iostream.pollers.choose`.
    name: ClassVar[str] = ""

    @classmethod
    @abc.abstractmethod
    def available(cls) -> bool:
        """Return True if this backend can be used on this platform."""

    @abc.abstractmethod
    def register(self, fd: FileDescriptorLike, events: int) -> None:
        """Start watching *fd* for *events* (READ/WRITE bits; ERROR is implied).

        Raises :class:`FileExistsError` if *fd* is already registered and
        :class:`ValueError` if this backend cannot watch it.
        """

    @abc.abstractmethod
    def modify(self, fd: FileDescriptorLike, events: int) -> None:
        """Change the events watched on a registered *fd*.

        Raises :class:`FileNotFoundError` if *fd* is not registered. For an
        fd closed while registered the backends differ: epoll and kqueue
        raise :class:`OSError` (EBADF, their kernel is asked at once); poll,
        devpoll and select accept it and report the fd as ERROR at the next
        :meth:`poll`. Either way, :meth:`unregister` it.
        """

    @abc.abstractmethod
    def unregister(self, fd: FileDescriptorLike) -> None:
        """Stop watching *fd*.

        Raises :class:`FileNotFoundError` if it is not registered; an fd that
        was closed while registered is forgotten without error.
        """

    @abc.abstractmethod
    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        """Wait up to *timeout* seconds (``None``: for ever) for events.

        Returns ``(fd, events)`` pairs, at most one per fd. An interrupted
        wait (EINTR) returns normally, possibly with no events.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the kernel object. Idempotent."""

    def fileno_of(self, fd: FileDescriptorLike) -> int:
        """The fd number *fd* is registered under.

        Pollers that remember objects by identity (every backend here) find
        a socket closed while registered, and raise
        :class:`FileNotFoundError` for an fd that is not registered. This
        default, for pollers without such a table, is :func:`fd_of`.
        The :class:`~iostream.IOLoop` keeps no object table of its own: it
        asks its poller.
        """
        return fd_of(fd)

    # -- what FallbackPoller asks of its primary (iostream.pollers.fallback) --

    #: True once :meth:`close` has run.
    _closed: bool = False

    def _doorbell_fd(self) -> int | None:
        """The fd of this poller's kernel object, if that fd polls readable
        while the object holds events; else None (the default).

        FallbackPoller's secondary watches it as a doorbell for the primary.
        Only a backend whose kernel documents that readiness answers (epoll,
        kqueue); the others are heard through mirrors of their fds.
        """
        return None

    def _registered(self) -> dict[int, int] | None:
        """This poller's own table fd -> registered events, if it keeps one;
        else None (the default). The dict itself, for reading only:
        FallbackPoller mirrors it when the primary has no doorbell."""
        return None

    def __enter__(self: _PollerT) -> _PollerT:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


class _EventsTypeError(TypeError, ValueError):
    """``events`` was not an int. A TypeError, and also a ValueError, so that
    callers who treat every bad ``events`` argument alike can catch either."""


def check_events(events: int) -> int:
    """Return *events* if it is an int made only of READ/WRITE/ERROR bits.

    Raises a :class:`TypeError` (which is also a :class:`ValueError`) for a
    non-int and a :class:`ValueError` for unknown bits, both naming ``events``.
    """
    if not isinstance(events, int) or isinstance(events, bool):
        raise _EventsTypeError(
            f"events must be an int made of READ|WRITE|ERROR bits, not {type(events).__name__}"
        )
    if events & ~ALL_EVENTS:
        raise ValueError(
            f"events must be made of READ (0x001), WRITE (0x004) and ERROR (0x018) bits, "
            f"got {events:#x} (unknown bits {events & ~ALL_EVENTS:#x})"
        )
    return events


# Pollers whose kernel object must be re-created in a child after fork().
#
# Why: an epoll fd is a reference to one kernel object, and fork() copies the
# reference, not the object. A child that goes on using its copy adds and
# removes fds in the *parent's* interest set (and sees the parent's events):
# a child that unregisters an fd it inherited silently stops the parent from
# hearing about it. kqueue and /dev/poll are the opposite trap: the child
# cannot use what it inherits (kqueue is not inherited, every call fails
# with EBADF; /dev/poll's writes and ioctls fail with EACCES in the child,
# poll(4D)). Either way the fix is the same: in the child, open a fresh kernel
# object and re-register what the table says. We do it eagerly from an
# ``os.register_at_fork`` hook rather than comparing ``os.getpid()`` on every
# ``poll()``: the hook costs nothing per loop iteration, and a WeakSet keeps
# it from holding pollers alive.
_FORK_SENSITIVE: weakref.WeakSet[FdTablePoller] = weakref.WeakSet()


def _reopen_after_fork_in_child() -> None:
    for poller in list(_FORK_SENSITIVE):
        if not poller._closed:
            poller._reopen_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork()
    os.register_at_fork(after_in_child=_reopen_after_fork_in_child)


class FdTablePoller(Poller):
    """The fd bookkeeping every backend shares (``selectors._BaseSelectorImpl``).

    Holds the table fd -> events that were asked for, and for fds passed as
    objects, the object (by identity, so ``unregister(sock)`` works after
    ``sock.close()`` made ``sock.fileno()`` return -1). It enforces the rules
    the contract (docs/guarantees.md) gives for every backend:

    - ``register`` of a registered fd: :class:`FileExistsError`;
    - ``modify``/``unregister`` of an unknown fd: :class:`FileNotFoundError`;
    - ``unregister`` of an fd closed while registered: no error (the backend's
      ``_kernel_unregister`` swallows the kernel's complaint); ``modify`` of
      one is the backend's own (OSError at once, or ERROR at the next poll);
    - bad ``events``: :class:`ValueError`; a non-fd: :class:`TypeError`;
    - ``close()`` is idempotent; using a closed poller raises ValueError.

    A backend implements ``_kernel_open``, ``_kernel_close``,
    ``_kernel_register``, ``_kernel_modify``, ``_kernel_unregister`` and
    ``poll``, and says in ``_unavailable_reason`` why it cannot run here.
    The table is updated only after the kernel accepted a change, so a
    refused ``register`` leaves nothing behind.

    Events are stored as given; ERROR is always reported where the kernel can
    tell, so the backends pass only the READ/WRITE bits down.
    """

    #: True for backends whose kernel object is shared with (epoll, /dev/poll)
    #: or lost in (kqueue) a forked child; see ``_FORK_SENSITIVE``.
    _reopen_after_fork: ClassVar[bool] = False

    #: Where the backend's kernel calls come from: the ``select`` module, or
    #: a test stand-in with the same names (see the module docstring).
    _select: ClassVar[Any] = select

    def __init__(self) -> None:
        reason = self._unavailable_reason()
        if reason is not None:
            raise PollerUnavailable(f"the {self.name!r} poller cannot be used here: {reason}")
        #: fd -> the events registered for it.
        self._fd_events: dict[int, int] = {}
        #: fd -> the object it was registered as (only for non-int fds).
        self._fd_obj: dict[int, object] = {}
        #: id(object) -> fd, for the objects in ``_fd_obj`` (kept alive there,
        #: so an id cannot be reused while it is in this table).
        self._id_fd: dict[int, int] = {}
        self._closed = False
        self._kernel_open()
        if self._reopen_after_fork:
            _FORK_SENSITIVE.add(self)

    # -- what a backend provides ---------------------------------------------

    @classmethod
    def _unavailable_reason(cls) -> str | None:
        """Why this backend cannot run here, or None if it can."""
        return None

    @classmethod
    def available(cls) -> bool:
        """Return True if this backend can be used on this platform."""
        return cls._unavailable_reason() is None

    @classmethod
    def fd_limit(cls) -> int | None:
        """How many fds this backend can watch at once, or ``None`` when
        only the OS's own limits (RLIMIT_NOFILE) apply.

        For ``select`` on POSIX this bounds the fd *numbers* (FD_SETSIZE):
        no fd at or above it can be watched.
        """
        return None

    def _kernel_open(self) -> None:
        """Create the kernel object (called once by ``__init__``)."""

    def _kernel_close(self) -> None:
        """Release the kernel object (called once by ``close``)."""

    @abc.abstractmethod
    def _kernel_register(self, fd: int, events: int) -> None:
        """Add *fd* to the kernel's set; raise ValueError if it cannot be watched."""

    @abc.abstractmethod
    def _kernel_modify(self, fd: int, old: int, events: int) -> None:
        """Change the kernel's interest in registered *fd* from *old* to *events*."""

    @abc.abstractmethod
    def _kernel_unregister(self, fd: int, old: int) -> None:
        """Remove *fd* from the kernel's set; silent if it was closed meanwhile."""

    def _reopen_in_child(self) -> None:
        """In a forked child: a fresh kernel object holding the whole table.

        An fd the new object refuses (closed in the meantime) stays in the
        table, unwatched, so that ``unregister`` still works.
        """
        try:
            self._kernel_close()
        except OSError:
            pass
        self._kernel_open()
        for fd, events in self._fd_events.items():
            try:
                self._kernel_register(fd, events)
            except (OSError, ValueError):
                pass

    # -- the shared rules ----------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"I/O operation on a closed {self.name} poller")

    def _lookup(self, fd: FileDescriptorLike) -> int:
        """The registered fd for *fd*: by identity for objects, else by number."""
        self._check_open()
        if isinstance(fd, int) and not isinstance(fd, bool):
            fileno = fd
        else:
            known = self._id_fd.get(id(fd))
            if known is not None:
                return known
            try:
                fileno = fd_of(fd)
            except ValueError:
                # A closed socket (fileno() == -1) that was not registered by
                # identity: whatever fd it had, it is not in the table as this
                # object.
                raise FileNotFoundError(f"{fd!r} is not registered with this poller") from None
        if fileno not in self._fd_events:
            raise FileNotFoundError(f"fd {fileno} is not registered with this poller")
        return fileno

    def fileno_of(self, fd: FileDescriptorLike) -> int:
        """The fd number *fd* is registered under, an object by identity.

        Raises :class:`FileNotFoundError` if it is not registered.
        """
        return self._lookup(fd)

    def register(self, fd: FileDescriptorLike, events: int) -> None:
        """Start watching *fd* for *events* (ERROR is reported regardless).

        Raises :class:`FileExistsError` if *fd* is registered,
        :class:`ValueError` if this backend cannot watch it or *events* has
        unknown bits, :class:`TypeError` if *fd* is not an fd.
        """
        self._check_open()
        check_events(events)
        fileno = fd_of(fd)
        if fileno in self._fd_events:
            raise FileExistsError(f"fd {fileno} is already registered with this poller")
        self._kernel_register(fileno, events)
        self._fd_events[fileno] = events
        if not isinstance(fd, int):
            self._fd_obj[fileno] = fd
            self._id_fd[id(fd)] = fileno

    def modify(self, fd: FileDescriptorLike, events: int) -> None:
        """Change the events watched on registered *fd*.

        Raises :class:`FileNotFoundError` if *fd* is not registered; an fd
        closed while registered: see :meth:`Poller.modify`.
        """
        check_events(events)
        fileno = self._lookup(fd)
        self._kernel_modify(fileno, self._fd_events[fileno], events)
        self._fd_events[fileno] = events

    def unregister(self, fd: FileDescriptorLike) -> None:
        """Stop watching *fd*.

        Raises :class:`FileNotFoundError` if it is not registered; an fd
        closed while registered is forgotten without error.
        """
        fileno = self._lookup(fd)
        old = self._fd_events.pop(fileno)
        obj = self._fd_obj.pop(fileno, None)
        if obj is not None:
            del self._id_fd[id(obj)]
        self._kernel_unregister(fileno, old)

    def close(self) -> None:
        """Release the kernel object and forget every fd. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _FORK_SENSITIVE.discard(self)
        self._fd_events.clear()
        self._fd_obj.clear()
        self._id_fd.clear()
        self._kernel_close()

    def _registered(self) -> dict[int, int]:
        return self._fd_events

    def __len__(self) -> int:
        """How many fds are registered."""
        return len(self._fd_events)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fds={len(self._fd_events)}"
        return f"<{type(self).__name__} {state}>"


def other_backends_hint(refusing: str) -> str:
    """Name the backends available here other than *refusing*, for error messages."""
    from iostream.pollers import available  # late: the package imports this module

    others = [name for name in available() if name != refusing]
    if not others:
        return "no other poller is available on this platform"
    return "use " + " or ".join(repr(name) for name in others)


def kernel_object_fd(kernel_object: object) -> int | None:
    """``kernel_object.fileno()`` if it has one and is open, else None
    (a closed object, or a test's stand-in for the kernel module)."""
    fileno = getattr(kernel_object, "fileno", None)
    if not callable(fileno):
        return None
    try:
        fd = fileno()
    except (OSError, ValueError):
        return None  # closed
    return fd if isinstance(fd, int) and fd >= 0 else None
