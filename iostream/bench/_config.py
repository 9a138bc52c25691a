"""Workload sizes, metric names and the targets of the benchmark issue.

Everything a worker process needs to rebuild a run is a :class:`Sizes` (plain
integers, JSON-serialisable), so the harness passes it on the command line
and the receiver, the sender and the client all derive the same phases and
payloads from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

MiB = 1024 * 1024

#: Size of one ``read_bytes`` in the bulk workloads, and of one payload block.
BLOCK = 64 * 1024

#: Length of one line of the lines workload, delimiter included.
LINE = 100

#: Length of one echo line, delimiter included.
ECHO_LINE = 64

#: Prefix of the workloads in which both ends are the peer under test.
OWN = "own-"

#: Every workload, in the order they run and are reported. ``own-*``: the
#: peer's own client writes (64 KiB ``write()`` calls) and its own server
#: reads; the others face the shared sender or the shared echo client.
WORKLOADS: tuple[str, ...] = (
    "bulk",
    "lines",
    "bigmsg",
    "own-bulk",
    "own-lines",
    "own-bigmsg",
    "echo",
    "idle",
    "tls-bulk",
    "memory",
)

#: Workloads in which the library under test is the receiving side.
RECEIVE_WORKLOADS = frozenset({"bulk", "lines", "bigmsg", "tls-bulk"})

#: Workloads in which both ends are the library under test.
OWN_WORKLOADS = frozenset({"own-bulk", "own-lines", "own-bigmsg"})

#: Workloads made of one-way runs (a receiver and a sender).
ONE_WAY_WORKLOADS = RECEIVE_WORKLOADS | OWN_WORKLOADS

#: Metrics whose ``--quick`` ratio is not expected to match the full run within 25%
#: (see bench/README.md, "Quick mode"); the quick report marks them "indicative only".
QUICK_INDICATIVE = frozenset({"bulk", "tls-bulk", "own-bulk", "own-bigmsg-until"})

#: The peer every ratio is measured against.
BASELINE = "asyncio-streams"


@dataclass(frozen=True)
class Sizes:
    """The size of every workload; :data:`FULL` and :data:`QUICK` are the two presets.

    Besides sizes: ``repeat`` (repetitions), ``timeout`` (per process wait),
    and the noise policy: ``retries`` (repeats of a run that other processes
    disturbed) and ``quiet_wait`` (seconds to wait for a quiet machine
    before each attempt); see :mod:`iostream.bench._load`.
    """

    bulk_bytes: int
    lines: int
    big_bytes: int
    big_until: int
    echo_conns: int
    echo_seconds: float
    idle_counts: tuple[int, ...]
    idle_seconds: float
    tls_bytes: int
    memory_conns: int
    repeat: int
    timeout: float
    retries: int
    quiet_wait: float

    def to_json(self) -> dict[str, Any]:
        """Return the sizes as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sizes:
        """Rebuild sizes from :meth:`to_json` output."""
        fields = dict(data)
        fields["idle_counts"] = tuple(fields["idle_counts"])
        return cls(**fields)


#: The sizes the benchmark issue asks for.
FULL = Sizes(
    bulk_bytes=512 * MiB,
    lines=2_000_000,
    big_bytes=64 * MiB,
    big_until=16 * MiB,
    echo_conns=100,
    echo_seconds=5.0,
    idle_counts=(0, 1_000, 10_000),
    idle_seconds=3.0,
    tls_bytes=512 * MiB,
    memory_conns=10_000,
    repeat=3,
    timeout=180.0,
    retries=2,
    quiet_wait=15.0,
)

#: Scaled down so that the whole quick run takes about a minute. The big
#: messages keep their full sizes (a 16 MiB read_bytes allocates and copies
#: differently from a 64 MiB one, and each takes well under a second) and
#: bulk is long enough for the receive window to finish growing, so that
#: those ratios can agree with a full run's; see bench/README.md, "Quick mode".
QUICK = Sizes(
    bulk_bytes=128 * MiB,
    lines=200_000,
    big_bytes=64 * MiB,
    big_until=16 * MiB,
    echo_conns=100,
    echo_seconds=1.0,
    idle_counts=(0, 1_000),
    idle_seconds=0.7,
    tls_bytes=32 * MiB,
    memory_conns=2_000,
    repeat=1,
    timeout=60.0,
    retries=0,
    quiet_wait=0.0,
)


