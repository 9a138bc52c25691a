"""asyncio on iostream's pollers: any asyncio program, on any backend.

asyncio lets a program choose its selector only in code
(``asyncio.SelectorEventLoop(selectors.SelectSelector())``); this module makes
the choice a run-time one, by name or through ``IOSTREAM_POLLER``, exactly as
for iostream's own :class:`~iostream.IOLoop`:

- :class:`PollerSelector` is a :class:`selectors.BaseSelector` over any
  iostream poller (epoll, kqueue, devpoll, poll, select). It keeps the
  ``selectors`` contract: :class:`selectors.SelectorKey` objects, ``get_key``,
  a read-only ``get_map``, ``modify`` that only swaps the key when the events
  do not change, and ``select`` reporting ``EVENT_READ``/``EVENT_WRITE``. The
  poller's ERROR (a hang-up or a socket error) is reported as readable and
  writable, limited to the events registered, as ``selectors`` does for
  epoll's EPOLLHUP/EPOLLERR: the callback that then reads or writes sees the
  error.
- Per-fd fallback: the poller is wrapped in
  :class:`~iostream.pollers.fallback.FallbackPoller`, so an fd the chosen
  backend refuses is watched another way while every other fd stays on it:
  a regular file under epoll is always ready (``loop.add_reader`` on one
  works, where asyncio's own EpollSelector raises PermissionError), a tty
  refused by macOS kqueue goes to poll/select, an fd >= FD_SETSIZE under
  select goes to poll. ``PollerSelector(...).poller.fallbacks`` says which
  fds fell back and why.
- :func:`new_event_loop` is a plain :class:`asyncio.SelectorEventLoop` on a
  :class:`PollerSelector`: everything in asyncio that runs on a selector loop
  (transports, ``open_connection``/``start_server``, ``sock_*``,
  ``add_reader``, subprocess pipes and signals on POSIX) runs on it, because it
  *is* asyncio's own loop; only the system call underneath changes.
- :class:`EventLoopPolicy` makes ``asyncio.run()``, ``asyncio.Runner()`` and
  ``asyncio.new_event_loop()`` use it, for programs that cannot be edited
  (this is what ``python -m iostream run`` installs); :func:`run` is
  :func:`asyncio.run` with a ``poller`` argument, for programs that can.

CPython's own selector tests (``Lib/test/test_selectors.py``) and selector
event-loop tests (``Lib/test/test_asyncio``: events, sock_lowlevel, streams,
subprocess) run on every poller as part of this project's test suite.

What is not supported:

- Windows: only the selector loop, so only select() (iostream has no IOCP
  backend), with its limit of 512 sockets and no subprocess pipes; asyncio's
  default Proactor loop is not replaced. ``add_reader`` takes sockets only
  there, as with any selector loop on Windows.
- An fd that no backend here can watch is refused: ``register`` raises the
  primary poller's :class:`ValueError` (or its OSError, such as EBADF for a
  closed fd), and nothing stays registered.
- Python 3.14 deprecates asyncio's event-loop policies (removal planned for
  3.16). :class:`EventLoopPolicy` still works there (without the deprecation
  warning that naming ``asyncio.DefaultEventLoopPolicy`` gives);
  :func:`run` and :func:`new_event_loop` (as an ``asyncio.Runner``
  ``loop_factory``) are the forms that will outlive policies.
"""

from __future__ import annotations

import asyncio
import selectors
import sys
import warnings
from collections.abc import Coroutine, Iterator, Mapping
from selectors import EVENT_READ, EVENT_WRITE, SelectorKey
from typing import TYPE_CHECKING, Any, TypeVar, cast

from iostream import pollers
from iostream.pollers.base import ERROR, READ, WRITE, FileDescriptorLike, Poller
from iostream.pollers.fallback import FallbackPoller

__all__ = ["EventLoopPolicy", "PollerSelector", "new_event_loop", "run"]

_T = TypeVar("_T")

#: What ``poller`` arguments may be: a backend name (or a comma-separated
#: preference list, as ``IOSTREAM_POLLER`` takes), a poller class, a poller
#: instance (:class:`PollerSelector` and :func:`new_event_loop` only), or None
#: for :func:`iostream.pollers.choose`'s pick.
PollerSpec = str | type[Poller] | Poller | None

