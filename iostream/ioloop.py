"""The event loop: fd handlers, callbacks and timers on a pluggable poller.

One iteration of :meth:`IOLoop.start` does, in order:

1. take the callbacks queued so far (callbacks they add wait for the next
   iteration, so a callback that re-adds itself cannot starve I/O);
2. take the timers whose deadline has passed;
3. run those callbacks, then those timers;
4. wait in ``poller.poll`` — for ever if nothing is queued or scheduled, until
   the next deadline if a timer is pending (at most :data:`MAX_TIMEOUT`, a
   day: a timer 30 years away must not overflow the kernel's wait), not at
   all if callbacks wait;
5. call the handler of each fd the poller reported — except for an fd whose
   handler was removed by an earlier handler of the same batch: its event was
   polled for the old file, even if a new handler now has that fd number.

Each step is a plain loop over plain containers — a ``deque`` of callbacks,
a ``heapq`` of timers, a ``dict`` of handlers — because this path runs once
per batch of events and the benchmark holds it to a high bar. An exception
in a callback, timer or handler is logged on the ``iostream`` logger and the
loop goes on.

Waking up: :meth:`IOLoop.add_callback` may be called from another thread or
from a signal handler while the loop sleeps in ``poll``. The loop then needs
a kick, which is one byte written to a socket pair it watches (a socket
pair, not a pipe, because Windows' ``select`` only takes sockets).

Per-fd fallback: the loop drives the chosen poller (``io_loop.poller``)
through :class:`~iostream.pollers.fallback.FallbackPoller`, so an fd that
backend refuses but another can watch (a regular file on epoll: always
ready; an fd >= FD_SETSIZE on select; a tty on macOS kqueue) is watched
another way instead of failing ``add_handler``. The loop keeps no object ->
fd table of its own: the poller's (:meth:`Poller.fileno_of`) finds a socket
closed while registered.

asyncio: while it runs, the loop is asyncio's running loop of its thread and
implements the part of asyncio's event-loop interface that futures, tasks and
timers use (``call_soon``/``call_later``/``call_at`` with ``context=``,
``time``, ``create_future``, ``create_task``, ``run_in_executor``,
``call_exception_handler``...). So ``asyncio.sleep``, ``gather``,
``wait_for``, ``timeout``, ``Event``, ``Queue`` and ``TaskGroup`` work in the
coroutines it runs (:meth:`IOLoop.run_sync`, :meth:`IOLoop.spawn_callback`),
with no asyncio loop in the process. Its sockets, transports, pipes,
subprocesses and signals are not provided (``NotImplementedError`` naming
``iostream.asyncio``, which runs all of asyncio on these pollers). The other
way round, :meth:`IOLoop.from_asyncio` gives the IOLoop interface on an
asyncio loop (``iostream._aioloop``).

:meth:`IOLoop.current` is the loop running in this thread, else the one made
current (a new IOLoop becomes current when none is, as in Tornado; closing
it undoes that), else :meth:`IOLoop.instance`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import datetime
import functools
import heapq
import inspect
import logging
import math
import numbers
import os
import socket
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, ClassVar, TypeVar, cast, overload

from iostream._platform import _WINDOWS
from iostream.pollers import ERROR, READ, WRITE, Poller, choose
from iostream.pollers.base import MAX_TIMEOUT, FileDescriptorLike, fd_of
from iostream.pollers.fallback import FallbackPoller

__all__ = ["Handle", "Handler", "IOLoop", "Timeout", "app_log"]

#: The logger every layer reports unexpected exceptions on.
app_log = logging.getLogger("iostream")

#: Handler signature: ``handler(fd, events)``, the fd as it was passed.
Handler = Callable[[Any, int], object]

#: Rebuild the timer heap once this many cancelled timers sit in it (and they
#: are more than half of it): cancelling stays O(1), and the heap never fills
#: up with dead entries.
_CANCELLED_TIMERS_BEFORE_CLEANUP = 512


class Timeout:
    """A scheduled call: the handle :meth:`IOLoop.call_later`,
    :meth:`IOLoop.call_at` and :meth:`IOLoop.add_timeout` return.

    It answers asyncio's ``TimerHandle`` questions (:meth:`cancel`,
    :meth:`cancelled`, :meth:`when`), so ``asyncio.sleep``, ``asyncio.timeout``
    and ``wait_for`` can use it, and it is what
    :meth:`IOLoop.remove_timeout` takes. Cancelling only drops the callback:
    the entry stays in the loop's heap until it is popped, so cancellation
    costs O(1).
    """

    __slots__ = ("_cancelled", "_loop", "args", "callback", "context", "deadline")

    #: True for asyncio's call_later/call_at timers: an exception from the
    #: callback goes to the loop's exception handler (Tornado's add_timeout
    #: logs it on the ``iostream`` logger).
    _reports_to_handler: ClassVar[bool] = False

    def __init__(
        self,
        deadline: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: IOLoop | None = None,
        context: contextvars.Context | None = None,
    ) -> None:
        self.deadline = deadline
        #: The callback, or ``None`` once it ran or was cancelled.
        self.callback: Callable[..., object] | None = callback
        self.args = args
        #: The :class:`contextvars.Context` the callback runs in.
        self.context = context
        self._loop = loop
        self._cancelled = False

    def when(self) -> float:
        """The deadline, on :meth:`IOLoop.time`'s clock."""
        return self.deadline

    def cancelled(self) -> bool:
        """True once :meth:`cancel` (or ``remove_timeout``) was called."""
        return self._cancelled

    def cancel(self) -> None:
        """Make sure the callback does not run; a no-op once it ran."""
        self._cancelled = True
        if self.callback is not None:
            self.callback = None
            self.args = ()
            self.context = None
            if self._loop is not None:
                self._loop._cancelled_timers += 1

    def __repr__(self) -> str:
        state = "cancelled or done" if self.callback is None else repr(self.callback)
        return f"<Timeout at {self.deadline:.6f}: {state}>"


