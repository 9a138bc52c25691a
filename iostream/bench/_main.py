"""The command line of the benchmark: options, the plan of runs, and the report.

Exit status: 0 when every run passed verification; 1 when one failed (its
cell reads FAILED and posts no number) or when the report could not be
written (standard output, ``--json`` or ``--markdown``: a closed pipe, a
full disk); 2 for a bad option, including a ``--json`` / ``--markdown`` /
``--profile`` destination that cannot be written, which is checked before
anything runs. Every failure is one line on stderr starting with
``iostream: error:``, as for the other commands of ``python -m iostream``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

from iostream import _cli
from iostream.bench import _payload, _report, _runner, _tls
from iostream.bench._config import BASELINE, FULL, QUICK, WORKLOADS, Sizes, metrics_for
from iostream.bench._peers import DEFAULT_PEERS, PEERS, make_peer
from iostream.bench._runner import Context, Job, Variant


def _split(values: list[str] | None) -> list[str] | None:
    """Accept both ``--peers a b`` and ``--peers a,b``."""
    if values is None:
        return None
    return [item for value in values for item in value.split(",") if item]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m iostream bench``."""
    parser = _cli.command_parser(
        _prog(),
        description="Benchmark iostream against asyncio (streams and Protocol), Tornado, "
        "uvloop and trio on loopback, every peer in its own processes, every result verified.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and one repetition (about a minute)"
    )
    parser.add_argument(
        "--poller",
        metavar="NAME|all",
        help="iostream poller(s): a name, or 'all' (default: the best one; "
        "the idle workload uses every poller unless this is given)",
    )
    parser.add_argument(
        "--peers",
        nargs="+",
        metavar="PEER",
        help=f"peers to run (default: {' '.join(DEFAULT_PEERS)}; also: corrupt, corrupt-writer, "
        "the harness self-tests)",
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        metavar="NAME",
        help=f"workloads to run (default: all of {' '.join(WORKLOADS)})",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="repetitions per measurement (default: 3, or 1 with --quick)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        metavar="N",
        help="repeat a run that other processes disturbed up to N times "
        "(default: 2, or 0 with --quick)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        metavar="SECONDS",
        help="before each attempt, wait up to SECONDS for a quiet machine "
        "(default: 15, or 0 with --quick)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write every sample as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table to a file")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="save a cProfile of each peer-side process in DIR (slows the peers: "
        "the numbers of a profiled run are not comparable)",
    )
    return parser


def _prog() -> str:
    """The command's name as invoked, for usage lines and ``--help``."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if argv0.endswith(os.path.join("bench", "__main__.py")):
        return f"{os.path.basename(sys.executable) or 'python'} -m iostream.bench"
    return f"{_cli.prog_name()} bench"


def _pollers_for(option: str | None, workload: str, every_for_idle: bool) -> list[str | None]:
    from iostream import pollers

    if option is None:
        return list(pollers.available()) if workload == "idle" and every_for_idle else [None]
    if option.lower() == "all":
        return list(pollers.available())
    return [pollers.choose(option).name]


def _variants(
    peers: list[str], option: str | None, workload: str, every_for_idle: bool = True
) -> list[Variant]:
    variants: list[Variant] = []
    for name in peers:
        only = PEERS[name].workloads
        if only is not None and workload not in only:
            continue
        pollers: list[str | None] = [None]
        # The asyncio loop on iostream's pollers: the one chosen, or the best one
        # (not every poller: it is compared with asyncio's own loop).
        one = option is not None and option.lower() != "all"
        if name == "iostream":
            pollers = _pollers_for(option, workload, every_for_idle)
        elif name in ("iostream-await", "asyncio-on-iostream") and one:
            pollers = _pollers_for(option, workload, False)
        for poller in pollers:
            variants.append(Variant(name, poller, make_peer(name, poller).label))
    return variants


def plan(
    peers: list[str],
    workloads: list[str],
    option: str | None,
    sizes: Sizes,
    quick: bool = False,
) -> tuple[list[Job], list[str]]:
    """Return the jobs in running order (repetitions interleaved) and the skip notes.

    Without ``--poller``, idle runs on every poller, except in quick mode
    (the best one only: the slow pollers' 1,000-connection runs would take
    a third of the minute).

    Each repetition runs a workload's peers in an order rotated by one, so
    that no peer always runs first or last: in the round-two full run, the
    peer that always ran last measured 0.89x on echo and 1.00x alone (what
    in the run order costs it was not found; rotating spreads it over every
    peer's median instead of one column's).

    In quick mode (one repetition) the baseline, asyncio streams, runs
    three times per workload (first, in the middle, last) and its median is
    the ratios' denominator: one low sample of it moved a whole row's
    ratios by up to 2.9x against the full run's.
    """
    jobs: list[Job] = []
    notes: list[str] = []
    #: Runs planned so far of each (workload, variant, idle count): the next one's rep.
    runs: Counter[tuple[str, Variant, int]] = Counter()
    for name in peers:
        only = PEERS[name].workloads
        if only is not None and set(workloads) - only:
            notes.append(f"{name} runs only {', '.join(w for w in WORKLOADS if w in only)}")
    for rep in range(1, sizes.repeat + 1):
        for workload in workloads:
            counts = list(sizes.idle_counts) if workload == "idle" else [0]
            variants = _variants(peers, option, workload, not quick)
            if variants:
                turn = (rep - 1) % len(variants)
                variants = variants[turn:] + variants[:turn]
            if quick and sizes.repeat == 1:
                variants = _baseline_thrice(variants)
            for variant in variants:
                for count in counts:
                    conns = sizes.memory_conns if workload == "memory" else count
                    reason = _runner.skip_reason(workload, variant, conns)
                    if reason is None:
                        # rep itself, except for quick mode's extra baseline runs.
                        runs[workload, variant, count] += 1
                        jobs.append(Job(workload, variant, runs[workload, variant, count], count))
                    elif rep == 1:
                        notes.append(reason)
    return jobs, notes


def _baseline_thrice(variants: list[Variant]) -> list[Variant]:
    """*variants* with the baseline's also in the middle and at the end (quick mode)."""
    base = [variant for variant in variants if variant.peer == BASELINE]
    if not base or len(variants) < 2:
        return variants
    others = [variant for variant in variants if variant.peer != BASELINE]
    half = len(others) // 2
    return base + others[:half] + base + others[half:] + base


