"""How much CPU other processes took while a run was measured (Linux ``/proc/stat``).

The machine may be shared. A run's *foreign load* is the CPU time the whole
machine spent busy (user, nice, system, irq, softirq, steal) minus what the
harness and its workers spent, divided by the run's wall time: the cores
that something else used meanwhile. A run with a high foreign load is
repeated (see :data:`MAX_FOREIGN` and :data:`RETRIES`); the least disturbed
attempt is kept and its load recorded; before each attempt the harness
waits (a bounded time) for a quiet moment. Where ``/proc/stat`` does not exist
the load is unknown and runs are never repeated.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

#: A run during which other processes used more than this many cores is repeated.
MAX_FOREIGN = 0.25

#: Length of the window :func:`wait_quiet` samples, in seconds.
_WINDOW = 0.5

# Columns of the "cpu" line of /proc/stat that count as busy (user nice system
# idle iowait irq softirq steal): idle and iowait do not.
_BUSY = (0, 1, 2, 5, 6, 7)


def _machine_busy() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()[1:]
    except OSError:
        return None
    ticks = sum(int(fields[i]) for i in _BUSY if i < len(fields))
    return ticks / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    try:
        import resource
    except ImportError:  # Windows: no /proc/stat either, so the load is unknown anyway.
        return 0.0
    mine = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class LoadMeter:
    """Measures the foreign load between :meth:`start` and :meth:`foreign`.

    The workers must have been waited for before :meth:`foreign` (their CPU
    time reaches ``RUSAGE_CHILDREN`` only then).
    """

    busy: float | None = None
    own: float = 0.0
    wall: float = 0.0

    def start(self) -> None:
        """Take the starting readings."""
        self.busy, self.own, self.wall = _machine_busy(), _own_cpu(), time.monotonic()

    def foreign(self) -> float | None:
        """Return the cores other processes used since :meth:`start`, or ``None`` if unknown."""
        busy = _machine_busy()
        if busy is None or self.busy is None:
            return None
        wall = time.monotonic() - self.wall
        others = (busy - self.busy) - (_own_cpu() - self.own)
        return max(0.0, others / wall) if wall > 0 else None


def wait_quiet(limit: float) -> float:
    """Wait until other processes use at most :data:`MAX_FOREIGN` cores, or *limit* seconds.

    Return the seconds waited. Without ``/proc/stat``, return at once.
    """
    started = time.monotonic()
    while time.monotonic() - started < limit:
        meter = LoadMeter()
        meter.start()
        time.sleep(_WINDOW)
        foreign = meter.foreign()
        if foreign is None or foreign <= MAX_FOREIGN:
            break
    return time.monotonic() - started
