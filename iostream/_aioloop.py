"""The IOLoop interface on an asyncio event loop: :meth:`IOLoop.from_asyncio`.

This is how streams run inside ``asyncio.run(main())``, next to
``asyncio.open_connection`` or anything else on that loop (uvloop's
included). :class:`AsyncioIOLoop` is an :class:`~iostream.ioloop.IOLoop`
whose machinery is the asyncio loop's:

- ``add_handler(fd, handler, events)``: ``add_reader`` for READ,
  ``add_writer`` for WRITE. The handler gets ``(fd, READ)`` and
  ``(fd, WRITE)`` separately, as in Tornado on asyncio. asyncio has no error
  events: an error or hang-up shows as READ and/or WRITE on an fd watched
  for them, and an fd registered with ERROR alone is not watched at all
  (Tornado's rule too). An exception in a handler is logged on the
  ``iostream`` logger. asyncio cancels a removed reader's pending call, so
  no event polled before ``remove_handler`` reaches a later handler.
- ``add_callback``: ``call_soon`` on the loop's thread, else
  ``call_soon_threadsafe`` (and always from a signal handler).
- ``call_later``/``call_at``/``add_timeout``: ``call_at`` on the asyncio
  clock (``time()`` is the asyncio loop's); the handles are
  :class:`~iostream.ioloop.Timeout`.
- ``create_future``/``create_task``, the executor and the exception handler
  are the asyncio loop's; so are the socket, transport and subprocess
  methods (``create_connection``...), which the native IOLoop lacks.
- ``start``/``stop``/``run_sync``: ``run_forever``/``stop`` of the asyncio
  loop, for a loop that is not running yet.
- ``close(all_fds=False)`` removes this IOLoop's handlers (closing their
  fds with ``all_fds=True``) and detaches it: the asyncio loop stays open
  (it belongs to its owner), and the next ``from_asyncio`` makes a new
  IOLoop for it.
- ``poller`` does not exist (``AttributeError``): asyncio picked the
  selector.

One AsyncioIOLoop per asyncio loop at a time, found through a weak table
(the loop weakly to a weak reference of its IOLoop). The IOLoop holds its
asyncio loop strongly, so ``IOLoop.from_asyncio(asyncio.new_event_loop())
.run_sync(main)`` works with no other reference to the asyncio loop; and
whoever holds the IOLoop (its streams, a caller) keeps both alive, while
nothing keeps either alive once the IOLoop is dropped: a finished
``asyncio.run`` leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import socket
import threading
import weakref
from collections.abc import Callable, Coroutine, Generator
from typing import Any, ClassVar, TypeVar

from iostream._platform import _WINDOWS
from iostream.ioloop import _NOT_PROVIDED, IOLoop, Timeout, _current, app_log
from iostream.pollers import READ, WRITE, Poller
from iostream.pollers.base import FileDescriptorLike, check_events, fd_of

__all__ = ["AsyncioIOLoop", "bridge_for"]

_T = TypeVar("_T")

# Weak both ways: a value that referred to its key strongly would keep the
# entry (and the asyncio loop) alive for ever.
_bridges: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.ReferenceType[AsyncioIOLoop]
] = weakref.WeakKeyDictionary()
_bridges_lock = threading.Lock()


def bridge_for(loop: asyncio.AbstractEventLoop | None = None) -> IOLoop:
    """The one IOLoop on *loop* (default: the running asyncio loop).

    A native :class:`IOLoop` is returned as it is. Raises
    :class:`RuntimeError` when *loop* is ``None`` and no asyncio loop runs
    in this thread, or when *loop* is closed; :class:`TypeError` for a
    non-loop.
    """
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "IOLoop.from_asyncio() needs a running asyncio loop in this thread, "
                "or the loop as its argument"
            ) from None
    if isinstance(loop, IOLoop):
        return loop
    if not isinstance(loop, asyncio.AbstractEventLoop):
        raise TypeError(f"loop must be an asyncio event loop or None, not {type(loop).__name__}")
    if loop.is_closed():
        raise RuntimeError("IOLoop.from_asyncio(): that asyncio loop is closed")
    with _bridges_lock:
        ref = _bridges.get(loop)
        bridge = None if ref is None else ref()
        if bridge is None or bridge._closed:
            bridge = AsyncioIOLoop(loop)
            _bridges[loop] = weakref.ref(bridge)
    return bridge


class _AsyncioTimeout(Timeout):
    """A :class:`Timeout` whose call is an asyncio ``TimerHandle``."""

    __slots__ = ("_handle",)

    def __init__(
        self,
        deadline: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context,
    ) -> None:
        super().__init__(deadline, callback, args, None, context)
        self._handle: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        """Make sure the callback does not run; a no-op once it ran."""
        super().cancel()
        handle = self._handle
        if handle is not None:
            self._handle = None
            handle.cancel()


class _AsyncioTimerHandle(_AsyncioTimeout):
    """asyncio's ``call_later``/``call_at`` on this IOLoop: an exception from
    the callback goes to the exception handler (as in asyncio)."""

    __slots__ = ()

    _reports_to_handler: ClassVar[bool] = True


class AsyncioIOLoop(IOLoop):
    """An IOLoop on an asyncio loop; made by :meth:`IOLoop.from_asyncio`
    (see the module docstring)."""

    def __init__(self, asyncio_loop: asyncio.AbstractEventLoop) -> None:
        # Not IOLoop.__init__: no poller, no waker, no timer heap.
        # Strongly (the module docstring says why that leaks nothing).
        self._loop = asyncio_loop
        self._closed = False
        #: fd -> [the object passed, its handler, its events].
        self._entries: dict[int, list[Any]] = {}
        self._fd_of_object: dict[int, int] = {}

    # -- what the asyncio loop is ---------------------------------------------

    @property
    def asyncio_loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop underneath."""
        return self._loop

    @property
    def _futures_loop(self) -> asyncio.AbstractEventLoop:  # type: ignore[override]
        return self.asyncio_loop

    @property
    def poller(self) -> Poller:
        """Not here: asyncio chose the selector (AttributeError)."""
        raise AttributeError(
            "an IOLoop on an asyncio loop (IOLoop.from_asyncio) has no poller: "
            "asyncio picked its selector; see .asyncio_loop"
        )

    @poller.setter
    def poller(self, value: Poller) -> None:
        raise AttributeError("the poller of an IOLoop on an asyncio loop cannot be set")

    def _on_loop_thread(self, loop: asyncio.AbstractEventLoop) -> bool:
        return asyncio.events._get_running_loop() is loop

    # -- fd handlers -------------------------------------------------------------

    def add_handler(self, fd: FileDescriptorLike, handler: Any, events: int) -> None:
        """``add_reader``/``add_writer`` for READ/WRITE (see the module docstring)."""
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        check_events(events)
        fileno = fd_of(fd)
        if fileno in self._entries:
            raise FileExistsError(f"fd {fileno} already has a handler in this IOLoop")
        self._watch(fileno, 0, events)
        self._entries[fileno] = [fd, handler, events]
        if not isinstance(fd, int):
            self._fd_of_object[id(fd)] = fileno

    def update_handler(self, fd: FileDescriptorLike, events: int) -> None:
        """Change the events *fd* is watched for (FileNotFoundError if none)."""
        check_events(events)
        fileno = self._resolve(fd)
        entry = self._entries.get(fileno)
        if entry is None:
            raise FileNotFoundError(f"fd {fileno} has no handler in this IOLoop")
        self._watch(fileno, entry[2], events)
        entry[2] = events

    def remove_handler(self, fd: FileDescriptorLike) -> None:
        """Stop watching *fd*; silent for an fd that has no handler."""
        if isinstance(fd, int):
            fileno = fd
        else:
            known = self._fd_of_object.pop(id(fd), None)
            if known is None:
                try:
                    known = fd_of(fd)
                except (TypeError, ValueError):
                    return
            fileno = known
        entry = self._entries.pop(fileno, None)
        if entry is None:
            return
        if not isinstance(entry[0], int):
            self._fd_of_object.pop(id(entry[0]), None)
        self._watch(fileno, entry[2], 0)

    def _resolve(self, fd: FileDescriptorLike) -> int:
        if isinstance(fd, int):
            return fd
        known = self._fd_of_object.get(id(fd))
        return known if known is not None else fd_of(fd)

    def _watch(self, fd: int, old: int, new: int) -> None:
        loop = self.asyncio_loop
        if new & READ and not old & READ:
            loop.add_reader(fd, self._dispatch, fd, READ)
        elif old & READ and not new & READ:
            _quietly(loop.remove_reader, fd)
        if new & WRITE and not old & WRITE:
            try:
                loop.add_writer(fd, self._dispatch, fd, WRITE)
            except BaseException:
                if new & READ and not old & READ:
                    _quietly(loop.remove_reader, fd)
                raise
        elif old & WRITE and not new & WRITE:
            _quietly(loop.remove_writer, fd)

    def _dispatch(self, fd: int, events: int) -> None:
        entry = self._entries.get(fd)
        if entry is None:
            return
        try:
            entry[1](entry[0], events)
        except Exception:
            app_log.exception("Exception in I/O handler for fd %r", entry[0])

    def handler_count(self) -> int:
        """How many fds have a handler (0 once closed)."""
        return 0 if self._closed else len(self._entries)

    # -- callbacks and timers ------------------------------------------------------

    def add_callback(self, callback: Callable[..., object], *args: Any) -> None:
        """``callback(*args)`` soon on the asyncio loop; safe from any thread."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        loop = self.asyncio_loop
        try:
            if self._on_loop_thread(loop):
                loop.call_soon(self._run_callback, callback, args)
            else:
                loop.call_soon_threadsafe(self._run_callback, callback, args)
        except RuntimeError:
            # The asyncio loop is closed: as Tornado, drop the callback.
            pass

    def add_callback_from_signal(self, callback: Callable[..., object], *args: Any) -> None:
        """From a signal handler: ``call_soon_threadsafe`` (it wakes the loop)."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        try:
            self.asyncio_loop.call_soon_threadsafe(self._run_callback, callback, args)
        except RuntimeError:
            pass

    def time(self) -> float:
        """The asyncio loop's clock."""
        return self.asyncio_loop.time()

    def _schedule(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context | None,
        kind: type[Timeout] = Timeout,
    ) -> Timeout:
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        if context is None:
            context = contextvars.copy_context()
        elif not isinstance(context, contextvars.Context):
            raise TypeError(f"context must be a contextvars.Context, not {type(context).__name__}")
        cls = _AsyncioTimerHandle if kind._reports_to_handler else _AsyncioTimeout
        handle = cls(when, callback, args, context)
        loop = self.asyncio_loop
        if self._on_loop_thread(loop):
            self._arm(handle)
        else:
            # asyncio's call_at is not thread-safe: arm it on the loop.
            loop.call_soon_threadsafe(self._arm, handle)
        return handle

    def _arm(self, handle: _AsyncioTimeout) -> None:
        if handle.callback is not None and handle.context is not None:
            handle._handle = self.asyncio_loop.call_at(
                handle.deadline, self._fire, handle, context=handle.context
            )

    def _fire(self, handle: _AsyncioTimeout) -> None:
        callback = handle.callback
        if callback is None:
            return
        handle.callback = None
        handle._handle = None
        self._run_callback(callback, handle.args, None, handle)

    # -- running -------------------------------------------------------------------

    def start(self) -> None:
        """``run_forever`` on the asyncio loop (which must not be running)."""
        if self._closed:
            raise RuntimeError("IOLoop is closed")
        self.asyncio_loop.run_forever()

    def stop(self) -> None:
        """Stop the asyncio loop after its current iteration (any thread)."""
        loop = self.asyncio_loop
        if self._on_loop_thread(loop):
            loop.stop()
        else:
            loop.call_soon_threadsafe(loop.stop)

    def running(self) -> bool:
        """True while the asyncio loop runs."""
        return self.asyncio_loop.is_running()

    def is_running(self) -> bool:
        """True while the asyncio loop runs."""
        return self.asyncio_loop.is_running()

    def close(self, all_fds: bool = False) -> None:
        """Remove the handlers (closing their fds with *all_fds*) and detach
        from the asyncio loop, which stays open. Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = self._loop
        for fd, (fileobj, _, events) in list(self._entries.items()):
            if not loop.is_closed():
                if events & READ:
                    _quietly(loop.remove_reader, fd)
                if events & WRITE:
                    _quietly(loop.remove_writer, fd)
            if all_fds:
                try:
                    if not isinstance(fileobj, int):
                        fileobj.close()
                    elif _WINDOWS:
                        socket.close(fileobj)
                    else:
                        os.close(fileobj)
                except OSError:
                    pass
        self._entries.clear()
        self._fd_of_object.clear()
        if getattr(_current, "loop", None) is self:
            IOLoop.clear_current()
        with _bridges_lock:
            ref = _bridges.get(loop)
            if ref is not None and ref() is self:
                del _bridges[loop]

    # -- asyncio's interface: the asyncio loop's own ---------------------------------

    def create_future(self) -> asyncio.Future[Any]:
        """A Future of the asyncio loop."""
        return self.asyncio_loop.create_future()

    def create_task(
        self,
        coro: Coroutine[Any, Any, _T] | Generator[Any, None, _T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[_T]:
        """A Task on the asyncio loop."""
        loop: Any = self.asyncio_loop
        if context is None:
            task: asyncio.Task[_T] = loop.create_task(coro, name=name)
        else:
            task = loop.create_task(coro, name=name, context=context)
        return task

    def get_debug(self) -> bool:
        """The asyncio loop's debug flag."""
        return self.asyncio_loop.get_debug()

    def set_debug(self, enabled: bool) -> None:
        """Set the asyncio loop's debug flag."""
        self.asyncio_loop.set_debug(enabled)

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        """The asyncio loop's exception handler."""
        self.asyncio_loop.call_exception_handler(context)

    def set_exception_handler(
        self, handler: Callable[[Any, dict[str, Any]], object] | None
    ) -> None:
        """Set the asyncio loop's exception handler."""
        self.asyncio_loop.set_exception_handler(handler)

    def get_exception_handler(self) -> Callable[[Any, dict[str, Any]], object] | None:
        """The asyncio loop's exception handler."""
        handler: Any = self.asyncio_loop.get_exception_handler()
        return handler  # type: ignore[no-any-return]

    def run_in_executor(
        self, executor: concurrent.futures.Executor | None, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        """The asyncio loop's ``run_in_executor``."""
        return self.asyncio_loop.run_in_executor(executor, func, *args)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"handlers={len(self._entries)}"
        return f"<AsyncioIOLoop on {self._loop!r} {state}>"


def _quietly(remove: Callable[[int], object], fd: int) -> None:
    """remove_reader/remove_writer of an fd that may be closed already."""
    try:
        remove(fd)
    except (OSError, ValueError):
        pass


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: AsyncioIOLoop, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.asyncio_loop, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"The asyncio loop's ``{name}``."
    return method


for _name in (
    *_NOT_PROVIDED,
    "getaddrinfo",
    "getnameinfo",
    "shutdown_asyncgens",
    "shutdown_default_executor",
    "set_default_executor",
    "set_task_factory",
    "get_task_factory",
    "default_exception_handler",
):
    setattr(AsyncioIOLoop, _name, _delegate(_name))
del _name
