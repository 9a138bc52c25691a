"""Medians, ratios, the targets check, and the Markdown and JSON reports."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

from iostream.bench._config import BASELINE, OWN, QUICK_INDICATIVE, TARGETS, Metric, Target
from iostream.bench._load import MAX_FOREIGN
from iostream.bench._runner import Outcome

#: The multiplication sign (U+00D7) after each ratio.
TIMES = "\u00d7"

#: Above this share of a core, the shared sender or client is the bottleneck.
SATURATED = 0.9


@dataclass
class Cell:
    """One metric of one peer: its samples, or why it has none."""

    samples: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        """The median, or ``None`` if any run failed (a broken peer posts no number)."""
        if self.failures or not self.samples:
            return None
        return statistics.median(self.samples)


@dataclass
class Report:
    """Everything a run found, ready to print."""

    metrics: list[Metric]
    labels: list[str]
    primary: str | None
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    extras: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    saturated: dict[tuple[str, str, str], float] = field(default_factory=dict)
    foreign: list[float] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        """Record one job's outcome."""
        label = outcome.job.variant.label
        for key in outcome.job.metric_keys:
            cell = self.cells.setdefault((key, label), Cell())
            if outcome.error is not None:
                cell.failures.append(outcome.error)
            else:
                cell.samples.append(outcome.values[key])
        foreign = outcome.extra.get("foreign_load")
        if foreign is not None:
            self.foreign.append(foreign)
        if outcome.extra:
            self.extras.append(
                {
                    "label": label,
                    "workload": outcome.job.workload,
                    "rep": outcome.job.rep,
                    **outcome.extra,
                }
            )
            self._note_saturation(outcome, label)

    def _note_saturation(self, outcome: Outcome, label: str) -> None:
        """Remember when the shared sender or client, not the peer, set the pace."""
        for side in ("sender", "client"):
            share = outcome.extra.get(f"{side}_cpu")
            if share is not None and share >= SATURATED:
                what = outcome.job.metric_keys[-1]
                key = (label, what, side)
                self.saturated[key] = max(share, self.saturated.get(key, 0.0))

    def all_notes(self) -> list[str]:
        """The notes, with one for each peer and workload where the shared side saturated."""
        notes = list(self.notes)
        if self.foreign:
            disturbed = sum(load > MAX_FOREIGN for load in self.foreign)
            retries = self.config.get("sizes", {}).get("retries", 0)
            if statistics.median(self.foreign) > MAX_FOREIGN:
                notes.append(
                    "**other processes kept this machine busy during most runs: the ratios "
                    "of this run are not comparable with a quiet run's, nor is quick mode "
                    "with full mode** (compare runs with bench/compare.py)"
                )
            notes.append(
                f"other processes used a median {statistics.median(self.foreign):.2f} and at "
                f"most {max(self.foreign):.2f} cores during the runs kept "
                f"({disturbed} of {len(self.foreign)} above {MAX_FOREIGN}; such a run was "
                f"repeated up to {retries} times and the least disturbed attempt kept)"
            )
        for (label, what, side), share in sorted(self.saturated.items()):
            notes.append(
                f"{label}, {what}: the shared {side} was busy up to {share:.0%} "
                "of the time, so this number may be a floor"
            )
        return notes

    @property
    def quick(self) -> bool:
        """Whether this is a ``--quick`` run."""
        return self.config.get("mode") == "quick"

    def indicative(self, metric: Metric) -> bool:
        """Whether *metric*'s ratios are indicative only in this run (quick mode, see README)."""
        return self.quick and metric.key in QUICK_INDICATIVE

    @property
    def failed(self) -> bool:
        """Whether any run failed."""
        return any(cell.failures for cell in self.cells.values())

    def median(self, key: str, label: str) -> float | None:
        """The median of *key* for *label*, if it has one."""
        cell = self.cells.get((key, label))
        return cell.median if cell else None

    def ratio(self, metric: Metric, label: str, baseline: str = BASELINE) -> float | None:
        """How many times better than *baseline* *label* is at *metric* (higher is better)."""
        value, base = self.median(metric.key, label), self.median(metric.key, baseline)
        if value is None or base is None or value <= 0 or base <= 0:
            return None
        return value / base if metric.higher_is_better else base / value


