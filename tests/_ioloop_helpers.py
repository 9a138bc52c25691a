"""Helpers for the IOLoop suite: a deadline that needs neither the loop's timers
nor its waker, a spy on ``poller.poll``, and fd counting.

Most IOLoop tests check the very machinery a timer-based deadline would rely on
(timers, the waker), so :class:`Watchdog` stops a stuck loop through a socket
pair of its own, written from a thread: the loop sees it as a plain READ event.
A loop that is stopped by the watchdog fails the test (:class:`LoopTimeout`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

from support import LoopTimeout

from iostream import READ, IOLoop

#: How long a test lets the loop run before the watchdog fails it. A passing
#: test never waits this long.
DEADLINE = 5.0

PollFunction = Callable[[float | None], list[tuple[int, int]]]


class Watchdog:
    """Stop *io_loop* after *timeout* seconds through a socket pair of its own.

    The watchdog thread writes one byte; the loop's poller reports it as READ
    and the watchdog's handler calls ``io_loop.stop()``. Neither the loop's
    timers nor its waker are involved, so it also stops loops whose timers or
    waker are broken. ``fired`` says whether it had to.
    """

    def __init__(self, io_loop: IOLoop, timeout: float = DEADLINE) -> None:
        self.io_loop = io_loop
        self.timeout = timeout
        self.fired = False
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._cancelled = threading.Event()
        io_loop.add_handler(self._reader, self._on_fire, READ)
        self._thread = threading.Thread(target=self._run, name="ioloop-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if not self._cancelled.wait(self.timeout):
            try:
                self._writer.send(b"!")
            except OSError:
                pass

    def _on_fire(self, fd: object, events: int) -> None:
        self.fired = True
        try:
            self._reader.recv(16)
        except OSError:
            pass
        self.io_loop.stop()

    def cancel(self) -> None:
        """Stop the thread, unregister and close the socket pair."""
        self._cancelled.set()
        self._thread.join(self.timeout + 5.0)
        if not self.io_loop.closed():
            self.io_loop.remove_handler(self._reader)
        self._reader.close()
        self._writer.close()

    def __enter__(self) -> Watchdog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()


def run_loop(io_loop: IOLoop, timeout: float = DEADLINE) -> float:
    """``io_loop.start()`` under a :class:`Watchdog`; return how long it ran.

    Raises :class:`LoopTimeout` if the watchdog had to stop the loop.
    """
    with Watchdog(io_loop, timeout) as watchdog:
        started = time.monotonic()
        io_loop.start()
        elapsed = time.monotonic() - started
    if watchdog.fired:
        raise LoopTimeout(f"the loop was still running after {timeout}s")
    return elapsed


class PollSpy:
    """Wraps a poller's ``poll``: counts calls, records timeouts and results.

    ``long_sleep`` is set when the loop enters a poll that may block for
    *long* seconds or more (``None`` counts: for ever) — the moment to poke it
    from another thread or a signal.
    """

    def __init__(self, poll: PollFunction, long: float = 1.0) -> None:
        self._poll = poll
        self._long = long
        self.calls = 0
        self.timeouts: list[float | None] = []
        self.results: list[list[tuple[int, int]]] = []
        self.long_sleep = threading.Event()

    def __call__(self, timeout: float | None) -> list[tuple[int, int]]:
        self.calls += 1
        self.timeouts.append(timeout)
        if timeout is None or timeout >= self._long:
            self.long_sleep.set()
        result = self._poll(timeout)
        self.results.append(list(result))
        return result


def after_long_sleep(spy: PollSpy, action: Callable[[], object]) -> threading.Thread:
    """Start a thread that calls *action* once the loop sleeps in ``poll``.

    It waits for :attr:`PollSpy.long_sleep` (bounded), then a few milliseconds
    more so that the loop is really blocked in the kernel, then acts: this is
    the cross-thread scenario itself, not a wait for an event the test could
    await.
    """

    def run() -> None:
        if spy.long_sleep.wait(DEADLINE):
            time.sleep(0.02)
            action()

    thread = threading.Thread(target=run, name="ioloop-poker", daemon=True)
    thread.start()
    return thread


def fd_dir() -> str | None:
    """The directory listing this process's open fds, if the OS has one."""
    for path in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(path):
            return path
    return None


def open_fd_count(path: str) -> int:
    """How many fds this process has open (listing *path* opens one more
    for a moment, the same on every call)."""
    return len(os.listdir(path))