def _choose_peers(args: argparse.Namespace, notes: list[str]) -> list[str]:
    peers = _split(args.peers) or list(DEFAULT_PEERS)
    unknown = [name for name in peers if name not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    usable = []
    for name in peers:
        reason = PEERS[name].unavailable()
        if reason is None:
            usable.append(name)
        else:
            notes.append(f"{name} not measured: {reason}")
    return usable


def _choose_workloads(args: argparse.Namespace) -> list[str]:
    workloads = _split(args.workloads) or list(WORKLOADS)
    unknown = [name for name in workloads if name not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    return [name for name in WORKLOADS if name in workloads]


def _context(workloads: list[str], sizes: Sizes, workdir: Path, notes: list[str]) -> Context:
    cert: _tls.CertFiles | None = None
    if "tls-bulk" in workloads:
        made = _tls.make_cert(workdir)
        if isinstance(made, str):
            notes.append(f"tls-bulk skipped: {made}")
            workloads.remove("tls-bulk")
        else:
            cert = made
    if "lines" in workloads:
        sys.stderr.write(f"preparing {sizes.lines:,} lines...\n")
        _payload.cached_lines(sizes.lines, str(workdir))
    return Context(sizes, workdir, cert)


def _describe(outcome: _runner.Outcome) -> str:
    job = outcome.job
    what = f"{job.workload}{f' {job.idle:,}' if job.workload == 'idle' else ''}"
    head = f"rep {job.rep} {what:12} {job.variant.label:18}"
    if outcome.error is not None:
        return f"{head} FAILED: {outcome.error}"
    values = ", ".join(f"{key}={value:,.3f}" for key, value in outcome.values.items())
    return f"{head} {values} (foreign load {outcome.extra.get('foreign_load')})"


class _UsageError(Exception):
    """A bad option: one line on stderr and exit status 2."""


def _check_destination(option: str, path: str) -> None:
    """Fail now, not after the whole run, if *path* cannot be opened for writing.

    A file that exists is opened to append (nothing is changed; the report
    replaces it at the end); one that does not is created, then removed.
    """
    existed = os.path.lexists(path)
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise _UsageError(_cannot_write(option, path, exc)) from None
    if not existed:
        try:
            os.unlink(path)
        except OSError:
            pass  # it is written at the end anyway


def _cannot_write(option: str, path: str, exc: OSError) -> str:
    """The one-line message for a report destination that cannot be written."""
    return f"cannot write to {path} ({option}): {_cli._one_line(exc.strerror or exc)}"


def _check_profile_dir(path: str) -> None:
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        detail = _cli._one_line(exc.strerror or exc)
        raise _UsageError(f"--profile: cannot make the directory {path}: {detail}") from None


def _write_outputs(text: str, report: _report.Report, args: argparse.Namespace) -> list[str]:
    """Write the report to the files asked for, then to stdout; return what failed.

    The files come first, so that a closed pipe or a full disk on stdout
    does not lose the samples of a run that took minutes; each destination
    is tried whatever happened to the others.
    """
    errors: list[str] = []
    files: list[tuple[str, str, str]] = []
    if args.markdown:
        files.append(("--markdown", args.markdown, text))
    if args.json:
        files.append(("--json", args.json, json.dumps(_report.to_json(report), indent=2) + "\n"))
    for option, path, content in files:
        try:
            Path(path).write_text(content, encoding="utf-8")
        except OSError as exc:
            errors.append(_cannot_write(option, path, exc))
    try:
        _cli.write_stdout(text)
    except _cli.CLIError as exc:
        errors.append(str(exc))
    return errors


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the Markdown table on stdout; return the exit status."""
    args = _cli.parse_command_args(build_parser(), sys.argv[1:] if argv is None else argv)
    if isinstance(args, int):
        return args  # --help, or a usage error (reported)
    notes: list[str] = []
    try:
        for option, path in (("--json", args.json), ("--markdown", args.markdown)):
            if path:
                _check_destination(option, path)
        if args.profile:
            _check_profile_dir(args.profile)
        peers = _choose_peers(args, notes)
        workloads = _choose_workloads(args)
        base = QUICK if args.quick else FULL
        sizes = dataclasses.replace(
            base,
            repeat=base.repeat if args.repeat is None else args.repeat,
            retries=base.retries if args.retries is None else args.retries,
            quiet_wait=base.quiet_wait if args.quiet_wait is None else args.quiet_wait,
        )
        if sizes.repeat < 1:
            raise ValueError(f"--repeat: expected a positive number, got {sizes.repeat}")
        if sizes.retries < 0:
            raise ValueError(f"--retries: expected 0 or more, got {sizes.retries}")
        if not 0 <= sizes.quiet_wait < float("inf"):
            raise ValueError(f"--quiet-wait: expected 0 or more seconds, got {sizes.quiet_wait}")
        jobs, skips = plan(peers, workloads, args.poller, sizes, quick=args.quick)
    except (_UsageError, ValueError, RuntimeError) as exc:
        return _cli._fail(str(exc), _cli.EXIT_USAGE)
    notes += skips
    if BASELINE not in peers:
        notes.append(f"no ratios: the baseline {BASELINE} is not among the peers")
    labels = _columns(jobs, peers)
    primary = next(
        (label for label in labels if label.startswith("iostream-") and "await" not in label),
        None,
    )
    report = _report.Report(
        metrics=[metric for workload in workloads for metric in metrics_for(workload, sizes)],
        labels=labels,
        primary=_primary(labels, primary),
        notes=notes,
        machine=_report.machine_info(),
        config={
            "mode": "quick" if args.quick else "full",
            "repeat": sizes.repeat,
            "sizes": sizes.to_json(),
            "peers": peers,
            "workloads": workloads,
            "poller": args.poller,
        },
    )
    with tempfile.TemporaryDirectory(prefix="iostream-bench-") as workdir:
        ctx = _context(workloads, sizes, Path(workdir), notes)
        if args.profile:
            ctx.profile_dir = Path(args.profile)
            notes.append(f"profiled run (cProfile, saved in {args.profile}): not comparable")
        jobs = [job for job in jobs if job.workload in workloads]
        _run_all(jobs, ctx, report)
    _report.finish_machine(report)
    text = _report.markdown(report)
    errors = _write_outputs(text, report, args)
    if errors:
        return _cli._fail("; ".join(errors), _cli.EXIT_ERROR)
    return 1 if report.failed else 0


def _columns(jobs: list[Job], peers: list[str]) -> list[str]:
    """The table's columns: in ``--peers`` order, iostream's pollers side by side."""
    order = {
        variant.label: (peers.index(variant.peer), index)
        for index, variant in enumerate(dict.fromkeys(job.variant for job in jobs))
    }
    return sorted(order, key=order.__getitem__)


def _primary(labels: list[str], first: str | None) -> str | None:
    """The iostream column the targets are judged on: epoll if measured, else the first."""
    return "iostream-epoll" if "iostream-epoll" in labels else first


def _run_all(jobs: list[Job], ctx: Context, report: _report.Report) -> None:
    progress = _runner.Progress(len(jobs))
    try:
        for job in jobs:
            progress.note(f"rep {job.rep} {job.workload} {job.variant.label} ...")
            outcome = _runner.run_job(job, ctx)
            report.add(outcome)
            progress.finished(_describe(outcome))
    finally:
        progress.close()
