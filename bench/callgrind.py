"""Instructions per item of a one-way workload, per peer, counted by valgrind's callgrind.

    python bench/callgrind.py lines iostream asyncio-streams asyncio-protocol
    python bench/callgrind.py bulk iostream asyncio-streams --sizes 200 600

Wall-clock numbers move with whatever else the machine runs; instruction
counts do not. This runs the receiving side of a workload (the library
under test) under ``valgrind --tool=callgrind`` at two sizes and prints the
difference divided by the difference in items (lines, or 64 KiB blocks):
the user-space instructions one more item costs, start-up excluded. Kernel
work (the syscalls themselves) is not counted, so use it for the Python
side of lines and bulk, not for echo or the big messages, which the kernel
and page faults dominate. The verification's own cost (one ``list.append``
per line, a memcmp per block) is included, the same for every peer.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iostream.bench import _config, _payload, _process, _runner

_WRAPPER = """#!/bin/sh
case "$*" in
  *'"role": "receive"'*) exec valgrind --tool=callgrind -q --callgrind-out-file="$CG_OUT" \\
      "{python}" "$@" ;;
  *) exec "{python}" "$@" ;;
esac
"""


def _instructions(path: str) -> int:
    with open(path, encoding="utf-8") as out:
        for line in out:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"{path}: no totals line (did the receiver run?)")


def _count(workload: str, peer: str, items: int, workdir: Path) -> int:
    sizes = dataclasses.replace(
        _config.QUICK, lines=items, bulk_bytes=items * _config.BLOCK, timeout=900.0
    )
    if workload == "lines":
        _payload.cached_lines(items, str(workdir))
    out = str(workdir / f"{workload}-{peer}-{items}.callgrind")
    os.environ["CG_OUT"] = out
    outcome = _runner.run_once(
        _runner.Job(workload, _runner.Variant(peer, None, peer), 1),
        _runner.Context(sizes, workdir, None),
    )
    if outcome.error is not None:
        raise RuntimeError(f"{peer} {workload}: {outcome.error}")
    return _instructions(out)


def main() -> int:
    """Print instructions per item for each peer named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=["lines", "bulk"])
    parser.add_argument("peers", nargs="+")
    parser.add_argument(
        "--sizes",
        nargs=2,
        type=int,
        metavar=("SMALL", "LARGE"),
        help="item counts (default: 20000 60000 lines, 200 600 blocks)",
    )
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed")
    small, large = args.sizes or ((20_000, 60_000) if args.workload == "lines" else (200, 600))
    with tempfile.TemporaryDirectory(prefix="iostream-callgrind-") as tmp:
        workdir = Path(tmp)
        wrapper = workdir / "python"
        wrapper.write_text(_WRAPPER.format(python=sys.executable), encoding="utf-8")
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
        _process.PYTHON = str(wrapper)  # the workers start through valgrind
        for peer in args.peers:
            low = _count(args.workload, peer, small, workdir)
            high = _count(args.workload, peer, large, workdir)
            per_item = (high - low) / (large - small)
            print(f"{args.workload:6} {peer:18} {per_item:10,.0f} instructions per item")
    return 0


if __name__ == "__main__":
    sys.exit(main())
