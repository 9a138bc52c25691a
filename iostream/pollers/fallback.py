"""Per-fd fallback: :class:`FallbackPoller`, a poller that never crashes on an fd it can watch.

Each backend refuses some fds that another backend on the same OS watches
fine (docs/pollers.md, "Per-fd fallback"):

- Linux epoll refuses regular files and directories with EPERM (they are
  always ready, so epoll sees nothing to wait for), and also character
  devices with no poll support such as ``/dev/null``;
- macOS kqueue refuses ``/dev/tty`` and some other character devices with
  EINVAL (the tty driver has no kqueue filter); ``select()`` watches them;
- POSIX ``select()`` cannot hold an fd >= FD_SETSIZE (1024) in its fd_set.

:class:`FallbackPoller` wraps the chosen poller (the *primary*). Every fd
goes to the primary first; only an fd the primary refuses is watched
another way, and every other fd stays on the primary:

- a regular file or directory is *always ready*: it is reported with
  exactly the READ/WRITE bits it was registered for, on every ``poll``, as
  poll() and select() report it, without a kernel call;
- any other refused fd goes to a *secondary* backend that accepts it (by
  default poll, else select; never the primary's own kind).

The combined wait
-----------------
Waiting in the primary and then in the secondary would starve one side for
the other's whole timeout; alternating short waits would be a busy loop.
So exactly one kernel call blocks, in the secondary, and it is made to
hear the primary too (a *doorbell*):

- a primary with a kernel object (epoll, kqueue) has an fd that is
  readable while that object holds events; the secondary watches that
  one fd. When it rings, ``primary.poll(0)`` collects the events. The
  kernel fd is re-read before each wait: epoll's is replaced after fork()
  and when a "ghost" entry forces a rebuild. A kernel fd that keeps
  ringing with nothing behind it (8 times in a row) is dropped for the
  mirror below, rather than left to spin the loop. (A primary gives that
  fd through ``Poller._doorbell_fd``, declared in the base with the
  primary's table, ``Poller._registered``, and ``Poller._closed``: the
  three things asked of a primary.)
- a primary with no such fd (select, poll; /dev/poll, whose fd Solaris
  does not document as pollable) cannot ring anything, so the secondary
  also watches a *mirror* of each primary fd (the primary's own table,
  synced before a wait when it changed), for READ and WRITE as
  registered; an fd registered for ERROR alone is mirrored with no
  events, which poll() still wakes for on an error or a hang-up. When a
  mirror rings, ``primary.poll(0)`` gives the primary's own verdict, so
  its fds keep the primary's semantics (select's "hang-up is READ", its
  EBADF recovery). A mirror that rings while the
  primary reports nothing for it (poll sees a hang-up on an fd only
  watched for WRITE, which select never reports) is muted until that fd is
  registered or modified again: otherwise it would wake every wait at once.

An always-ready file with READ or WRITE interest makes the wait a
non-blocking one (timeout 0), since there is already something to report.

Cost table (n = fds on the primary, k = fds that fell back)

================================  =========================================
nothing fell back                 ``poll`` is one dict test and a call to
                                  the primary's ``poll``; register, modify
                                  and unregister go straight to the primary
                                  (a fallback-table check only once an fd
                                  fell back). No secondary exists.
only regular files fell back      one primary wait per ``poll`` (timeout 0
                                  while a file has interest) plus O(k) to
                                  list the files.
epoll/kqueue + devices            each wait is a poll()/select() over k+1
                                  fds; when the primary has events, one
                                  more ``epoll_wait``/``kevent`` with
                                  timeout 0: two system calls instead of
                                  one per busy iteration.
select + fds >= FD_SETSIZE        each wait is a poll() over n+k fds
(-> poll); devpoll + devices      (O(n), as select's own call is) plus the
                                  primary's ``poll(0)`` when one of its fds
                                  is ready; O(n) to resync the mirror after
                                  the primary's fd set changed.
================================  =========================================

Measured (``poll(0)``, one ready fd, CPython 3.11 on a shared 2-core Linux
VM, so +-30%): epoll 0.9 us alone, 1.0-1.5 us through the wrapper with
nothing fallen back, 3.4 us with a device fallen back (1.9 us when nothing
is ready); select over 101 fds 9 us through the wrapper, 21 us with an fd
>= FD_SETSIZE on poll. ``modify`` on epoll: 2.0 us alone, 2.2 us through
the wrapper.

When the last fallback fd is unregistered, the secondary is closed and
``poll`` delegates straight to the primary again.

Not covered: a primary with neither a kernel fd nor an fd table (a
third-party :class:`Poller`) cannot be combined with a secondary, so its
refusals stand; an fd that every candidate refuses keeps the primary's
error (as a :class:`ValueError`). ``ENOSPC`` (epoll's ``max_user_watches``
reached) and ``ENOMEM`` are resource limits, not refusals: they are raised.
An always-ready file closed while registered keeps being reported until
it is unregistered (poll would report it once, as POLLNVAL).

:attr:`FallbackPoller.fallbacks` says which fds fell back and why, for
``python -m iostream info`` and ``doctor``.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Sequence

from iostream.pollers.base import (
    READ,
    WRITE,
    FileDescriptorLike,
    Poller,
    PollerUnavailable,
    check_events,
    fd_of,
    normalize_timeout,
)
from iostream.pollers.poll import PollPoller
from iostream.pollers.select_ import SelectPoller

__all__ = ["FallbackPoller", "default_secondaries", "with_fallback"]

#: The READ/WRITE bits: what an always-ready file reports, what a mirror watches.
_RW = READ | WRITE

#: errnos a backend raises (as OSError) for an fd it cannot watch, rather
#: than for a bad or closed fd. EINVAL: macOS kqueue on /dev/tty and some
#: character devices (no kqueue filter in their driver). EPERM: epoll on a
#: regular file, a directory, or a device with no poll support (when the
#: backend does not translate it to ValueError itself). ENODEV, EOPNOTSUPP,
#: ENOTSUP: "this file does not do readiness" on some BSDs.
_REFUSAL_ERRNOS = frozenset(
    {
        errno.EINVAL,
        errno.EPERM,
        errno.ENODEV,
        errno.EOPNOTSUPP,
        getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
    }
)


#: Where a fallback is logged (at DEBUG: it is handled, nothing to act on).
log = logging.getLogger("iostream.pollers")

#: Empty doorbell rings in a row before the mirror path replaces the doorbell.
_MAX_EMPTY_RINGS = 8


def default_secondaries(primary_name: str) -> list[type[Poller]]:
    """The backends tried, in order, for an fd a *primary_name* poller refuses.

    poll, then select: neither has a kernel object to share or reopen, and
    between them they watch any fd this OS can watch (poll is not offered on
    macOS, where select takes ttys). The primary's own kind is left out.
    """
    candidates: list[type[Poller]] = [PollPoller, SelectPoller]
    return [cls for cls in candidates if cls.name != primary_name and cls.available()]


def with_fallback(poller: Poller) -> FallbackPoller:
    """*poller* with per-fd fallback: itself if it is a FallbackPoller, else wrapped.

    For code that wraps whatever poller it is given (the IOLoop, the asyncio
    selector): a caller who already passed a FallbackPoller keeps it, with
    its own *secondaries*, instead of getting a TypeError for wrapping twice.
    """
    if isinstance(poller, FallbackPoller):
        return poller
    return FallbackPoller(poller)


def _is_plain_file(fd: int) -> bool:
    """True if *fd* is a regular file or a directory (always ready for I/O)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False  # closed, or not a file at all (a Windows socket)
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


