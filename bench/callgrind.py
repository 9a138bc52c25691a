"""Instructions per item of a one-way workload, per peer, counted by valgrind's callgrind.

    python bench/callgrind.py lines iostream asyncio-streams asyncio-protocol
    python bench/callgrind.py bulk iostream asyncio-streams --sizes 200 600
    python bench/callgrind.py echo iostream asyncio-protocol uvloop-streams

Wall-clock numbers move with whatever else the machine runs; instruction
counts do not. This runs the receiving side of a workload (the library
under test) under ``valgrind --tool=callgrind`` at two sizes and prints the
difference divided by the difference in items (lines, or 64 KiB blocks):
the user-space instructions one more item costs, start-up excluded. Kernel
work (the syscalls themselves) is not counted, so use it for the Python
side of lines, bulk and echo, not for the big messages, which the kernel
and page faults dominate. The verification's own cost (one ``list.append``
per line, a memcmp per block) is included, the same for every peer.

``echo`` runs the echo server under callgrind instead, against the shared
client (100 connections), for two durations (``--sizes`` in seconds,
default 3 and 9: the client's clock, the server runs some 50 times slower
under valgrind) and divides by the difference in round trips: the
server's instructions per round trip, its waits for the client excluded.
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
  *'"role": "'$CG_ROLE'"'*) exec valgrind --tool=callgrind -q --callgrind-out-file="$CG_OUT" \\
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


def _count(workload: str, peer: str, items: int, workdir: Path) -> tuple[int, int]:
    """Instructions of the measured side, and the items it handled."""
    sizes = dataclasses.replace(
        _config.QUICK,
        lines=items,
        bulk_bytes=items * _config.BLOCK,
        echo_seconds=float(items),
        timeout=900.0,
    )
    os.environ["CG_ROLE"] = "serve" if workload == "echo" else "receive"
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
    if workload == "echo":
        items = int(outcome.extra["round_trips"])
    return _instructions(out), items


def main() -> int:
    """Print instructions per item for each peer named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=["lines", "bulk", "echo"])
    parser.add_argument("peers", nargs="+")
    parser.add_argument(
        "--sizes",
        nargs=2,
        type=int,
        metavar=("SMALL", "LARGE"),
        help="item counts (default: 20000 60000 lines, 200 600 blocks; echo: 3 9 seconds)",
    )
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed")
    default = {"lines": (20_000, 60_000), "bulk": (200, 600), "echo": (3, 9)}
    small, large = args.sizes or default[args.workload]
    with tempfile.TemporaryDirectory(prefix="iostream-callgrind-") as tmp:
        workdir = Path(tmp)
        wrapper = workdir / "python"
        wrapper.write_text(_WRAPPER.format(python=sys.executable), encoding="utf-8")
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
        _process.PYTHON = str(wrapper)  # the workers start through valgrind
        for peer in args.peers:
            low, low_items = _count(args.workload, peer, small, workdir)
            high, high_items = _count(args.workload, peer, large, workdir)
            per_item = (high - low) / (high_items - low_items)
            print(f"{args.workload:6} {peer:18} {per_item:10,.0f} instructions per item")
    return 0


if __name__ == "__main__":
    sys.exit(main())
