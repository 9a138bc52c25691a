"""Compare the ratios of two benchmark runs (``--json`` files), e.g. quick against full.

    python bench/compare.py quick.json full.json [--tolerance 0.25]

For every row and column present in both, print the two ratios (times
better than asyncio streams, as in the report) and their quotient; a
quotient outside 1 +- tolerance is marked ``DISAGREES``. Each run's mode,
date and median foreign load (the cores other processes took, see
``iostream/bench/_load.py``) are printed first: ratios taken on a machine
that something else kept busy move for reasons that are not the libraries'.
Exit status 0 when every compared ratio agrees, 1 when one does not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any


def _load(path: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return data


def _foreign(run: dict[str, Any]) -> str:
    loads = [e["foreign_load"] for e in run.get("extras", []) if e.get("foreign_load") is not None]
    if not loads:
        return "unknown"
    return f"median {statistics.median(loads):.2f}, max {max(loads):.2f} cores"


def compare(first: dict[str, Any], second: dict[str, Any], tolerance: float) -> list[str]:
    """Return the report lines; those that disagree contain ``DISAGREES``."""
    lines = []
    for name, run in (("A", first), ("B", second)):
        config, machine = run.get("config", {}), run.get("machine", {})
        lines.append(
            f"{name}: {config.get('mode')} mode, {config.get('repeat')} repetition(s), "
            f"{machine.get('date')}, foreign load {_foreign(run)}"
        )
    lines.append("")
    lines.append(f"{'row':36} {'column':26} {'A':>7} {'B':>7} {'A/B':>6}")
    for key, row in first["results"].items():
        other = second["results"].get(key)
        if other is None:
            continue
        for label, cell in row["peers"].items():
            theirs = other["peers"].get(label)
            if theirs is None or cell["ratio"] is None or theirs["ratio"] is None:
                continue
            if label == first.get("baseline"):
                continue
            quotient = cell["ratio"] / theirs["ratio"]
            verdict = "" if abs(quotient - 1) <= tolerance else "  DISAGREES"
            if row.get("indicative_only") or other.get("indicative_only"):
                verdict += " (indicative only)"
            lines.append(
                f"{key:36} {label:26} {cell['ratio']:7.2f} {theirs['ratio']:7.2f} "
                f"{quotient:6.2f}{verdict}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print the comparison; exit 1 if a ratio disagrees beyond the tolerance."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", help="a --json file (A)")
    parser.add_argument("second", help="a --json file (B)")
    parser.add_argument("--tolerance", type=float, default=0.25, help="default 0.25 (25%%)")
    args = parser.parse_args(argv)
    if not 0 < args.tolerance < 10:
        parser.error(f"--tolerance: expected a fraction such as 0.25, got {args.tolerance}")
    lines = compare(_load(args.first), _load(args.second), args.tolerance)
    print("\n".join(lines))
    disagree = [line for line in lines if "DISAGREES" in line and "indicative" not in line]
    print(f"\n{len(disagree)} ratio(s) outside +-{args.tolerance:.0%} (indicative-only rows aside)")
    return 1 if disagree else 0


if __name__ == "__main__":
    sys.exit(main())