def human_size(n: int) -> str:
    """Return *n* bytes as ``"64 MiB"``, ``"64 KiB"`` or ``"100 B"``."""
    for unit, scale in (("MiB", MiB), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class Metric:
    """One row of the results table."""

    key: str
    label: str
    unit: str
    higher_is_better: bool


def metrics_for(workload: str, sizes: Sizes) -> list[Metric]:
    """Return the rows that *workload* produces at *sizes*."""
    if workload in OWN_WORKLOADS:
        writes = "64 KiB write()s -> "
        return [
            dataclasses.replace(
                metric,
                key=OWN + metric.key,
                label=metric.label.replace(" read", f" {writes}read", 1),
            )
            for metric in metrics_for(workload[len(OWN) :], sizes)
        ]
    if workload == "bulk":
        return [
            Metric("bulk", f"bulk {human_size(sizes.bulk_bytes)}, read_bytes(65536)", "MiB/s", True)
        ]
    if workload == "lines":
        return [Metric("lines", f"lines {sizes.lines:,} x 100 B, read_until", "lines/s", True)]
    if workload == "bigmsg":
        return [
            Metric("bigmsg-bytes", f"bigmsg read_bytes({human_size(sizes.big_bytes)})", "s", False),
            Metric("bigmsg-until", f"bigmsg read_until({human_size(sizes.big_until)})", "s", False),
        ]
    if workload == "echo":
        return [Metric("echo", f"echo {sizes.echo_conns} conns x 64 B", "round trips/s", True)]
    if workload == "idle":
        return [
            Metric(f"idle-{n}", f"idle {n:,} + 1 active", "round trips/s", True)
            for n in sizes.idle_counts
        ]
    if workload == "tls-bulk":
        return [Metric("tls-bulk", f"tls-bulk {human_size(sizes.tls_bytes)}", "MiB/s", True)]
    if workload == "memory":
        return [Metric("memory", f"memory, {sizes.memory_conns:,} idle conns", "KiB/conn", False)]
    raise ValueError(f"workload: expected one of {', '.join(WORKLOADS)}, got {workload!r}")


@dataclass(frozen=True)
class Target:
    """A goal of the benchmark issue: a ratio of one column against another.

    The *subject* column (``None``: the primary iostream column; else the
    first column whose label starts with this peer name) is compared on
    ``metric`` with the *baseline* column (``None``: :data:`BASELINE`),
    except for a target with ``versus``, which compares the subject's
    ``metric`` with its own ``versus`` metric (the idle target).
    """

    metric: str
    minimum: float
    description: str
    versus: str | None = None
    subject: str | None = None
    baseline: str | None = None


TARGETS: tuple[Target, ...] = (
    Target("own-bulk", 3.0, "bulk, both ends, >= 3x asyncio streams"),
    Target("own-bulk", 1.0, "bulk, both ends, ahead of trio", baseline="trio"),
    Target("own-lines", 1.5, "lines, both ends, >= 1.5x asyncio streams (callback API)"),
    Target(
        "own-lines",
        1.2,
        "lines, both ends, >= 1.2x asyncio streams (await read_until)",
        subject="iostream-await",
    ),
    Target("own-bigmsg-bytes", 2.5, "big read_bytes, both ends, >= 2.5x asyncio streams"),
    Target("own-bigmsg-until", 1.6, "big read_until, both ends, >= 1.6x asyncio streams"),
    Target("echo", 3.0, "echo >= 3x asyncio streams"),
    Target("echo", 1.0, "echo ahead of uvloop streams", baseline="uvloop-streams"),
    Target("idle-10000", 0.9, "idle 10,000 within 10% of idle 0 (epoll)", versus="idle-0"),
    Target("memory", 1.0, "memory per idle conn <= asyncio streams"),
    Target("tls-bulk", 1.5, "tls-bulk >= 1.5x asyncio streams"),
    Target(
        "echo",
        0.9,
        "asyncio streams on iostream's loop, echo, within 10% of asyncio's loop",
        subject="asyncio-on-iostream",
    ),
    Target(
        "lines",
        0.9,
        "asyncio streams on iostream's loop, lines, within 10% of asyncio's loop",
        subject="asyncio-on-iostream",
    ),
)
