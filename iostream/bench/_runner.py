"""Running the workloads: which processes, in what order, and what each run measured.

Every measurement is one fresh pair of processes (receiver and sender, or
server and client). Repetitions are interleaved (every peer once, then every
peer again) so that a change in the machine's load spreads over all peers.
A run posts a number only if both sides finished, every byte checked out
and the byte counts agree; otherwise it is recorded as a failure.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iostream.bench import _jobs, _load, _tls
from iostream.bench._config import ONE_WAY_WORKLOADS, OWN, MiB, Sizes
from iostream.bench._process import RunFailed, Worker

#: select(2) cannot watch fds >= FD_SETSIZE on POSIX.
_SELECT_LIMIT = 1024
#: fds a server has besides its connections (std streams, listener, waker, poller).
_SPARE_FDS = 16


@dataclass(frozen=True)
class Variant:
    """One column: a peer, and for iostream the poller."""

    peer: str
    poller: str | None
    label: str


@dataclass(frozen=True)
class Job:
    """One measurement: a workload (and idle count) on a variant, repetition ``rep``."""

    workload: str
    variant: Variant
    rep: int
    idle: int = 0

    @property
    def metric_keys(self) -> list[str]:
        """The metrics this job produces."""
        if self.workload in ("bigmsg", f"{OWN}bigmsg"):
            return _jobs.parts(self.workload)
        if self.workload == "idle":
            return [f"idle-{self.idle}"]
        return [self.workload]


@dataclass
class Context:
    """What every job needs: sizes, the temporary directory, the certificate."""

    sizes: Sizes
    workdir: Path
    cert: _tls.CertFiles | None
    profile_dir: Path | None = None


@dataclass
class Outcome:
    """What a job produced: metric values, or the reason it failed."""

    job: Job
    values: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def skip_reason(workload: str, variant: Variant, count: int) -> str | None:
    """Return why *variant* cannot run *workload* with *count* connections, if it cannot."""
    if variant.poller == "select" and count + _SPARE_FDS > _SELECT_LIMIT:
        return (
            f"{variant.label} skipped for {workload} with {count:,} connections: "
            f"select cannot watch fds >= FD_SETSIZE ({_SELECT_LIMIT})"
        )
    return None


def run_job(job: Job, ctx: Context) -> Outcome:
    """Run *job*, again if other processes disturbed it; keep the least disturbed attempt.

    The kept outcome's ``extra["foreign_load"]`` is the cores other
    processes used meanwhile (see :mod:`iostream.bench._load`).
    """
    best: Outcome | None = None
    waited = 0.0
    for _ in range(ctx.sizes.retries + 1):
        waited += _load.wait_quiet(ctx.sizes.quiet_wait)
        meter = _load.LoadMeter()
        meter.start()
        outcome = run_once(job, ctx)
        foreign = meter.foreign()
        outcome.extra["foreign_load"] = None if foreign is None else round(foreign, 2)
        outcome.extra["waited"] = round(waited, 1)
        if outcome.error is not None or foreign is None or foreign <= _load.MAX_FOREIGN:
            return outcome
        if best is None or foreign < best.extra["foreign_load"]:
            best = outcome
    assert best is not None
    return best


def run_once(job: Job, ctx: Context) -> Outcome:
    """Run *job* in fresh processes and return its verified values."""
    runner: Callable[[Job, Context], Outcome]
    if job.workload in ONE_WAY_WORKLOADS:
        runner = _one_way
    elif job.workload == "memory":
        runner = _memory
    else:
        runner = _echo
    try:
        return runner(job, ctx)
    except RunFailed as exc:
        return Outcome(job, error=str(exc))


def _peer_spec(job: Job, ctx: Context, part: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"peer": job.variant.peer, "poller": job.variant.poller}
    if ctx.profile_dir is not None:
        idle = f"-{job.idle}" if job.workload == "idle" else ""
        name = f"{part or job.workload}{idle}-{job.variant.label}-rep{job.rep}.prof"
        spec["profile"] = str(ctx.profile_dir / name)
    return spec


def _one_way(job: Job, ctx: Context) -> Outcome:
    """Run each part of a one-way workload; the extras say how busy the writing side was.

    With the shared sender, ``sender_cpu`` (its busiest share of a core) can
    flag the sender as the bottleneck. With the peer's own client,
    ``peer_sender_cpu`` is that share and ``peer_sender_cpu_s`` the CPU
    seconds it spent writing each phase: the write path's cost.
    """
    values: dict[str, float] = {}
    busy = 0.0
    seconds: dict[str, float] = {}
    own = False
    for part in _jobs.parts(job.workload):
        own, _ = _jobs.split_part(part)
        part_values, part_busy, part_seconds = _one_way_part(job, part, ctx)
        values.update(part_values)
        busy = max(busy, part_busy)
        seconds.update(part_seconds)
    if own:
        extra: dict[str, Any] = {
            "peer_sender_cpu": round(busy, 3),
            "peer_sender_cpu_s": {key: round(value, 4) for key, value in seconds.items()},
        }
    else:
        extra = {"sender_cpu": round(busy, 3)}
    return Outcome(job, values=values, extra=extra)


def _one_way_part(
    job: Job, part: str, ctx: Context
) -> tuple[dict[str, float], float, dict[str, float]]:
    """Run one receiver/sender pair; return its values, the sender's busy share and CPU s."""
    sizes = ctx.sizes
    own, base = _jobs.split_part(part)
    cert = ctx.cert if base == "tls-bulk" else None
    common = {
        "workload": part,
        "sizes": sizes.to_json(),
        "cache_dir": str(ctx.workdir),
        "cert": dataclasses.asdict(cert) if cert else None,
    }
    receiver = Worker({"role": "receive", **common, **_peer_spec(job, ctx, part)})
    sender: Worker | None = None
    try:
        # Started at once, told the port later: the two start-ups overlap.
        if own:
            sender = Worker(
                {"role": "write", "port": None, **common, **_peer_spec(job, ctx, part + "-client")}
            )
        else:
            sender = Worker({"role": "send", "port": None, **common})
        sender.tell(f"port {receiver.expect('READY', sizes.timeout)['port']}")
        got = receiver.expect("RESULT", sizes.timeout)
        sender_result = sender.expect("RESULT", sizes.timeout)
    finally:
        for worker in (receiver, sender):
            if worker is not None:
                worker.finish(10.0)
    sent = sender_result["sent"]
    busy = max(share for label, share in sender_result["sender_cpu"].items() if label != "hello")
    cpu_seconds = {
        (OWN if own else "") + label: float(value)
        for label, value in sender_result.get("sender_cpu_seconds", {}).items()
        if label != "hello"
    }
    values = _one_way_values(part, sizes, got["phases"], sent)
    if own:
        values = {OWN + key: value for key, value in values.items()}
    return values, busy, cpu_seconds