#: The old private name of :class:`Timeout`.
_Timeout = Timeout


def _clock_time(value: object, name: str, alternative: str = "") -> float:
    """*value* (argument *name*) as a time on :meth:`IOLoop.time`'s clock.

    A NaN would sit on top of the timer heap for ever, blocking every later
    timer: refused. An infinite time is fine: "never".
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(
            f"{name} must be a number on IOLoop.time()'s clock{alternative}, "
            f"not {type(value).__name__}"
        )
    when = float(value)
    if math.isnan(when):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return when


def _resolve_once(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)


def _callback_name(callback: Callable[..., object], args: tuple[Any, ...]) -> object:
    """The user's callback of a queued ``(callable, args)`` entry, for error
    reports: :meth:`IOLoop.add_callback` queues ``Context.run`` with the
    callback as its first argument."""
    if args and isinstance(getattr(callback, "__self__", None), contextvars.Context):
        return args[0]
    return callback


class _TimerHandle(Timeout):
    """A :class:`Timeout` made by asyncio's ``call_later`` / ``call_at``: an
    exception from its callback goes to the loop's exception handler (as in
    asyncio), not to the ``iostream`` log directly (Tornado's ``add_timeout``)."""

    __slots__ = ()

    _reports_to_handler: ClassVar[bool] = True


class Handle:
    """What :meth:`IOLoop.call_soon` returns: asyncio's ``Handle`` interface.

    The callback runs in the :class:`contextvars.Context` it was given (a
    copy of the caller's when none was), as in asyncio; an exception it
    raises goes to the loop's :meth:`IOLoop.call_exception_handler`, as in
    asyncio.
    """

    __slots__ = ("_args", "_callback", "_cancelled", "_context", "_loop")

    def __init__(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context,
        loop: IOLoop,
    ) -> None:
        self._callback: Callable[..., object] | None = callback
        self._args = args
        self._context = context
        self._cancelled = False
        self._loop = loop

    def cancel(self) -> None:
        """Make sure the callback does not run; a no-op once it ran."""
        self._cancelled = True
        self._callback = None
        self._args = ()

    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._cancelled

    def get_context(self) -> contextvars.Context:
        """The context the callback runs in."""
        return self._context

    def _run(self) -> object:
        callback = self._callback
        if callback is None:
            return None
        self._callback = None
        # asyncio ignores what a call_soon callback returns: so does this.
        try:
            self._context.run(callback, *self._args)
        except Exception as exc:
            self._loop._report_callback_error(callback, exc, self)
        return None

    def __repr__(self) -> str:
        state = "cancelled or done" if self._callback is None else repr(self._callback)
        return f"<Handle {state}>"


class _Waker:
    """A connected socket pair: writing one byte wakes a loop sleeping in poll.

    ``wake`` must be safe from a signal handler and from any thread: it is a
    single non-blocking ``send`` whose failure (buffer full: a wake-up is
    already pending; or closed: the loop is gone) is harmless.
    """

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)

    def fileno(self) -> int:
        """The fd the loop watches for READ."""
        return self.reader.fileno()

    def wake(self) -> None:
        """Make the reader readable (never blocks, never raises)."""
        try:
            self.writer.send(b"x")
        except OSError:
            pass

    def drain(self, fd: object = None, events: int = 0) -> None:
        """Read every pending wake-up byte (an IOLoop handler)."""
        try:
            while self.reader.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        """Close both sockets."""
        self.reader.close()
        self.writer.close()


_T = TypeVar("_T")

#: Per thread: the loop made current there (``IOLoop.make_current``).
_current = threading.local()

#: Every open loop, so that a forked child can give each its own waker.
_live_loops: weakref.WeakSet[IOLoop] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for loop in list(_live_loops):
        loop._new_waker_after_fork()


