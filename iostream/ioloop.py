"""The event loop: fd handlers, callbacks and timers on a pluggable poller.

One iteration of :meth:`IOLoop.start` does, in order:

1. take the callbacks queued so far (callbacks they add wait for the next
   iteration, so a callback that re-adds itself cannot starve I/O);
2. take the timers whose deadline has passed;
3. run those callbacks, then those timers;
4. wait in ``poller.poll`` — for ever if nothing is queued or scheduled, until
   the next deadline if a timer is pending, not at all if callbacks wait;
5. call the handler of each fd the poller reported.

Each step is a plain loop over plain containers — a ``deque`` of callbacks,
a ``heapq`` of timers, a ``dict`` of handlers — because this path runs once
per batch of events and the benchmark holds it to a high bar. An exception
in a callback, timer or handler is logged on the ``iostream`` logger and the
loop goes on.

Waking up: :meth:`IOLoop.add_callback` may be called from another thread or
from a signal handler while the loop sleeps in ``poll``. The loop then needs
a kick, which is one byte written to a socket pair it watches (a socket
pair, not a pipe, because Windows' ``select`` only takes sockets).
"""

from __future__ import annotations

import datetime
import heapq
import logging
import math
import numbers
import os
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from iostream._platform import _WINDOWS
from iostream.pollers import ERROR, READ, WRITE, Poller, choose
from iostream.pollers.base import FileDescriptorLike, fd_of

#: The logger every layer reports unexpected exceptions on.
app_log = logging.getLogger("iostream")

#: Handler signature: ``handler(fd, events)``, the fd as it was passed.
Handler = Callable[[Any, int], object]

#: Rebuild the timer heap once this many cancelled timers sit in it (and they
#: are more than half of it): cancelling stays O(1), and the heap never fills
#: up with dead entries.
_CANCELLED_TIMERS_BEFORE_CLEANUP = 512