def _one_way_values(
    part: str, sizes: Sizes, phases: dict[str, Any], sent: dict[str, int]
) -> dict[str, float]:
    """The metrics of one part, keyed by the shared-sender names; checks the byte counts."""
    values: dict[str, float] = {}
    for spec in _jobs.phases_for(part, sizes):
        if not spec.label:
            continue
        got = phases.get(spec.label)
        if got is None or got["bytes"] != spec.total or sent.get(spec.label) != spec.total:
            raise RunFailed(
                f"{spec.label}: byte counts disagree (expected {spec.total}, "
                f"sent {sent.get(spec.label)}, received {got and got['bytes']})"
            )
        seconds = float(got["seconds"])
        if seconds <= 0:
            raise RunFailed(f"{spec.label}: non-positive time {seconds}")
        if spec.label in ("bulk", "tls-bulk"):
            values[spec.label] = spec.total / MiB / seconds
        elif spec.label == "lines":
            values["lines"] = spec.count / seconds
        else:
            values[spec.label] = seconds
    return values


def _echo(job: Job, ctx: Context) -> Outcome:
    sizes = ctx.sizes
    if job.workload == "echo":
        shape = {"active": sizes.echo_conns, "idle": 0, "seconds": sizes.echo_seconds}
    else:
        shape = {"active": 1, "idle": job.idle, "seconds": sizes.idle_seconds}
    server = Worker({"role": "serve", **_peer_spec(job, ctx)})
    client: Worker | None = None
    try:
        client = Worker({"role": "client", "port": None, "timeout": sizes.timeout, **shape})
        client.tell(f"port {server.expect('READY', sizes.timeout)['port']}")
        result = client.expect("RESULT", sizes.timeout)
    finally:
        for worker in (client, server):
            if worker is not None:
                worker.finish(10.0)
    count, seconds = int(result["round_trips"]), float(result["seconds"])
    if count <= 0 or seconds <= 0:
        raise RunFailed(f"no round trip completed in {seconds:.2f} s")
    return Outcome(
        job,
        values={job.metric_keys[0]: count / seconds},
        extra={"client_cpu": round(float(result["client_cpu"]), 3), "round_trips": count},
    )


def _memory(job: Job, ctx: Context) -> Outcome:
    sizes = ctx.sizes
    conns = sizes.memory_conns
    server = Worker({"role": "serve", **_peer_spec(job, ctx)})
    client: Worker | None = None
    try:
        before = server.expect("READY", sizes.timeout)
        client = Worker(
            {
                "role": "client",
                "port": before["port"],
                "active": 0,
                "idle": conns,
                "seconds": 0,
                "hold": True,
                "timeout": sizes.timeout,
            }
        )
        client.expect("HELD", sizes.timeout)
        server.tell("stat")
        after = server.expect("STAT", sizes.timeout)
        client.close_stdin()
        client.expect("RESULT", sizes.timeout)
    finally:
        for worker in (client, server):
            if worker is not None:
                worker.finish(10.0)
    if after["accepted"] < conns:
        raise RunFailed(f"server accepted {after['accepted']} of {conns} connections")
    per_conn = (after["rss_kib"] - before["rss_kib"]) / conns
    return Outcome(
        job,
        values={"memory": per_conn},
        extra={"rss_before_kib": before["rss_kib"], "rss_after_kib": after["rss_kib"]},
    )


class Progress:
    """One status line on stderr: rewritten in place on a terminal, a line per run otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._tty = sys.stderr.isatty()

    def note(self, text: str) -> None:
        """Show *text* as the current activity."""
        if self._tty:
            sys.stderr.write(f"\r\x1b[2K{self._prefix()} {text}")
            sys.stderr.flush()

    def finished(self, text: str) -> None:
        """Count one run and show its result."""
        self.done += 1
        line = f"{self._prefix()} {text}"
        sys.stderr.write(f"\r\x1b[2K{line}" if self._tty else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        """End the status line."""
        if self._tty:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def _prefix(self) -> str:
        elapsed = time.monotonic() - self.started
        return f"[{self.done}/{self.total} {elapsed:5.0f}s]"