class IOLoop:
    """A level-triggered event loop over a :class:`~iostream.pollers.Poller`.

    ``IOLoop(poller=None)``: ``None`` picks :func:`~iostream.pollers.choose`'s
    answer (the ``IOSTREAM_POLLER`` environment variable, else the best
    backend); a name such as ``"poll"`` picks that backend; a
    :class:`~iostream.pollers.Poller` instance is used as it is.
    """

    READ: ClassVar[int] = READ
    WRITE: ClassVar[int] = WRITE
    ERROR: ClassVar[int] = ERROR

    _instance: ClassVar[IOLoop | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self, poller: Poller | str | None = None, *, make_current: bool | None = None
    ) -> None:
        if make_current is not None and not isinstance(make_current, bool):
            raise TypeError(
                f"make_current must be None, True or False, not {type(make_current).__name__}"
            )
        if poller is None or isinstance(poller, str):
            chosen: Poller = choose(poller)()
        elif isinstance(poller, Poller):
            chosen = poller
        else:
            raise TypeError(
                "poller must be None, a poller name or a Poller instance, "
                f"not {type(poller).__name__}"
            )
        #: The poller chosen (or given): the backend that watches every fd it
        #: accepts. The loop drives it through a per-fd fallback wrapper
        #: (:class:`~iostream.pollers.fallback.FallbackPoller`, ``_watcher``),
        #: so that an fd this backend refuses but another can watch (a
        #: regular file on epoll, an fd >= FD_SETSIZE on select, a tty on
        #: macOS kqueue) is still watched, and every other fd stays here.
        self.poller: Poller = chosen
        self._watcher: Poller = (
            chosen if isinstance(chosen, FallbackPoller) else FallbackPoller(chosen)
        )
        # fd -> (the object the caller passed, its handler). The object ->
        # fd table (a socket closed while registered answers fileno() == -1,
        # so it is found by identity) is the poller's: see Poller.fileno_of.
        self._handlers: dict[int, tuple[Any, Handler]] = {}
        self._callbacks: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._timers: list[tuple[float, int, Timeout]] = []
        self._timer_seq = 0
        self._cancelled_timers = 0
        self._running = False
        self._stopped = False
        self._closed = False
        self._polling = False
        # While a batch of polled events is handed out: the fds removed
        # meanwhile, whose remaining events in the batch are stale.
        self._dispatching = False
        self._stale_fds: set[int] = set()
        self._thread_ident: int | None = None
        #: The asyncio loop the Futures and Tasks of this IOLoop belong to:
        #: itself here; the asyncio loop for IOLoop.from_asyncio's.
        self._futures_loop: asyncio.AbstractEventLoop = cast(asyncio.AbstractEventLoop, self)
        self._debug = False
        if type(self).create_future is IOLoop.create_future:
            # Hot path: ``await stream.read_until(...)`` on buffered lines
            # makes one Future per line; the partial skips a Python frame
            # (the figure: iostream/stream.py's table of hot-path shortcuts).
            self.create_future = functools.partial(asyncio.Future, loop=self)  # type: ignore[method-assign,arg-type]
        self._exception_handler: Callable[[Any, dict[str, Any]], object] | None = None
        self._task_factory: Callable[..., Any] | None = None
        self._default_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._asyncgens: weakref.WeakSet[Any] = weakref.WeakSet()
        self._waker = _Waker()
        self.add_handler(self._waker.fileno(), self._waker.drain, READ)
        _live_loops.add(self)
        # Tornado's rule: a new loop becomes this thread's current loop when
        # there is none (so `loop = IOLoop(); TCPServer(...).listen(0);
        # loop.start()` works); make_current=True always, False never.
        if make_current or (make_current is None and IOLoop._made_current() is None):
            self.make_current()

    def _new_waker_after_fork(self) -> None:
        """In a forked child: replace the waker the parent still shares.

        A socket pair survives fork shared by both processes: a wake-up
        written in the child could be read (and swallowed) by the parent's
        loop, and the child's loop would sleep on. The pollers re-create
        their kernel objects in the child (see ``iostream.pollers``), so the
        old waker is simply swapped for a new one in the table.
        """
        if self._closed:
            return
        old = self._waker
        self.remove_handler(old.fileno())
        old.close()  # the child's copies only; the parent keeps its own
        self._waker = _Waker()
        self.add_handler(self._waker.fileno(), self._waker.drain, READ)

    # -- the process-wide loop ---------------------------------------------

    @classmethod
    def instance(cls) -> IOLoop:
        """Return the process-wide default loop, made on first use."""
        if cls._instance is None:
            with cls._instance_lock:
                if cls._instance is None:
                    cls._instance = cls()
        return cls._instance

    @classmethod
    def clear_instance(cls) -> None:
        """Forget the process-wide loop (it is not closed)."""
        with cls._instance_lock:
            cls._instance = None

    @staticmethod
    def _made_current() -> IOLoop | None:
        loop: IOLoop | None = getattr(_current, "loop", None)
        if loop is not None and loop._closed:
            _current.loop = None
            return None
        return loop

    @overload
    @classmethod
    def current(cls) -> IOLoop: ...

    @overload
    @classmethod
    def current(cls, instance: bool = True) -> IOLoop | None: ...

    @classmethod
    def current(cls, instance: bool = True) -> IOLoop | None:
        """The loop of this thread.

        In order: the IOLoop running in this thread (inside a running asyncio
        loop: :meth:`from_asyncio`'s IOLoop on it); else the one made
        current here (:meth:`make_current`, or the first IOLoop created in
        this thread while none was); else, with ``instance=True`` (the
        default), :meth:`instance`; with ``instance=False``, ``None``.
        """
        running = asyncio.events._get_running_loop()
        if running is not None:
            if isinstance(running, IOLoop):
                return running
            return IOLoop.from_asyncio(running)
        made = cls._made_current()
        if made is not None:
            return made
        return cls.instance() if instance else None

    @staticmethod
    def from_asyncio(loop: asyncio.AbstractEventLoop | None = None) -> IOLoop:
        """The IOLoop interface on an asyncio event loop.

        *loop* defaults to the running asyncio loop (``RuntimeError`` if none
        runs). Any asyncio loop works, uvloop's included: fd handlers go
        through its ``add_reader``/``add_writer``, callbacks and timers
        through its ``call_soon``/``call_at``, and ``create_future`` returns
        its Futures. There is one such IOLoop per asyncio loop (the same
        object on every call); inside a running asyncio loop,
        :meth:`IOLoop.current` is it. Given a native IOLoop, returns it.
        See :class:`iostream._aioloop.AsyncioIOLoop` for the details.
        """
        from iostream._aioloop import bridge_for  # late: it subclasses IOLoop

        return bridge_for(loop)

    def make_current(self) -> None:
        """Make this loop :meth:`current` in this thread (when none runs).

        Closing the loop undoes it.
        """
        if self._closed:
            raise RuntimeError("cannot make a closed IOLoop current")
        _current.loop = self

    @staticmethod
    def clear_current() -> None:
        """Make no loop current in this thread (the running one still is)."""
        _current.loop = None

    # -- fd handlers --------------------------------------------------------

    def add_handler(self, fd: FileDescriptorLike, handler: Handler, events: int) -> None:
        """Call ``handler(fd, events)`` when *fd* is ready for *events*.

        *fd* is an int or an object with ``fileno()``; the handler receives it
        as it was passed. Adding an fd that already has a handler raises
        :class:`FileExistsError` and keeps the first handler. The poller may
        refuse the fd (``select`` above its limit: :class:`ValueError`); then
        nothing is registered. Handlers run in the loop's own
        :class:`contextvars.Context` (a copy of the one :meth:`start` was
        called in; nothing they set reaches that caller).
        """
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        fileno = fd_of(fd)
        if fileno in self._handlers:
            raise FileExistsError(f"fd {fileno} already has a handler in this IOLoop")
        # The object itself goes to the poller, which remembers it by identity.
        self._watcher.register(fd, events)
        self._handlers[fileno] = (fd, handler)

    def update_handler(self, fd: FileDescriptorLike, events: int) -> None:
        """Change the events *fd* is watched for.

        Raises :class:`FileNotFoundError` if *fd* has no handler.
        """
        try:
            self._watcher.modify(fd, events)
        except FileNotFoundError:
            raise FileNotFoundError(f"{fd!r} has no handler in this IOLoop") from None

    def remove_handler(self, fd: FileDescriptorLike) -> None:
        """Stop watching *fd*; silent for an fd that has no handler.

        A socket object is found by identity, so this works after
        ``sock.close()``.
        """
        if isinstance(fd, int):
            fileno = fd
        else:
            try:
                # The chosen poller's table: it finds a closed socket.
                fileno = self.poller.fileno_of(fd)
            except (FileNotFoundError, TypeError, ValueError):
                # Not on the chosen poller: an fd that fell back (the
                # wrapper watches it), a poller without an identity table,
                # or no handler at all.
                try:
                    fileno = fd_of(fd)
                except (TypeError, ValueError):
                    # Closed since: find the object among the handlers
                    # (rare: O(n) is fine).
                    found = [n for n, entry in self._handlers.items() if entry[0] is fd]
                    if not found:
                        return
                    fileno = found[0]
        entry = self._handlers.pop(fileno, None)
        if entry is None:
            return
        if self._dispatching:
            self._stale_fds.add(fileno)
        try:
            self._watcher.unregister(fileno)
        except (FileNotFoundError, ValueError):
            # Already gone from the kernel's set (closed, or never accepted).
            pass

    def handler_count(self) -> int:
        """How many fds have a handler, not counting the loop's own waker
        (0 once the loop is closed)."""
        if self._closed:
            return 0
        return len(self._handlers) - 1

    # -- callbacks and timers -----------------------------------------------

    def add_callback(self, callback: Callable[..., object], *args: Any) -> None:
        """Call ``callback(*args)`` on the next loop iteration.

        Safe from any thread and from signal handlers: ``deque.append`` is
        atomic, and a loop sleeping in ``poll`` (or running in another
        thread) is woken through its socket pair. Callbacks added while
        callbacks run, run on the next iteration. The callback runs in a
        copy of the caller's :class:`contextvars.Context` (as ``call_soon``
        and Tornado on asyncio do): a ``ContextVar`` it sets is not seen by
        other callbacks.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        # (The queue holds (callable, args): Context.run with the callback as
        # its first argument; _callback_name() names it in error reports.)
        self._callbacks.append((contextvars.copy_context().run, (callback, *args)))
        # Same thread and not sleeping: the loop looks at the queue before it
        # next polls, so no wake-up byte is needed (the common, fast case).
        # A signal handler runs on the loop's thread *while* it sleeps in
        # poll, and PEP 475 would resume that sleep: hence `_polling`.
        if self._polling or threading.get_ident() != self._thread_ident:
            self._waker.wake()

    def add_callback_from_signal(self, callback: Callable[..., object], *args: Any) -> None:
        """Same as :meth:`add_callback`, which is already signal-safe."""
        self.add_callback(callback, *args)

    def spawn_callback(self, callback: Callable[..., object], *args: Any) -> None:
        """Call ``callback(*args)`` on the next iteration, on its own.

        Tornado's name for a fire-and-forget call: a coroutine function's
        coroutine is run as a task, and what it raises is logged on the
        ``iostream`` logger (as for :meth:`add_callback`, whose callbacks may
        also return a coroutine or a Future).
        """
        self.add_callback(callback, *args)

    def add_future(
        self,
        future: asyncio.Future[_T] | concurrent.futures.Future[_T],
        callback: Callable[[Any], object],
    ) -> None:
        """Call ``callback(future)`` on this loop once *future* is done.

        *future* is an :class:`asyncio.Future` (of this loop or of another)
        or a :class:`concurrent.futures.Future`; the callback always runs on
        this loop's thread, as a callback of :meth:`add_callback` (so one
        returning a coroutine has it run).
        """
        if not isinstance(future, (asyncio.Future, concurrent.futures.Future)):
            raise TypeError(
                "future must be an asyncio.Future or a concurrent.futures.Future, "
                f"not {type(future).__name__}"
            )
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        future.add_done_callback(lambda done: self.add_callback(callback, done))

    def _adopt(self, result: object, callback: object) -> None:
        """Run the awaitable a callback returned; log what it raises."""
        if not inspect.isawaitable(result) and not isinstance(result, concurrent.futures.Future):
            return  # a plain return value: ignored, as Tornado does
        try:
            if isinstance(result, concurrent.futures.Future):
                future: asyncio.Future[Any] = asyncio.wrap_future(result, loop=self._futures_loop)
            else:
                future = asyncio.ensure_future(result, loop=self._futures_loop)
        except Exception:
            app_log.exception("Exception in callback %r", callback)
            return

        def log_failure(done: asyncio.Future[Any]) -> None:
            if done.cancelled():
                return
            error = done.exception()
            if error is not None:
                app_log.error(
                    "Exception in callback %r",
                    callback,
                    exc_info=(type(error), error, error.__traceback__),
                )

        future.add_done_callback(log_failure)

    def time(self) -> float:
        """Seconds on a monotonic clock; the clock of every deadline."""
        return time.monotonic()

    def add_timeout(
        self,
        deadline: float | datetime.timedelta,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> Timeout:
        """Call ``callback(*args)`` at *deadline* and return a handle for
        :meth:`remove_timeout`.

        *deadline* is a time on :meth:`time`'s clock, or a
        :class:`datetime.timedelta` from now. The callback runs in *context*
        (default: a copy of the caller's :class:`contextvars.Context`, as
        asyncio and Tornado do), and may return a coroutine, which is run.
        """
        if isinstance(deadline, datetime.timedelta):
            when = self.time() + deadline.total_seconds()
        else:
            when = _clock_time(deadline, "deadline", " or a timedelta")
        return self._schedule(when, callback, args, context)

    def call_later(
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> Timeout:
        """Call ``callback(*args)`` after *delay* seconds; return the handle.

        The handle is a :class:`Timeout` (``cancel()``, ``when()``); see
        :meth:`add_timeout` for *context*. As in asyncio, *delay* may be
        ``math.inf`` (never, until cancelled), and an exception from the
        callback goes to :meth:`call_exception_handler`.
        """
        if not isinstance(delay, numbers.Real) or isinstance(delay, bool):
            raise TypeError(f"delay must be a number of seconds, not {type(delay).__name__}")
        if math.isnan(delay):
            # A NaN deadline would sit on top of the heap for ever, blocking
            # every later timer. An infinite one is "never", as in asyncio
            # (asyncio.sleep(math.inf), timeout(math.inf)): it stays on the
            # heap, cancellable, and the wait is capped (MAX_TIMEOUT).
            raise ValueError(f"delay must be a number of seconds, got {delay!r}")
        return self._schedule(self.time() + float(delay), callback, args, context, _TimerHandle)

    def call_at(
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> Timeout:
        """Call ``callback(*args)`` at *when* on :meth:`time`'s clock.

        asyncio's ``call_at``: unlike :meth:`add_timeout`'s, an exception
        from this callback goes to :meth:`call_exception_handler`.
        """
        return self._schedule(_clock_time(when, "when"), callback, args, context, _TimerHandle)

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
        handle = kind(when, callback, args, self, context)
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, handle))
        if threading.get_ident() != self._thread_ident:
            # Another thread: the loop may sleep past the new deadline.
            self._waker.wake()
        return handle

    def remove_timeout(self, handle: Timeout) -> None:
        """Cancel a timer; a no-op for one that already ran or was cancelled."""
        if not isinstance(handle, Timeout):
            raise TypeError(
                f"handle must be what call_later/add_timeout returned, not {type(handle).__name__}"
            )
        handle.cancel()

    # -- running ------------------------------------------------------------

    def start(self) -> None:
        """Run until :meth:`stop`.

        Raises :class:`RuntimeError` if the loop is already running or closed.
        If :meth:`stop` was called before, returns at once (and clears it).
        """
        if self._running:
            raise RuntimeError("IOLoop is already running")
        if self._closed:
            raise RuntimeError("IOLoop is closed")
        # Up before `_stopped` is looked at: a stop() from another thread in
        # between then either is seen here or ends the first iteration.
        self._running = True
        if self._stopped:
            self._stopped = False
            self._running = False
            return
        other = asyncio.events._get_running_loop()
        if other is not None:
            self._running = False
            raise RuntimeError(
                "cannot start an IOLoop while another event loop is running in this thread"
            )
        previous_ident = self._thread_ident
        self._thread_ident = threading.get_ident()
        # While it runs, this loop is asyncio's running loop of the thread:
        # asyncio.get_running_loop(), sleep, gather, wait_for, create_task,
        # Event and timeout then work in the coroutines it runs.
        asyncio.events._set_running_loop(cast(asyncio.AbstractEventLoop, self))
        old_hooks = sys.get_asyncgen_hooks()
        sys.set_asyncgen_hooks(
            firstiter=self._asyncgen_firstiter_hook, finalizer=self._asyncgen_finalizer_hook
        )
        try:
            # In a copy of the caller's context: what fd handlers set in
            # ContextVars stays in the loop, as in asyncio (where each
            # handler has its own copy), not in the caller after start().
            contextvars.copy_context().run(self._run)
        finally:
            self._running = False
            self._stopped = False
            self._thread_ident = previous_ident
            asyncio.events._set_running_loop(None)
            sys.set_asyncgen_hooks(*old_hooks)

    def _run(self) -> None:
        callbacks = self._callbacks
        timers = self._timers
        handlers = self._handlers
        stale = self._stale_fds
        poll = self._watcher.poll
        run = self._run_callback
        while True:
            ready = len(callbacks)
            due: list[Timeout] = []
            if timers:
                now = self.time()
                while timers:
                    handle = timers[0][2]
                    if handle.callback is None:
                        heapq.heappop(timers)
                        self._cancelled_timers -= 1
                    elif timers[0][0] <= now:
                        due.append(heapq.heappop(timers)[2])
                    else:
                        break
                if (
                    self._cancelled_timers > _CANCELLED_TIMERS_BEFORE_CLEANUP
                    and self._cancelled_timers > len(timers) >> 1
                ):
                    self._drop_cancelled_timers()

            taken = 0  # timers of `due` taken so far (see the except clause)
            try:
                for _ in range(ready):
                    callback, args = callbacks.popleft()
                    # (_run_callback, inlined: once per callback, and every
                    # Task step of a coroutine on this loop is one.)
                    try:
                        result = callback(*args)
                    except Exception:
                        name = _callback_name(callback, args)
                        app_log.exception("Exception in callback %r", name)
                        continue
                    if result is not None:
                        # (In the callback's context: a Task made from what
                        # it returned copies the context it is made in.)
                        context = getattr(callback, "__self__", None)
                        if isinstance(context, contextvars.Context):
                            context.run(self._adopt, result, args[0])
                        else:
                            self._adopt(result, callback)
                for handle in due:
                    taken += 1
                    callback = handle.callback  # type: ignore[assignment]
                    if callback is not None:
                        handle.callback = None
                        run(callback, handle.args, handle.context, handle)
                    else:
                        # Cancelled by an earlier one of this batch, after it
                        # left the heap: remove_timeout counted it as in the heap.
                        self._cancelled_timers -= 1
            except BaseException:
                # KeyboardInterrupt or SystemExit from a callback: the timers
                # of this batch that have not run go back on the heap, so a
                # loop started again runs them (asyncio keeps them in its
                # ready queue); dropped, a task's sleep would never end.
                for handle in due[taken:]:
                    if handle.callback is None:
                        self._cancelled_timers -= 1
                    else:
                        self._timer_seq += 1
                        heapq.heappush(timers, (handle.deadline, self._timer_seq, handle))
                raise

            if not self._running:
                break
            # `_polling` goes up *before* the queue is looked at: a signal
            # handler that runs between this line and the poll() below then
            # writes to the waker, and one that ran before it has already
            # queued its callback, which the check below sees. Either way
            # the loop cannot fall asleep on a queued callback.
            self._polling = True
            if callbacks:
                timeout: float | None = 0.0
            elif timers:
                # Capped: a timer 30 years away must not overflow the
                # poller's C int of milliseconds (the loop just wakes up
                # once a day and waits again).
                timeout = min(max(0.0, timers[0][0] - self.time()), MAX_TIMEOUT)
            else:
                timeout = None
            try:
                events = poll(timeout)
            finally:
                self._polling = False

            self._dispatching = True
            try:
                for fd, mask in events:
                    entry = handlers.get(fd)
                    if entry is None:
                        continue  # removed by an earlier handler in this batch
                    if stale and fd in stale:
                        # Removed by an earlier handler of this batch, and
                        # maybe re-added for a new file with the same number:
                        # this event was polled for the old one.
                        continue
                    try:
                        entry[1](entry[0], mask)
                    except Exception:
                        app_log.exception("Exception in I/O handler for fd %r", entry[0])
            finally:
                self._dispatching = False
                if stale:
                    stale.clear()

    def _run_callback(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context | None = None,
        timer: Timeout | None = None,
    ) -> None:
        try:
            result = callback(*args) if context is None else context.run(callback, *args)
        except Exception as exc:
            if timer is not None and timer._reports_to_handler:
                self._report_callback_error(callback, exc, timer)
            else:
                app_log.exception("Exception in callback %r", callback)
            return
        if result is not None:
            # A coroutine or Future returned by a callback is run and its
            # failure logged (Tornado's add_callback/spawn_callback rule).
            self._adopt(result, callback)

    def _report_callback_error(
        self, callback: Callable[..., object], exc: Exception, handle: object
    ) -> None:
        """An asyncio-API callback (call_soon/call_later/call_at) raised: tell
        the exception handler, as asyncio's ``Handle._run`` does."""
        self.call_exception_handler(
            {"message": f"Exception in callback {callback!r}", "exception": exc, "handle": handle}
        )

    def _drop_cancelled_timers(self) -> None:
        # In place: the running loop holds a reference to this very list.
        self._timers[:] = [entry for entry in self._timers if entry[2].callback is not None]
        heapq.heapify(self._timers)
        self._cancelled_timers = 0

    # -- awaitables ------------------------------------------------------------

    def run_sync(self, func: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run the loop until the awaitable ``func()`` returns completes.

        Returns its result or raises its exception. ``func`` returning
        ``None`` gives ``None`` (the loop still runs one iteration); any
        other non-awaitable raises :class:`TypeError`. A
        :class:`concurrent.futures.Future` is awaited too. With *timeout*
        (seconds), the awaitable is cancelled after that long and
        :class:`TimeoutError` is raised. If :meth:`stop` is called before it
        completes, raises ``RuntimeError("Event loop stopped before Future
        completed.")`` (as asyncio's ``run_until_complete``).
        """
        if not callable(func):
            raise TypeError(f"func must be callable, not {type(func).__name__}")
        if timeout is not None:
            if not isinstance(timeout, numbers.Real) or isinstance(timeout, bool):
                raise TypeError(
                    f"timeout must be None or a number of seconds, not {type(timeout).__name__}"
                )
            if not timeout >= 0 or not math.isfinite(timeout):
                raise ValueError(f"timeout must be a finite number >= 0, got {timeout!r}")
        if self._closed:
            raise RuntimeError("IOLoop is closed")
        if self.running():
            raise RuntimeError("IOLoop is already running")
        loop = self._futures_loop
        # Run func() in the loop's first iteration, as Tornado does, so that
        # asyncio.get_running_loop() works inside it.
        cell: list[asyncio.Future[Any]] = []
        timed_out: list[bool] = []

        def begin() -> None:
            try:
                result = func()
            except Exception as error:
                future: asyncio.Future[Any] = self.create_future()
                future.set_exception(error)
            else:
                if result is None:
                    future = self.create_future()
                    future.set_result(None)
                elif isinstance(result, concurrent.futures.Future):
                    future = asyncio.wrap_future(result, loop=loop)
                elif inspect.isawaitable(result):
                    try:
                        future = asyncio.ensure_future(result, loop=loop)
                    except ValueError as error:  # a Future of another loop
                        future = self.create_future()
                        future.set_exception(error)
                else:
                    future = self.create_future()
                    future.set_exception(
                        TypeError(
                            "run_sync's func must return an awaitable or None, "
                            f"not {type(result).__name__}"
                        )
                    )
            cell.append(future)
            if timeout is not None:

                def on_timeout() -> None:
                    if not future.done():
                        timed_out.append(True)
                        future.cancel()

                handle = self.call_later(timeout, on_timeout)
                future.add_done_callback(lambda _: handle.cancel())
            future.add_done_callback(stop_if_still_waiting)

        def stop_if_still_waiting(_: object) -> None:
            # A run_sync that gave up (stop() came first) must not stop a
            # later run when its awaitable finally completes.
            if waiting:
                self.stop()

        waiting = True
        self.add_callback(begin)
        try:
            self.start()
        finally:
            waiting = False
        if not cell or not cell[0].done():
            raise RuntimeError("Event loop stopped before Future completed.")
        future = cell[0]
        if timed_out and future.cancelled():
            raise TimeoutError(f"Operation timed out after {timeout} seconds")
        return future.result()

    # -- the part of asyncio's event-loop interface futures and tasks use ----

    def create_future(self) -> asyncio.Future[Any]:
        """A new :class:`asyncio.Future` bound to this loop."""
        return asyncio.Future(loop=self._futures_loop)

    def create_task(
        self,
        coro: Coroutine[Any, Any, _T] | Generator[Any, None, _T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[_T]:
        """Schedule *coro* as an :class:`asyncio.Task` on this loop."""
        if self._closed:
            raise RuntimeError("IOLoop is closed")
        loop = self._futures_loop
        task: asyncio.Task[_T]
        if self._task_factory is not None:
            if context is None:
                task = self._task_factory(loop, coro)
            else:
                task = self._task_factory(loop, coro, context=context)
            if name is not None:
                task.set_name(name)
        elif context is None:
            task = asyncio.Task(coro, loop=loop, name=name)
        else:  # Task's context= is Python 3.11+
            task = asyncio.Task(coro, loop=loop, name=name, context=context)  # type: ignore[call-arg,unused-ignore]
        return task

    def set_task_factory(self, factory: Callable[..., Any] | None) -> None:
        """asyncio's ``set_task_factory``: ``factory(loop, coro, **kwargs)``."""
        if factory is not None and not callable(factory):
            raise TypeError(f"factory must be callable or None, not {type(factory).__name__}")
        self._task_factory = factory

    def get_task_factory(self) -> Callable[..., Any] | None:
        """The task factory, or ``None`` for :class:`asyncio.Task`."""
        return self._task_factory

    def call_soon(
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> Handle:
        """asyncio's ``call_soon``: :meth:`add_callback` with a
        cancellable :class:`Handle`, run in *context* (default: a copy of
        the caller's). Safe from any thread, like :meth:`add_callback`.
        """
        if self._closed:
            raise RuntimeError("IOLoop is closed")
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        if context is None:
            context = contextvars.copy_context()
        elif not isinstance(context, contextvars.Context):
            raise TypeError(f"context must be a contextvars.Context, not {type(context).__name__}")
        handle = Handle(callback, args, context, self)
        # (add_callback, inlined: every Task step of a coroutine on this
        # loop is scheduled here, once per awaited read.)
        self._callbacks.append((handle._run, ()))
        if self._polling or threading.get_ident() != self._thread_ident:
            self._waker.wake()
        return handle

    call_soon_threadsafe = call_soon

    def run_forever(self) -> None:
        """asyncio's name for :meth:`start`."""
        self.start()

    def run_until_complete(self, future: Awaitable[_T]) -> _T:
        """asyncio's ``run_until_complete``: :meth:`run_sync` on *future*."""
        if not inspect.isawaitable(future):
            raise TypeError(f"an awaitable is required, not {type(future).__name__}")
        result: _T = self.run_sync(lambda: future)
        return result

    def is_running(self) -> bool:
        """asyncio's name for :meth:`running`."""
        return self._running

    def is_closed(self) -> bool:
        """asyncio's name for :meth:`closed`."""
        return self._closed

    def get_debug(self) -> bool:
        """asyncio's debug flag (only stored: this loop has no debug mode)."""
        return self._debug

    def set_debug(self, enabled: bool) -> None:
        """Set the flag :meth:`get_debug` returns; futures then record
        where they were created."""
        self._debug = bool(enabled)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        """Log *context* (asyncio's error report) on the ``iostream`` logger."""
        message = context.get("message") or "Unhandled exception in event loop"
        error = context.get("exception")
        exc_info: Any = (type(error), error, error.__traceback__) if error is not None else None
        details = [
            f"{key}: {value!r}"
            for key, value in sorted(context.items())
            if key not in ("message", "exception")
        ]
        if details:
            message = message + "\n" + "\n".join(details)
        app_log.error("%s", message, exc_info=exc_info)

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        """asyncio's error report (an unretrieved Future exception, a pending
        Task destroyed...): the handler set, else
        :meth:`default_exception_handler`. Never raises."""
        handler = self._exception_handler
        if handler is not None:
            try:
                handler(self, context)
                return
            except Exception:
                app_log.exception("Exception in the event loop's exception handler")
        try:
            self.default_exception_handler(context)
        except Exception:  # pragma: no cover - logging itself failed
            pass

    def set_exception_handler(
        self, handler: Callable[[Any, dict[str, Any]], object] | None
    ) -> None:
        """asyncio's ``set_exception_handler``: ``handler(loop, context)``."""
        if handler is not None and not callable(handler):
            raise TypeError(f"handler must be callable or None, not {type(handler).__name__}")
        self._exception_handler = handler

    def get_exception_handler(self) -> Callable[[Any, dict[str, Any]], object] | None:
        """The handler :meth:`set_exception_handler` set, or ``None``."""
        return self._exception_handler

    def run_in_executor(
        self, executor: concurrent.futures.Executor | None, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        """Run ``func(*args)`` in *executor* (``None``: a thread pool of this
        loop's, shut down at :meth:`close`); an awaitable Future of its result."""
        if self._closed:
            raise RuntimeError("IOLoop is closed")
        if executor is None:
            if self._default_executor is None:
                self._default_executor = concurrent.futures.ThreadPoolExecutor(
                    thread_name_prefix="iostream-ioloop"
                )
            executor = self._default_executor
        return asyncio.wrap_future(executor.submit(func, *args), loop=self._futures_loop)

    def set_default_executor(self, executor: concurrent.futures.ThreadPoolExecutor) -> None:
        """The executor ``run_in_executor(None, ...)`` uses."""
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError(f"executor must be a ThreadPoolExecutor, not {type(executor).__name__}")
        self._default_executor = executor

    async def getaddrinfo(
        self,
        host: bytes | str | None,
        port: bytes | str | int | None,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        """:func:`socket.getaddrinfo` in the default executor."""
        return await self.run_in_executor(
            None, socket.getaddrinfo, host, port, family, type, proto, flags
        )

    async def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int = 0) -> tuple[str, str]:
        """:func:`socket.getnameinfo` in the default executor."""
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)

    def _asyncgen_firstiter_hook(self, agen: Any) -> None:
        self._asyncgens.add(agen)

    def _asyncgen_finalizer_hook(self, agen: Any) -> None:
        # Called by the garbage collector, maybe from another thread.
        self._asyncgens.discard(agen)
        if not self._closed:
            self.add_callback(self.create_task, agen.aclose())

    async def shutdown_asyncgens(self) -> None:
        """Close the async generators still open (asyncio's method)."""
        gens = list(self._asyncgens)
        self._asyncgens.clear()
        if not gens:
            return
        results = await asyncio.gather(*(gen.aclose() for gen in gens), return_exceptions=True)
        for gen, result in zip(gens, results, strict=True):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": f"error while closing asynchronous generator {gen!r}",
                        "exception": result,
                        "asyncgen": gen,
                    }
                )

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        """Shut the default executor down without blocking the loop.

        As asyncio's: its threads are joined from a thread of their own; if
        that takes longer than *timeout* seconds, a :class:`RuntimeWarning`
        says so and the executor is told to shut down without waiting.
        """
        executor = self._default_executor
        if executor is None:
            return
        self._default_executor = None
        done = self.create_future()

        def join() -> None:
            try:
                executor.shutdown(wait=True)
            finally:
                try:
                    self.call_soon_threadsafe(_resolve_once, done)
                except RuntimeError:
                    pass  # the loop was closed meanwhile

        thread = threading.Thread(target=join, name="iostream-executor-shutdown", daemon=True)
        thread.start()
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout)
        except asyncio.TimeoutError:
            warnings.warn(
                f"the default executor did not finish joining its threads within {timeout} seconds",
                RuntimeWarning,
                stacklevel=2,
            )
            executor.shutdown(wait=False)
        else:
            thread.join()

    def stop(self) -> None:
        """Make :meth:`start` return after the current iteration.

        Works from a callback, a handler or another thread. Before
        :meth:`start`, it makes the next ``start`` return at once.
        """
        self._running = False
        self._stopped = True
        if self._polling or threading.get_ident() != self._thread_ident:
            self._waker.wake()

    def running(self) -> bool:
        """True while :meth:`start` is running."""
        return self._running

    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def close(self, all_fds: bool = False) -> None:
        """Release the poller and the waker. Idempotent.

        With ``all_fds=True``, also close every fd that still has a handler
        (objects through their ``close()``, ints with ``os.close``).
        """
        if self._closed:
            return
        if self._running:
            raise RuntimeError("cannot close a running IOLoop; stop it first")
        self._closed = True
        waker_fd = self._waker.fileno()
        if all_fds:
            for fd, (fileobj, _) in list(self._handlers.items()):
                if fd == waker_fd:
                    continue
                try:
                    if isinstance(fileobj, int):
                        # socket.close, not os.close: on Windows (the only
                        # fds select takes there are sockets) os.close
                        # cannot close a socket handle.
                        if _WINDOWS:
                            socket.close(fileobj)
                        else:
                            os.close(fileobj)
                    else:
                        fileobj.close()
                except OSError:
                    pass
        self._handlers.clear()
        self._callbacks.clear()
        self._timers.clear()
        self._waker.close()
        self._watcher.close()  # and the chosen poller
        self.poller.close()
        if IOLoop._instance is self:
            IOLoop.clear_instance()
        if getattr(_current, "loop", None) is self:
            _current.loop = None
        if self._default_executor is not None:
            self._default_executor.shutdown(wait=False)
            self._default_executor = None

    def __repr__(self) -> str:
        return f"<IOLoop poller={self.poller.name!r} handlers={self.handler_count()}>"


