"""Calling a function every N milliseconds: :class:`PeriodicCallback`.

The schedule is a grid: run *n* is due at ``start + n * period`` on
:meth:`IOLoop.time`'s clock, whatever each run cost. A run that overruns one
or more periods does not make the missed runs happen in a burst afterwards:
they are skipped and the next run is the next point of the grid after now
(Tornado's rule). A clock that went backwards during a run is ignored: the
next run is one period after the previous due time.

``jitter`` spreads the runs of many callbacks with the same period (so that
they do not all fire together): each period is multiplied by a random
factor in ``[1 - jitter/2, 1 + jitter/2]``.
"""

from __future__ import annotations

import datetime
import inspect
import math
import numbers
import random
from collections.abc import Callable

from iostream.ioloop import IOLoop, Timeout, app_log

__all__ = ["PeriodicCallback"]


class PeriodicCallback:
    """Call ``callback()`` every *callback_time* milliseconds on an IOLoop.

    ``PeriodicCallback(callback, callback_time, jitter=0, io_loop=None)``:
    *callback_time* is in milliseconds (a number > 0) or a
    :class:`datetime.timedelta`; *jitter* is a fraction (0 = none, 0.1 =
    +/- 5 %). *io_loop* ``None`` means :meth:`IOLoop.current` when the
    PeriodicCallback is made (docs/guarantees.md; Tornado looks it up at :meth:`start`).

    Nothing runs before :meth:`start`. A callback may be a coroutine
    function: the next run is scheduled only once its coroutine finished, so
    runs never overlap. An exception a run raises is logged on the
    ``iostream`` logger and the runs go on.
    """

    def __init__(
        self,
        callback: Callable[[], object],
        callback_time: float | datetime.timedelta,
        jitter: float = 0,
        io_loop: IOLoop | None = None,
    ) -> None:
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        if isinstance(callback_time, datetime.timedelta):
            period_ms = callback_time / datetime.timedelta(milliseconds=1)
        elif isinstance(callback_time, numbers.Real) and not isinstance(callback_time, bool):
            period_ms = float(callback_time)
        else:
            raise TypeError(
                "callback_time must be a number of milliseconds or a timedelta, "
                f"not {type(callback_time).__name__}"
            )
        if not (period_ms > 0 and math.isfinite(period_ms)):
            raise ValueError(
                f"callback_time must be a positive, finite time, got {callback_time!r}"
            )
        if not isinstance(jitter, numbers.Real) or isinstance(jitter, bool):
            raise TypeError(f"jitter must be a number, not {type(jitter).__name__}")
        if not 0 <= jitter <= 2 or not math.isfinite(jitter):
            # Above 2 a period could come out negative.
            raise ValueError(f"jitter must be between 0 and 2, got {jitter!r}")
        if io_loop is not None and not isinstance(io_loop, IOLoop):
            raise TypeError(f"io_loop must be an IOLoop or None, not {type(io_loop).__name__}")
        #: The function called.
        self.callback: Callable[[], object] = callback
        #: The period, in milliseconds (a timedelta is converted).
        self.callback_time: float = period_ms
        #: The jitter fraction.
        self.jitter: float = float(jitter)
        #: The loop it runs on.
        self.io_loop: IOLoop = IOLoop.current() if io_loop is None else io_loop
        self._running: bool = False
        self._timeout: Timeout | None = None
        self._next_timeout: float = 0.0

    def start(self) -> None:
        """Start the runs: the first one is one period from now.

        A no-op while already running.
        """
        if self._running:
            return
        self._running = True
        self._next_timeout = self.io_loop.time()
        self._schedule_next()

    def stop(self) -> None:
        """Stop the runs (a coroutine run in progress finishes). Idempotent."""
        self._running = False
        if self._timeout is not None:
            self.io_loop.remove_timeout(self._timeout)
            self._timeout = None

    def is_running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._running

    async def _run(self) -> None:
        if not self._running:
            return
        self._timeout = None
        try:
            result = self.callback()
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception:
            app_log.exception("Exception in periodic callback %r", self.callback)
        finally:
            self._schedule_next()

    def _schedule_next(self) -> None:
        if self._running:
            self._update_next(self.io_loop.time())
            self._timeout = self.io_loop.add_timeout(self._next_timeout, self._run)

    def _update_next(self, now: float) -> None:
        """Move ``_next_timeout`` to the next point of the grid after *now*."""
        period = self.callback_time / 1000.0
        if self.jitter:
            period *= 1 + self.jitter * (random.random() - 0.5)
        if self._next_timeout <= now:
            # Late (the run took longer than a period): skip every point
            # already passed, rather than running them in a burst.
            self._next_timeout += (math.floor((now - self._next_timeout) / period) + 1) * period
        else:
            # Early: the clock went back during the run. Keep the grid.
            self._next_timeout += period

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<PeriodicCallback {self.callback!r} every {self.callback_time:g} ms, {state}>"