def machine_info() -> dict[str, Any]:
    """Describe this machine: cores, CPU, kernel, Python, date, load."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            names = [
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "system": platform.system(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_start": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def finish_machine(report: Report) -> None:
    """Record the load average at the end of the run."""
    report.machine["load_end"] = _loadavg()


def _format(value: float, metric: Metric) -> str:
    if metric.unit == "s":
        return f"{value:.3f}"
    if metric.unit == "KiB/conn":
        return f"{value:.2f}"
    return f"{value:,.0f}"


def _cell_text(report: Report, metric: Metric, label: str) -> str:
    cell = report.cells.get((metric.key, label))
    if cell is None:
        return "—"
    if cell.failures:
        return f"FAILED ({len(cell.failures)}/{len(cell.failures) + len(cell.samples)})"
    value = cell.median
    if value is None:
        return "—"
    ratio = report.ratio(metric, label)
    return _format(value, metric) + (f" ({ratio:.2f}{TIMES})" if ratio is not None else "")


def markdown(report: Report) -> str:
    """Return the results as Markdown: machine and mode, table, targets, notes."""
    m = report.machine
    load = f"load average {m.get('load_start')} at start, {m.get('load_end')} at end"
    out = [
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['system']} {m['kernel']}, "
        f"{m['implementation']} {m['python']}, {m['date']}; {load}.",
        f"Mode: {report.config.get('mode')}, {report.config.get('repeat')} repetition(s), "
        f"medians. Ratio ({TIMES}): times better than asyncio streams in the same run; "
        "higher is better in every row (for s and KiB it is asyncio's value over the peer's).",
        "",
        *_tables(report),
        *targets_markdown(report),
    ]
    notes = report.all_notes()
    if report.quick:
        notes.append(
            "quick mode: its ratios are meant to agree with a full run's within 25%; rows "
            "marked indicative only are not expected to, and in three quick runs on the "
            "final code 0 to 2 of the other ~66 ratios did not (see bench/README.md, Quick mode)"
        )
    if notes:
        out += ["", "Notes:", *(f"- {note}" for note in notes)]
    return "\n".join(out) + "\n"


#: The two tables: rows where both ends are the peer, and rows facing the shared side.
BOTH_ENDS = "Both ends the peer (its own client writes 64 KiB write() calls, its own server reads)"
SHARED = "Shared sender or client (the peer is the receiver or the echo server only)"


def _tables(report: Report) -> list[str]:
    out: list[str] = []
    for title, own in ((BOTH_ENDS, True), (SHARED, False)):
        table = markdown_table(report, own)
        if table:
            out += [f"**{title}**", "", table]
    return out


def markdown_table(report: Report, own: bool | None = None) -> str:
    """Return a results table: a row per metric, a column per peer ("" if no row).

    *own*: only the both-ends rows (True), only the shared-side rows
    (False), or every row (None). A row whose ratios are indicative only
    (quick mode) says so in its label.
    """
    out = [
        "| workload | unit | " + " | ".join(report.labels) + " |",
        "|---|---|" + "---:|" * len(report.labels),
    ]
    rows = 0
    for metric in report.metrics:
        if own is not None and metric.key.startswith(OWN) != own:
            continue
        if not any((metric.key, label) in report.cells for label in report.labels):
            continue
        rows += 1
        row = [_cell_text(report, metric, label) for label in report.labels]
        arrow = "\u2191" if metric.higher_is_better else "\u2193"
        name = metric.label + (" (indicative only)" if report.indicative(metric) else "")
        out.append(f"| {name} | {metric.unit} {arrow} | " + " | ".join(row) + " |")
    return "\n".join(out) + "\n" if rows else ""


def _subject(report: Report, target: Target) -> str | None:
    """The column a target judges: the primary iostream one, or the first of its peer."""
    if target.subject is None:
        return report.primary
    return next((label for label in report.labels if label.startswith(target.subject)), None)


def target_rows(report: Report) -> list[dict[str, Any]]:
    """Evaluate the issue's targets (primary iostream column unless a target names another)."""
    rows: list[dict[str, Any]] = []
    by_key = {metric.key: metric for metric in report.metrics}
    for target in TARGETS:
        metric = by_key.get(target.metric)
        label = _subject(report, target)
        measured: float | None = None
        if metric is not None and label is not None:
            if target.versus is None:
                measured = report.ratio(metric, label, target.baseline or BASELINE)
            else:
                value, base = (
                    report.median(target.metric, label),
                    report.median(target.versus, label),
                )
                measured = value / base if value and base else None
        rows.append(
            {
                "target": target.description,
                "column": label,
                "against": target.baseline or (None if target.versus else BASELINE),
                "indicative": metric is not None and report.indicative(metric),
                "metric": target.metric,
                "needed": target.minimum,
                "measured": measured,
                "met": None if measured is None else measured >= target.minimum,
            }
        )
    return rows


def targets_markdown(report: Report) -> list[str]:
    """The targets as a Markdown table."""
    lines = [
        f"Targets ({report.primary} against {BASELINE} unless the target names other columns):",
        "",
        "| target | needed | measured | met |",
        "|---|---:|---:|---|",
    ]
    for row in target_rows(report):
        measured = "n/a" if row["measured"] is None else f"{row['measured']:.2f}{TIMES}"
        met = {None: "not measured", True: "yes", False: "**no**"}[row["met"]]
        if row["indicative"] and row["met"] is not None:
            met += " (indicative only)"
        lines.append(f"| {row['target']} | {row['needed']:.2f}{TIMES} | {measured} | {met} |")
    return lines


def to_json(report: Report) -> dict[str, Any]:
    """Return every sample, median, ratio and target as a JSON-serialisable dict."""
    results: dict[str, Any] = {}
    for metric in report.metrics:
        per_peer: dict[str, Any] = {}
        for label in report.labels:
            cell = report.cells.get((metric.key, label))
            if cell is None:
                continue
            per_peer[label] = {
                "samples": cell.samples,
                "failures": cell.failures,
                "median": cell.median,
                "ratio": report.ratio(metric, label),
            }
        results[metric.key] = {
            "label": metric.label,
            "both_ends": metric.key.startswith(OWN),
            "indicative_only": report.indicative(metric),
            "unit": metric.unit,
            "higher_is_better": metric.higher_is_better,
            "peers": per_peer,
        }
    return {
        "machine": report.machine,
        "config": report.config,
        "baseline": BASELINE,
        "primary": report.primary,
        "results": results,
        "targets": target_rows(report),
        "extras": report.extras,
        "notes": report.all_notes(),
        "argv": sys.argv,
    }
