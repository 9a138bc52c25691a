"""Test helpers shared by every suite: run an IOLoop until an event, with a deadline.

``Waiter`` is the Tornado ``AsyncTestCase.stop()/wait()`` pattern: the test
arranges callbacks that call :meth:`Waiter.done`; :meth:`Waiter.wait` runs the
loop until ``done`` has been called ``expected`` times, or fails the test when
the deadline passes. No sleeping, no polling: the loop stops on the event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iostream import IOLoop
from iostream.testing import socket_pair

#: One loopback pair for every suite: the public helper users get too.
loopback_pair = socket_pair

#: Default deadline for one wait, in seconds. Generous: CI machines are slow,
#: and a passing test never waits this long.
DEFAULT_TIMEOUT = 20.0


class LoopTimeout(AssertionError):
    """The loop did not reach the awaited event before the deadline."""


class Waiter:
    """Run *io_loop* until :meth:`done` has been called *expected* times."""

    def __init__(self, io_loop: IOLoop, expected: int = 1) -> None:
        self.io_loop = io_loop
        self.expected = expected
        self.calls = 0
        self.values: list[Any] = []

    def done(self, value: Any = None) -> None:
        """Record *value*; stop the loop once the expected count is reached."""
        self.calls += 1
        self.values.append(value)
        if self.calls >= self.expected:
            self.io_loop.stop()

    def callback(self, *args: Any) -> None:
        """Like :meth:`done`, usable as any callback: records ``args``
        (a single argument is recorded bare)."""
        self.done(args[0] if len(args) == 1 else args)

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Run the loop until done (return the last value) or fail on *timeout*.

        Something else may stop the loop first (another waiter, say): the
        loop is then started again, against the same overall deadline.
        """
        deadline = self.io_loop.time() + timeout
        while self.calls < self.expected:
            remaining = deadline - self.io_loop.time()
            if remaining <= 0:
                raise LoopTimeout(
                    f"timed out after {timeout}s: {self.calls} of {self.expected} events"
                )
            handle = self.io_loop.call_later(remaining, self.io_loop.stop)
            self.io_loop.start()
            self.io_loop.remove_timeout(handle)
        return self.values[-1] if self.values else None


def run_until(
    io_loop: IOLoop, condition: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Run *io_loop* until *condition()* holds; fail after *timeout* seconds.

    Prefer :class:`Waiter`, which stops on the event itself. This variant
    re-checks *condition* every millisecond, for the rare state that no single
    callback can signal (for example "the fd table is back to its size").
    """
    deadline_hit: list[bool] = []

    def check() -> None:
        if condition():
            io_loop.stop()
        elif not deadline_hit:
            io_loop.call_later(0.001, check)

    def on_deadline() -> None:
        deadline_hit.append(True)
        io_loop.stop()

    handle = io_loop.call_later(timeout, on_deadline)
    io_loop.add_callback(check)
    io_loop.start()
    io_loop.remove_timeout(handle)
    if not condition():
        raise LoopTimeout(f"condition not met within {timeout}s")