def _not_provided(name: str) -> Callable[..., Any]:
    def method(self: IOLoop, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"IOLoop.{name} is not provided by iostream's native IOLoop, which runs "
            "futures, tasks and timers only; for asyncio's sockets, transports, "
            "pipes and signals run asyncio on iostream's pollers with "
            "iostream.asyncio (new_event_loop() / run()), or use "
            "IOLoop.from_asyncio() on an asyncio loop"
        )

    method.__name__ = method.__qualname__ = name
    method.__doc__ = (
        "Not provided: raises :class:`NotImplementedError` naming ``iostream.asyncio``."
    )
    return method


#: asyncio event-loop methods the native IOLoop does not provide.
_NOT_PROVIDED = (
    "add_reader",
    "remove_reader",
    "add_writer",
    "remove_writer",
    "sock_recv",
    "sock_recv_into",
    "sock_recvfrom",
    "sock_recvfrom_into",
    "sock_sendall",
    "sock_sendto",
    "sock_connect",
    "sock_accept",
    "sock_sendfile",
    "sendfile",
    "start_tls",
    "create_connection",
    "create_server",
    "create_unix_connection",
    "create_unix_server",
    "create_datagram_endpoint",
    "connect_accepted_socket",
    "connect_read_pipe",
    "connect_write_pipe",
    "subprocess_exec",
    "subprocess_shell",
    "add_signal_handler",
    "remove_signal_handler",
)
for _name in _NOT_PROVIDED:
    setattr(IOLoop, _name, _not_provided(_name))
del _name


if hasattr(os, "register_at_fork"):  # POSIX only; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