#: The poller's event bits (READ|WRITE|ERROR, at most 0x1d) -> selectors'
#: EVENT_READ|EVENT_WRITE, by table so that ``select`` does one index per fd.
#: ERROR counts as both, as ``selectors.EpollSelector`` counts EPOLLHUP and
#: EPOLLERR; ``select`` then keeps only the events the fd is registered for.
_TO_SELECTOR_EVENTS: tuple[int, ...] = tuple(
    (EVENT_READ if bits & (READ | ERROR) else 0) | (EVENT_WRITE if bits & (WRITE | ERROR) else 0)
    for bits in range(32)
)

#: selectors' EVENT_READ|EVENT_WRITE -> the poller's READ|WRITE.
_TO_POLLER_EVENTS: tuple[int, ...] = (0, READ, WRITE, READ | WRITE)


def _make_poller(poller: PollerSpec) -> FallbackPoller:
    """A poller from a ``poller`` argument (see :data:`PollerSpec`), with per-fd fallback."""
    if isinstance(poller, FallbackPoller):
        return poller
    if isinstance(poller, Poller):
        return FallbackPoller(poller)
    if poller is None or isinstance(poller, str):
        return FallbackPoller(pollers.choose(poller)())
    if isinstance(poller, type) and issubclass(poller, Poller):
        return FallbackPoller(poller())
    raise TypeError(
        "poller must be a poller name, a Poller class or instance, or None, "
        f"not {type(poller).__name__}"
    )


def _fileobj_to_fd(fileobj: FileDescriptorLike) -> int:
    """The fd of *fileobj*, or ValueError (as ``selectors`` raises) naming it."""
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(
                f"fileobj must be a file descriptor or have a fileno() method, got {fileobj!r}"
            ) from None
    if fd < 0:
        raise ValueError(f"fileobj must be a non-negative file descriptor, got {fd}")
    return fd


class _SelectorMapping(Mapping[FileDescriptorLike, SelectorKey]):
    """The read-only fileobj -> key view ``get_map`` returns (as in ``selectors``)."""

    def __init__(self, selector: PollerSelector) -> None:
        self._selector = selector

    def __len__(self) -> int:
        return len(self._selector._fd_to_key)

    def __getitem__(self, fileobj: FileDescriptorLike) -> SelectorKey:
        try:
            return self._selector._fd_to_key[self._selector._fileobj_lookup(fileobj)]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def __iter__(self) -> Iterator[FileDescriptorLike]:
        return iter(self._selector._fd_to_key)