class _Timeout:
    """A scheduled call; the handle :meth:`IOLoop.call_later` returns.

    Cancelling (``IOLoop.remove_timeout``) only drops the callback: the entry
    stays in the heap until it is popped, so cancellation costs O(1).
    """

    __slots__ = ("args", "callback", "deadline")

    def __init__(self, deadline: float, callback: Callable[..., object], args: tuple[Any, ...]):
        self.deadline = deadline
        self.callback: Callable[..., object] | None = callback
        self.args = args

    def __repr__(self) -> str:
        state = "cancelled or done" if self.callback is None else repr(self.callback)
        return f"<Timeout at {self.deadline:.6f}: {state}>"


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

    def __init__(self, poller: Poller | str | None = None) -> None:
        if poller is None or isinstance(poller, str):
            self.poller: Poller = choose(poller)()
        elif isinstance(poller, Poller):
            self.poller = poller
        else:
            raise TypeError(
                "poller must be None, a poller name or a Poller instance, "
                f"not {type(poller).__name__}"
            )
        # fd -> (the object the caller passed, its handler).
        self._handlers: dict[int, tuple[Any, Handler]] = {}
        # id(object) -> fd, for objects with fileno(): a socket closed while
        # registered answers fileno() == -1, so it is found by identity. The
        # object itself stays referenced by _handlers, so its id is not reused.
        self._fd_of_object: dict[int, int] = {}
        self._callbacks: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._timers: list[tuple[float, int, _Timeout]] = []
        self._timer_seq = 0
        self._cancelled_timers = 0
        self._running = False
        self._stopped = False
        self._closed = False
        self._polling = False
        self._thread_ident: int | None = None
        self._waker = _Waker()
        self.add_handler(self._waker.fileno(), self._waker.drain, READ)
        _live_loops.add(self)

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

    # -- fd handlers --------------------------------------------------------

    def _resolve(self, fd: FileDescriptorLike) -> int:
        """The integer fd for *fd*, finding closed sockets by identity."""
        if isinstance(fd, int):
            return fd
        known = self._fd_of_object.get(id(fd))
        return known if known is not None else fd_of(fd)

    def add_handler(self, fd: FileDescriptorLike, handler: Handler, events: int) -> None:
        """Call ``handler(fd, events)`` when *fd* is ready for *events*.

        *fd* is an int or an object with ``fileno()``; the handler receives it
        as it was passed. Adding an fd that already has a handler raises
        :class:`FileExistsError` and keeps the first handler. The poller may
        refuse the fd (``select`` above its limit: :class:`ValueError`); then
        nothing is registered.
        """
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        fileno = fd_of(fd)
        if fileno in self._handlers:
            raise FileExistsError(f"fd {fileno} already has a handler in this IOLoop")
        self.poller.register(fileno, events)
        self._handlers[fileno] = (fd, handler)
        if not isinstance(fd, int):
            self._fd_of_object[id(fd)] = fileno

    def update_handler(self, fd: FileDescriptorLike, events: int) -> None:
        """Change the events *fd* is watched for.

        Raises :class:`FileNotFoundError` if *fd* has no handler.
        """
        fileno = self._resolve(fd)
        if fileno not in self._handlers:
            raise FileNotFoundError(f"fd {fileno} has no handler in this IOLoop")
        self.poller.modify(fileno, events)

    def remove_handler(self, fd: FileDescriptorLike) -> None:
        """Stop watching *fd*; silent for an fd that has no handler.

        A socket object is found by identity, so this works after
        ``sock.close()``.
        """
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
        entry = self._handlers.pop(fileno, None)
        if entry is None:
            return
        if not isinstance(entry[0], int):
            self._fd_of_object.pop(id(entry[0]), None)
        try:
            self.poller.unregister(fileno)
        except (FileNotFoundError, ValueError):
            # Already gone from the kernel's set (closed, or never accepted).
            pass

    def handler_count(self) -> int:
        """How many fds have a handler, not counting the loop's own waker."""
        return len(self._handlers) - 1

    # -- callbacks and timers -----------------------------------------------

    def add_callback(self, callback: Callable[..., object], *args: Any) -> None:
        """Call ``callback(*args)`` on the next loop iteration.

        Safe from any thread and from signal handlers: ``deque.append`` is
        atomic, and a loop sleeping in ``poll`` (or running in another
        thread) is woken through its socket pair. Callbacks added while
        callbacks run, run on the next iteration.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        self._callbacks.append((callback, args))
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
        """Same as :meth:`add_callback` (Tornado's name for it)."""
        self.add_callback(callback, *args)

    def time(self) -> float:
        """Seconds on a monotonic clock; the clock of every deadline."""
        return time.monotonic()

    def add_timeout(
        self,
        deadline: float | datetime.timedelta,
        callback: Callable[..., object],
        *args: Any,
    ) -> _Timeout:
        """Call ``callback(*args)`` at *deadline* and return a handle for
        :meth:`remove_timeout`.

        *deadline* is a time on :meth:`time`'s clock, or a
        :class:`datetime.timedelta` from now.
        """
        if isinstance(deadline, datetime.timedelta):
            when = self.time() + deadline.total_seconds()
        elif isinstance(deadline, numbers.Real) and not isinstance(deadline, bool):
            when = float(deadline)
            if not math.isfinite(when):
                raise ValueError(f"deadline must be a finite number, got {deadline!r}")
        else:
            raise TypeError(
                "deadline must be a number on IOLoop.time()'s clock or a timedelta, "
                f"not {type(deadline).__name__}"
            )
        return self._schedule(when, callback, args)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> _Timeout:
        """Call ``callback(*args)`` after *delay* seconds; return the handle."""
        if not isinstance(delay, numbers.Real) or isinstance(delay, bool):
            raise TypeError(f"delay must be a number of seconds, not {type(delay).__name__}")
        if not math.isfinite(delay):
            # A NaN deadline would sit on top of the heap for ever, blocking
            # every later timer; an infinite one is "never": don't add it.
            raise ValueError(f"delay must be a finite number of seconds, got {delay!r}")
        return self._schedule(self.time() + float(delay), callback, args)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> _Timeout:
        """Call ``callback(*args)`` at *when* on :meth:`time`'s clock."""
        return self.add_timeout(when, callback, *args)

    def _schedule(
        self, when: float, callback: Callable[..., object], args: tuple[Any, ...]
    ) -> _Timeout:
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        handle = _Timeout(when, callback, args)
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, handle))
        if threading.get_ident() != self._thread_ident:
            # Another thread: the loop may sleep past the new deadline.
            self._waker.wake()
        return handle

    def remove_timeout(self, handle: _Timeout) -> None:
        """Cancel a timer; a no-op for one that already ran or was cancelled."""
        if not isinstance(handle, _Timeout):
            raise TypeError(
                f"handle must be what call_later/add_timeout returned, not {type(handle).__name__}"
            )
        if handle.callback is not None:
            handle.callback = None
            handle.args = ()
            self._cancelled_timers += 1

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
        previous_ident = self._thread_ident
        self._thread_ident = threading.get_ident()
        try:
            self._run()
        finally:
            self._running = False
            self._stopped = False
            self._thread_ident = previous_ident

    def _run(self) -> None:
        callbacks = self._callbacks
        timers = self._timers
        handlers = self._handlers
        poll = self.poller.poll
        run = self._run_callback
        while True:
            ready = len(callbacks)
            due: list[_Timeout] = []
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

            for _ in range(ready):
                callback, args = callbacks.popleft()
                run(callback, args)
            for handle in due:
                callback = handle.callback  # type: ignore[assignment]
                if callback is not None:
                    handle.callback = None
                    run(callback, handle.args)
                else:
                    # Cancelled by an earlier one of this batch, after it
                    # left the heap: remove_timeout counted it as in the heap.
                    self._cancelled_timers -= 1

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
                timeout = max(0.0, timers[0][0] - self.time())
            else:
                timeout = None
            try:
                events = poll(timeout)
            finally:
                self._polling = False

            for fd, mask in events:
                entry = handlers.get(fd)
                if entry is None:
                    continue  # removed by an earlier handler in this batch
                try:
                    entry[1](entry[0], mask)
                except Exception:
                    app_log.exception("Exception in I/O handler for fd %r", entry[0])

    def _run_callback(self, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        try:
            callback(*args)
        except Exception:
            app_log.exception("Exception in callback %r", callback)

    def _drop_cancelled_timers(self) -> None:
        # In place: the running loop holds a reference to this very list.
        self._timers[:] = [entry for entry in self._timers if entry[2].callback is not None]
        heapq.heapify(self._timers)
        self._cancelled_timers = 0

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
        self._fd_of_object.clear()
        self._callbacks.clear()
        self._timers.clear()
        self._waker.close()
        self.poller.close()
        if IOLoop._instance is self:
            IOLoop.clear_instance()

    def __repr__(self) -> str:
        return f"<IOLoop poller={self.poller.name!r} handlers={self.handler_count()}>"


if hasattr(os, "register_at_fork"):  # POSIX only; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