class FallbackPoller(Poller):
    """A :class:`Poller` over *primary* that watches the fds it refuses another way.

    ``FallbackPoller(EpollPoller())`` behaves as the epoll poller, with the
    same contract (``FileExistsError``, ``FileNotFoundError``, identity of
    objects, unregister after close, idempotent ``close``), except that an
    fd the primary refuses is not an error when another backend can watch
    it: see the module docstring for how, and what it costs. :attr:`name`
    is the primary's; :attr:`primary` is the wrapped poller (closed by
    :meth:`close`).

    *secondaries* is the list of backend classes tried, in order, for a
    refused fd that is not a regular file; the default is
    :func:`default_secondaries` (poll, then select, other than the
    primary's kind). An fd that every candidate refuses is refused with a
    :class:`ValueError` naming the primary's reason.
    """

    def __init__(
        self, primary: Poller, *, secondaries: Sequence[type[Poller]] | None = None
    ) -> None:
        if not isinstance(primary, Poller):
            raise TypeError(f"primary must be a Poller instance, not {type(primary).__name__}")
        if isinstance(primary, FallbackPoller):
            raise TypeError("primary is already a FallbackPoller; wrap the poller it wraps")
        if secondaries is None:
            secondaries = default_secondaries(primary.name)
        else:
            secondaries = list(secondaries)
            for cls in secondaries:
                if not (isinstance(cls, type) and issubclass(cls, Poller)):
                    raise TypeError(f"secondaries must be Poller classes, got {cls!r}")
        self._primary = primary
        self._secondaries: list[type[Poller]] = list(secondaries)
        self._closed = False
        #: fd -> why it fell back; empty while every fd is on the primary.
        self._fallbacks: dict[int, str] = {}
        #: Always-ready files: fd -> registered events.
        self._files: dict[int, int] = {}
        #: Fds watched by the secondary (the waiter) for the caller.
        self._devices: set[int] = set()
        #: id(object) -> fd and fd -> object, for fallback fds passed as
        #: objects (so unregister(sock) works after sock.close()).
        self._fb_ids: dict[int, int] = {}
        self._fb_objs: dict[int, FileDescriptorLike] = {}
        #: The secondary poller, while some device fell back.
        self._waiter: Poller | None = None
        #: The primary's kernel fd, as registered in the waiter (doorbell mode).
        self._doorbell: int | None = None
        #: Doorbell rings in a row with nothing behind them (see _wait_both).
        self._empty_rings = 0
        #: Mirror mode: fd -> events mirrored into the waiter; None otherwise.
        self._mirror: dict[int, int] | None = None
        self._mirror_dirty = False
        #: Mirror fds that rang without the primary reporting them.
        self._muted: set[int] = set()

    # -- what it is --------------------------------------------------------------

    # The primary's name, per instance (Poller.name is a class attribute).
    @property
    def name(self) -> str:  # type: ignore[override]
        """The primary's name: this is that poller, with per-fd fallback."""
        return self._primary.name

    @classmethod
    def available(cls) -> bool:
        """Always True: it runs wherever its primary does."""
        return True

    @property
    def primary(self) -> Poller:
        """The wrapped poller, which watches every fd it accepts."""
        return self._primary

    @property
    def fallbacks(self) -> dict[int, str]:
        """The fds watched another way now, each with why (a copy; empty: none)."""
        return dict(self._fallbacks)

    @property
    def wait_mode(self) -> str:
        """How ``poll`` waits now (see the module docstring).

        ``"direct"``: nothing fell back, the primary's ``poll`` is called;
        ``"files"``: only always-ready files fell back; ``"doorbell"``: the
        secondary waits, and watches the primary's kernel fd; ``"mirror"``:
        the secondary waits, and watches a mirror of the primary's fds.
        """
        if self._waiter is not None:
            return "mirror" if self._mirror is not None else "doorbell"
        return "files" if self._files else "direct"

    @property
    def secondary(self) -> Poller | None:
        """The secondary poller watching refused devices, or None when there is none."""
        return self._waiter

    # -- registration ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"I/O operation on a closed {self.name} poller")

    def _find_fallback(self, fd: FileDescriptorLike) -> int | None:
        """The fallback fd *fd* names, or None (then it is the primary's business)."""
        if isinstance(fd, int) and not isinstance(fd, bool):
            return fd if fd in self._fallbacks else None
        known = self._fb_ids.get(id(fd))
        if known is not None:
            return known
        try:
            fileno = fd_of(fd)
        except (TypeError, ValueError):
            return None  # the primary raises the right error for it
        return fileno if fileno in self._fallbacks else None

    def fileno_of(self, fd: FileDescriptorLike) -> int:
        """The fd number *fd* is registered under, wherever it is watched.

        An object is found by identity (so a socket closed while registered
        is still found), on the primary or among the fallback fds; raises
        :class:`FileNotFoundError` where the primary does for an fd that is
        not registered.
        """
        if self._fallbacks:
            fileno = self._find_fallback(fd)
            if fileno is not None:
                return fileno
        return self._primary.fileno_of(fd)

    def register(self, fd: FileDescriptorLike, events: int) -> None:
        """Start watching *fd* for *events*, on the primary if it accepts it.

        If the primary refuses it (ValueError, or an OSError such as macOS
        kqueue's EINVAL for a tty), a regular file or directory is watched
        as always ready, and anything else by a secondary backend. Raises
        :class:`FileExistsError` if *fd* is registered (either way), and a
        :class:`ValueError` naming the primary's reason if nothing here can
        watch it.
        """
        self._check_open()
        if self._fallbacks:
            fileno = self._find_fallback(fd)
            if fileno is not None:
                check_events(events)
                raise FileExistsError(f"fd {fileno} is already registered with this poller")
        try:
            self._primary.register(fd, events)
        except FileExistsError:
            raise
        except (ValueError, OSError) as exc:
            # The happy path does no checks of its own; here, find out whether
            # this was a refusal of the fd or a bad argument.
            check_events(events)  # raises the primary's kind of error itself
            fileno = fd_of(fd)
            if isinstance(exc, OSError) and exc.errno not in _REFUSAL_ERRNOS:
                raise
            if self._primary._closed:
                raise
            self._fall_back(fd, fileno, events, exc)
            return
        if self._mirror is not None:
            self._primary_changed(fd)

    def modify(self, fd: FileDescriptorLike, events: int) -> None:
        """Change the events watched on registered *fd*, wherever it is watched.

        If the primary refuses the change for this fd (kqueue adds a filter
        at the first ``modify`` that asks for WRITE, and a device may have no
        such filter), the fd moves to where ``register`` would have sent it. Raises
        :class:`FileNotFoundError` if *fd* is not registered.
        """
        if self._fallbacks:
            fileno = self._find_fallback(fd)
            if fileno is not None:
                self._check_open()
                check_events(events)
                if fileno in self._files:
                    self._files[fileno] = events
                else:
                    assert self._waiter is not None
                    self._waiter.modify(fileno, events)
                return
        try:
            self._primary.modify(fd, events)
        except FileNotFoundError:
            raise
        except (ValueError, OSError) as exc:
            self._move_out(fd, events, exc)
            return
        if self._mirror is not None:
            self._primary_changed(fd)

    def _move_out(self, fd: FileDescriptorLike, events: int, exc: BaseException) -> None:
        """The primary refused a ``modify``: watch *fd* another way from now on.

        Why: kqueue adds its filters one at a time, as they are first asked
        for (EVFILT_READ for READ or ERROR, EVFILT_WRITE for WRITE), so a
        device whose driver has one filter but not the other is accepted at
        ``register`` and refused (EINVAL) at the ``modify`` that adds the
        other. The fd leaves the primary (its old events are restored there
        if nothing else can watch it either) and goes where ``register``
        would have sent it.
        """
        check_events(events)
        if isinstance(exc, OSError) and exc.errno not in _REFUSAL_ERRNOS:
            raise exc
        try:
            fileno = fd_of(fd)
        except ValueError:
            raise exc from None  # a closed object: nothing to move
        old = (self._primary._registered() or {}).get(fileno)
        if old is None or self._primary._closed:
            raise exc
        self._primary.unregister(fd)
        if self._mirror is not None:
            self._primary_changed(fileno)
        try:
            self._fall_back(fd, fileno, events, exc)
        except BaseException:
            self._primary.register(fd, old)
            raise

    def unregister(self, fd: FileDescriptorLike) -> None:
        """Stop watching *fd*, wherever it is watched.

        Raises :class:`FileNotFoundError` if it is not registered; an fd
        closed while registered is forgotten without error. When the last
        fallback fd goes, the secondary is closed.
        """
        if self._fallbacks:
            fileno = self._find_fallback(fd)
            if fileno is not None:
                self._check_open()
                self._forget(fileno)
                return
        self._primary.unregister(fd)
        if self._mirror is not None:
            self._primary_changed(fd)

    def _primary_changed(self, fd: FileDescriptorLike) -> None:
        """A primary fd changed in mirror mode: resync before the next wait."""
        self._mirror_dirty = True
        if isinstance(fd, int):
            self._muted.discard(fd)
        else:
            try:
                self._muted.discard(fd_of(fd))
            except (TypeError, ValueError):
                pass  # a closed object: a stale mute only matters for a reuse,
                # and registering the reused number unmutes it

    # -- falling back ----------------------------------------------------------------

    def _fall_back(
        self, fd: FileDescriptorLike, fileno: int, events: int, exc: BaseException
    ) -> None:
        """Watch *fd*, which the primary refused with *exc*, another way."""
        why = f"{self.name} refused it ({exc})"
        if _is_plain_file(fileno):
            self._files[fileno] = events
            route = "a regular file or directory: always ready, reported without waiting"
        else:
            waiter = self._waiter
            if waiter is None:
                waiter = self._start_waiter(fd, fileno, events, exc)
            else:
                if self._mirror_dirty:
                    # The mirror may still hold this number for a primary fd
                    # unregistered (and closed) since the last wait.
                    table = self._primary._registered()
                    assert table is not None
                    self._sync_mirror(table)
                try:
                    waiter.register(fd, events)
                except (ValueError, OSError) as exc2:
                    raise ValueError(
                        f"cannot watch fd {fileno}: {why}, and so did {waiter.name} ({exc2})"
                    ) from exc
            self._devices.add(fileno)
            route = f"watched by {waiter.name}"
        self._fallbacks[fileno] = f"{why}; {route}"
        log.debug("fd %d falls back: %s", fileno, self._fallbacks[fileno])
        if not isinstance(fd, int):
            self._fb_ids[id(fd)] = fileno
            self._fb_objs[fileno] = fd

    def _start_waiter(
        self, fd: FileDescriptorLike, fileno: int, events: int, exc: BaseException
    ) -> Poller:
        """Make the secondary, holding *fd* and the primary's doorbell."""
        kernel_fd = self._primary._doorbell_fd()
        table = self._primary._registered() if kernel_fd is None else None
        if kernel_fd is None and table is None:
            raise ValueError(
                f"cannot watch fd {fileno}: {self.name} refused it ({exc}), and a "
                f"{type(self._primary).__name__} exposes neither a kernel fd nor an fd "
                "table to combine its wait with another backend's"
            ) from exc
        refusals: list[str] = []
        for cls in self._secondaries:
            try:
                waiter = cls()
            except PollerUnavailable as unavailable:
                refusals.append(f"{cls.name}: {unavailable}")
                continue
            try:
                waiter.register(fd, events)
                if kernel_fd is not None:
                    waiter.register(kernel_fd, READ)
                self._waiter = waiter
                self._doorbell = kernel_fd
                if table is not None:
                    self._mirror = {}
                    self._sync_mirror(table)
            except (ValueError, OSError) as exc2:
                self._waiter = None
                self._doorbell = None
                self._mirror = None
                waiter.close()
                refusals.append(f"{cls.name}: {exc2}")
                continue
            return waiter
        tried = "; ".join(refusals) if refusals else "no other backend here"
        raise ValueError(
            f"cannot watch fd {fileno}: {self.name} refused it ({exc}), and so did {tried}"
        ) from exc

    def _forget(self, fileno: int) -> None:
        """Unregister fallback fd *fileno*; close the secondary if it was the last."""
        del self._fallbacks[fileno]
        obj = self._fb_objs.pop(fileno, None)
        if obj is not None:
            del self._fb_ids[id(obj)]
        if fileno in self._files:
            del self._files[fileno]
            return
        self._devices.discard(fileno)
        waiter = self._waiter
        assert waiter is not None
        waiter.unregister(obj if obj is not None else fileno)
        if not self._devices:
            self._stop_waiter()

    def _stop_waiter(self) -> None:
        waiter = self._waiter
        self._waiter = None
        self._doorbell = None
        self._empty_rings = 0
        self._mirror = None
        self._mirror_dirty = False
        self._muted.clear()
        if waiter is not None:
            waiter.close()

    # -- the combined wait ---------------------------------------------------------------

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        """Wait up to *timeout* seconds (None: for ever) for events on every fd.

        With no fallback fd this is the primary's ``poll``. Otherwise one wait
        covers the primary's fds and the fallback fds (see the module
        docstring); at most one pair per fd, as always.
        """
        if not self._fallbacks:
            return self._primary.poll(timeout)
        return self._poll_combined(timeout)

    def _poll_combined(self, timeout: float | None) -> list[tuple[int, int]]:
        self._check_open()
        timeout = normalize_timeout(timeout)
        ready_files = [(fd, events & _RW) for fd, events in self._files.items() if events & _RW]
        if ready_files:
            timeout = 0.0  # something to report already: do not block
        waiter = self._waiter
        if waiter is None:
            result = self._primary.poll(timeout)
        else:
            result = self._wait_both(waiter, timeout)
        if ready_files:
            result = [*result, *ready_files]
        return result

    def _wait_both(self, waiter: Poller, timeout: float | None) -> list[tuple[int, int]]:
        """Block in the secondary, which also hears the primary; collect both."""
        if self._mirror is None:
            self._sync_doorbell(waiter)
        elif self._mirror_dirty:
            table = self._primary._registered()
            assert table is not None
            self._sync_mirror(table)
        devices = self._devices
        result: list[tuple[int, int]] = []
        rang: list[int] = []
        for fd, events in waiter.poll(timeout):
            if fd in devices:
                result.append((fd, events))
            else:
                rang.append(fd)  # the primary's kernel fd, or a mirror
        if rang:
            inner = self._primary.poll(0)
            result.extend(inner)
            if self._mirror is not None:
                self._mute_unconfirmed(rang, inner)
            elif inner:
                self._empty_rings = 0
            else:
                self._empty_ring(waiter)
            if self._mirror is None:
                # epoll may have rebuilt itself in that call (a ghost entry):
                # follow its new fd now, before the old number can be reused.
                self._sync_doorbell(waiter)
        return result

    def _empty_ring(self, waiter: Poller) -> None:
        """The kernel fd rang and the primary had nothing: distrust it if it goes on.

        Why: an epoll fd is readable only while its ready list holds an fd
        that is still ready, and a kqueue fd only while an event would be
        delivered, so a ring with nothing behind it happens once in a while
        (epoll dropping a ghost entry) but never for ever. If it ever did —
        a kernel whose kqueue fd stays readable for an EV_CLEAR event
        already retrieved — every wait would return at once: a busy loop.
        After :data:`_MAX_EMPTY_RINGS` empty rings in a row the doorbell is
        dropped for the mirror path, which mutes what rings for nothing.
        """
        self._empty_rings += 1
        if self._empty_rings < _MAX_EMPTY_RINGS or self._primary._registered() is None:
            return
        if self._doorbell is not None:
            waiter.unregister(self._doorbell)
        self._doorbell = None
        self._empty_rings = 0
        self._mirror = {}
        self._mirror_dirty = True
        log.debug(
            "the %s poller's fd rang %d times in a row with no event: "
            "watching a mirror of its fds instead",
            self.name,
            _MAX_EMPTY_RINGS,
        )

    def _sync_doorbell(self, waiter: Poller) -> None:
        """Ring on the primary's current kernel fd.

        epoll and kqueue are reopened after fork() (and epoll when a ghost
        entry forces a rebuild): the fd to watch may have changed.
        """
        kernel_fd = self._primary._doorbell_fd()
        if kernel_fd != self._doorbell:
            if self._doorbell is not None:
                waiter.unregister(self._doorbell)
            self._doorbell = kernel_fd
            if kernel_fd is not None:
                waiter.register(kernel_fd, READ)

    def _sync_mirror(self, table: dict[int, int]) -> None:
        """Make the waiter's mirror of the primary's fds match *table*."""
        waiter = self._waiter
        mirror = self._mirror
        assert waiter is not None and mirror is not None
        muted = self._muted
        # Every fd, also one registered for ERROR alone (mirrored with no
        # events: poll() still reports its errors and hang-ups, so an idle
        # stream's reset wakes the wait; select() then watches nothing).
        want = {fd: ev & _RW for fd, ev in table.items() if fd not in muted}
        for fd in [fd for fd in mirror if want.get(fd) is None]:
            del mirror[fd]
            waiter.unregister(fd)
        for fd, events in want.items():
            old = mirror.get(fd)
            if old is None:
                waiter.register(fd, events)
                mirror[fd] = events
            elif old != events:
                waiter.modify(fd, events)
                mirror[fd] = events
        self._mirror_dirty = False

    def _mute_unconfirmed(self, rang: list[int], inner: list[tuple[int, int]]) -> None:
        """Mute mirrors that rang while the primary reported nothing for them.

        Why: poll() reports POLLHUP/POLLERR on any fd it holds, asked for or
        not; select() reports a hang-up only in the read set. A mirror of an
        fd select watches for WRITE alone would ring at once on every wait,
        for an event select will never confirm: a busy loop. Level-triggered
        readiness is re-checked by ``primary.poll(0)`` right after the ring,
        so "not confirmed" is the primary's considered answer.
        """
        mirror = self._mirror
        waiter = self._waiter
        assert mirror is not None and waiter is not None
        confirmed = {fd for fd, _ in inner}
        for fd in rang:
            if fd in mirror and fd not in confirmed:
                del mirror[fd]
                waiter.unregister(fd)
                self._muted.add(fd)

    # -- life cycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the secondary and the primary, and forget every fd. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._fallbacks.clear()
        self._files.clear()
        self._devices.clear()
        self._fb_ids.clear()
        self._fb_objs.clear()
        try:
            self._stop_waiter()
        finally:
            self._primary.close()

    def __len__(self) -> int:
        """How many fds are registered, on the primary and fallen back."""
        primary_len = getattr(self._primary, "__len__", None)
        if primary_len is None:
            raise TypeError(f"{type(self._primary).__name__} does not count its fds")
        count: int = primary_len()
        return count + len(self._fallbacks)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fallbacks={len(self._fallbacks)}"
        return f"<FallbackPoller over {self._primary!r} {state}>"