class PollerSelector(selectors.BaseSelector):
    """A :class:`selectors.BaseSelector` over an iostream poller.

    *poller* is a backend name (``"epoll"``; a comma-separated preference
    list works too), a :class:`~iostream.pollers.Poller` class or instance,
    or None for :func:`iostream.pollers.choose` (so ``IOSTREAM_POLLER``
    applies). A poller instance given here belongs to the selector from then
    on: :meth:`close` closes it. The poller is wrapped in a
    :class:`~iostream.pollers.fallback.FallbackPoller` (unless it is one), so
    that an fd it refuses is watched another way (see the module docstring).
    An unknown name raises :class:`ValueError`, a backend this OS lacks
    :class:`~iostream.pollers.PollerUnavailable`.

    The semantics are those of the standard library's selectors (see the
    module docstring for the mapping of ERROR).
    """

    def __init__(self, poller: PollerSpec = None) -> None:
        self._poller: Poller = _make_poller(poller)
        #: fd -> its key; the poller holds the same fds, registered as ints.
        self._fd_to_key: dict[int, SelectorKey] = {}
        #: The get_map() view; None once closed (as in ``selectors``).
        self._map: _SelectorMapping | None = _SelectorMapping(self)

    @property
    def poller(self) -> Poller:
        """The poller this selector waits on (a FallbackPoller; ``.primary`` is the backend)."""
        return self._poller

    def _fileobj_lookup(self, fileobj: FileDescriptorLike) -> int:
        """The fd of *fileobj*; for a closed file object, the fd it was registered with.

        A socket closed after ``register`` has ``fileno() == -1``; like
        ``selectors``, look for the very object among the keys, so that
        ``unregister(sock)`` still works.
        """
        try:
            return _fileobj_to_fd(fileobj)
        except ValueError:
            for key in self._fd_to_key.values():
                if key.fileobj is fileobj:
                    return key.fd
            raise

    def register(self, fileobj: FileDescriptorLike, events: int, data: Any = None) -> SelectorKey:
        """Watch *fileobj* for *events* (``EVENT_READ``, ``EVENT_WRITE`` or both).

        Raises :class:`ValueError` for bad *events* or a bad *fileobj*,
        :class:`KeyError` if its fd is already registered, and whatever the
        poller raises if it cannot watch the fd (nothing is left registered).
        """
        if not isinstance(events, int) or not events or events & ~(EVENT_READ | EVENT_WRITE):
            raise ValueError(f"events must be EVENT_READ, EVENT_WRITE or both, got {events!r}")
        fd = self._fileobj_lookup(fileobj)
        if fd in self._fd_to_key:
            raise KeyError(f"{fileobj!r} (fd {fd}) is already registered")
        self._poller.register(fd, _TO_POLLER_EVENTS[events])
        key = SelectorKey(fileobj, fd, events, data)
        self._fd_to_key[fd] = key
        return key

    def unregister(self, fileobj: FileDescriptorLike) -> SelectorKey:
        """Stop watching *fileobj*; return its key.

        Raises :class:`KeyError` if it is not registered. A file closed while
        registered is not an error, as in ``selectors``.
        """
        try:
            key = self._fd_to_key.pop(self._fileobj_lookup(fileobj))
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        try:
            self._poller.unregister(key.fd)
        except OSError:
            # The fd was closed (or its number reused) while registered: the
            # kernel may say EBADF/ENOENT, which ``selectors`` ignores too.
            pass
        return key

    def modify(self, fileobj: FileDescriptorLike, events: int, data: Any = None) -> SelectorKey:
        """Change the events or the data of registered *fileobj*; return the new key.

        Changing only the data touches nothing but the key. If the poller
        fails to change the events, *fileobj* is unregistered before the
        error propagates (as ``selectors`` does since bpo-30014), so the
        selector never reports a key the poller no longer watches.
        """
        fd = self._fileobj_lookup(fileobj)
        try:
            key = self._fd_to_key[fd]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        if events != key.events:
            if not isinstance(events, int) or not events or events & ~(EVENT_READ | EVENT_WRITE):
                raise ValueError(f"events must be EVENT_READ, EVENT_WRITE or both, got {events!r}")
            try:
                self._poller.modify(fd, _TO_POLLER_EVENTS[events])
            except BaseException:
                self.unregister(fileobj)
                raise
            key = key._replace(events=events, data=data)
            self._fd_to_key[fd] = key
        elif data is not key.data:
            key = key._replace(data=data)
            self._fd_to_key[fd] = key
        return key

    def select(self, timeout: float | None = None) -> list[tuple[SelectorKey, int]]:
        """Wait up to *timeout* seconds (None: for ever; <= 0: not at all).

        Returns ``(key, events)`` for each ready fd, *events* being
        ``EVENT_READ``/``EVENT_WRITE`` bits among those it is registered for.
        A signal whose handler returns lets the wait go on (PEP 475); one
        whose handler raises ends it with that exception.
        """
        ready: list[tuple[SelectorKey, int]] = []
        fd_to_key = self._fd_to_key
        to_events = _TO_SELECTOR_EVENTS
        for fd, bits in self._poller.poll(timeout):
            key = fd_to_key.get(fd)
            if key is not None:
                events = to_events[bits & 0x1F] & key.events
                if events:
                    ready.append((key, events))
        return ready

    def close(self) -> None:
        """Forget every fd and close the poller. Idempotent."""
        self._fd_to_key.clear()
        self._map = None
        self._poller.close()

    def get_key(self, fileobj: FileDescriptorLike) -> SelectorKey:
        """The key of registered *fileobj*.

        Raises :class:`KeyError` if it is not registered and
        :class:`RuntimeError` once the selector is closed.
        """
        if self._map is None:
            raise RuntimeError("Selector is closed")
        try:
            return self._fd_to_key[self._fileobj_lookup(fileobj)]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def get_map(self) -> Mapping[FileDescriptorLike, SelectorKey]:
        """A read-only mapping of file objects to keys (None once closed, as in ``selectors``)."""
        # typeshed omits the None that every stdlib selector returns after close().
        return cast("Mapping[FileDescriptorLike, SelectorKey]", self._map)

    def __repr__(self) -> str:
        if self._map is None:
            return f"<{type(self).__name__} poller={self._poller.name!r} closed>"
        return f"<{type(self).__name__} poller={self._poller.name!r} fds={len(self._fd_to_key)}>"


def new_event_loop(poller: PollerSpec = None) -> asyncio.AbstractEventLoop:
    """A new :class:`asyncio.SelectorEventLoop` on a :class:`PollerSelector`.

    *poller* is as for :class:`PollerSelector` (None: ``IOSTREAM_POLLER`` or
    the best here). The loop is not made current; use it with
    ``asyncio.Runner(loop_factory=...)``, ``loop.run_until_complete`` or
    :func:`run`. Cheap: one poller object, no thread, no I/O beyond asyncio's
    own self-pipe.
    """
    return asyncio.SelectorEventLoop(PollerSelector(poller))


def _default_policy_class() -> type[asyncio.AbstractEventLoopPolicy]:
    """asyncio's default policy class, without 3.14's deprecation warning.

    Python 3.14 deprecates the policy classes (removal planned for 3.16) and
    warns on every access to ``asyncio.DefaultEventLoopPolicy``; subclassing
    it is still how a policy is made until then.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return cast("type[asyncio.AbstractEventLoopPolicy]", asyncio.DefaultEventLoopPolicy)


if TYPE_CHECKING:
    _DefaultEventLoopPolicy = asyncio.DefaultEventLoopPolicy
else:
    _DefaultEventLoopPolicy = _default_policy_class()


class EventLoopPolicy(_DefaultEventLoopPolicy):
    """asyncio's default policy, making its loops with :func:`new_event_loop`.

    ``asyncio.set_event_loop_policy(EventLoopPolicy("poll"))`` makes
    ``asyncio.run``, ``asyncio.Runner``, ``asyncio.new_event_loop`` and
    ``asyncio.get_event_loop`` use a selector loop on that poller; everything
    else (the current loop per thread, child watchers on 3.10-3.13) is the
    default policy's. *poller* is a name, a poller class or None (each loop
    then picks by ``IOSTREAM_POLLER`` when it is made); a poller instance is
    refused (:class:`TypeError`), since every loop needs its own. A name is
    checked at once: :class:`ValueError` if unknown,
    :class:`~iostream.pollers.PollerUnavailable` if this OS lacks it.
    """

    def __init__(self, poller: str | type[Poller] | None = None) -> None:
        super().__init__()
        if isinstance(poller, Poller):
            raise TypeError(
                "poller must be a poller name, a Poller class or None, not a poller "
                "instance: each event loop needs a poller of its own"
            )
        if isinstance(poller, str):
            pollers.choose(poller)
        elif poller is not None and not (isinstance(poller, type) and issubclass(poller, Poller)):
            raise TypeError(
                f"poller must be a poller name, a Poller class or None, not {type(poller).__name__}"
            )
        self._poller: str | type[Poller] | None = poller

    @property
    def poller(self) -> str | type[Poller] | None:
        """The ``poller`` argument new loops are made with."""
        return self._poller

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        """A new :func:`new_event_loop` loop on this policy's poller."""
        return new_event_loop(self._poller)


def run(
    main: Coroutine[Any, Any, _T], *, poller: PollerSpec = None, debug: bool | None = None
) -> _T:
    """:func:`asyncio.run` on a :func:`new_event_loop` loop: run *main*, return its result.

    As ``asyncio.run(main, debug=debug, loop_factory=...)`` does on Python
    3.12+ (``asyncio.Runner`` on 3.11; the same steps by hand on 3.10): a new
    loop, *main* run to completion, then the remaining tasks cancelled,
    async generators and the default executor shut down and the loop closed.
    *debug* None leaves asyncio's default (``PYTHONASYNCIODEBUG``, ``-X dev``).
    Raises :class:`RuntimeError` if called from a running event loop.
    """
    if asyncio._get_running_loop() is not None:
        # Checked before a loop is made, as asyncio.run does (3.11's Runner
        # would make one, then fail in run_until_complete).
        raise RuntimeError("iostream.asyncio.run() cannot be called from a running event loop")
    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=lambda: new_event_loop(poller)) as runner:
            return runner.run(main)
    return _run_without_runner(main, poller, debug)


def _run_without_runner(
    main: Coroutine[Any, Any, _T], poller: PollerSpec, debug: bool | None
) -> _T:
    """Python 3.10, which has no ``asyncio.Runner``: ``asyncio.run``'s steps.

    Like 3.10's ``asyncio.run``, the loop is the current one while it runs.
    """
    if not asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = new_event_loop(poller)
    try:
        asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what *main* left running, wait for it, report what failed."""
    to_cancel = asyncio.all_tasks(loop)
    if not to_cancel:
        return
    for task in to_cancel:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*to_cancel, return_exceptions=True))
    for task in to_cancel:
        if task.cancelled():
            continue
        exc = task.exception()
        if exc is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during iostream.asyncio.run() shutdown",
                    "exception": exc,
                    "task": task,
                }
            )
