"""Run the test suite on one poller: the step every OS job of the CI workflow calls.

    python ci/run_tests.py --poller kqueue [-- extra pytest args]

Installs the package with its ``test`` extra, checks that ``python -m iostream
info`` picks the poller asked for (so a job can never pass on the wrong
backend), then runs ``pytest -n 2`` with ``IOSTREAM_POLLER`` set. pytest's
exit code 5 (no tests collected) counts as a failure. Works the same on
Linux, macOS and Windows (no shell needed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Run *cmd* in the repository root, echoing it; return its exit code."""
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env=env)


def main(argv: list[str] | None = None) -> int:
    """Install, check the poller, run pytest; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poller", required=True, help="the IOSTREAM_POLLER value")
    parser.add_argument("--no-install", action="store_true", help="skip pip install")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    if not args.no_install:
        rc = run([sys.executable, "-m", "pip", "install", "-e", ".[test]"])
        if rc:
            print(f"ci: pip install failed (exit {rc})", file=sys.stderr)
            return rc

    env = dict(os.environ, IOSTREAM_POLLER=args.poller, PYTHONUNBUFFERED="1")
    info = subprocess.run(
        [sys.executable, "-m", "iostream", "info", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if info.returncode != 0:
        print(f"ci: poller {args.poller!r} is not usable here:", file=sys.stderr)
        print(info.stderr.strip(), file=sys.stderr)
        return info.returncode or 1
    chosen = json.loads(info.stdout)["poller"]
    print(f"ci: IOSTREAM_POLLER={args.poller} -> {chosen} ({sys.platform})", flush=True)
    if chosen != args.poller:
        print(f"ci: expected poller {args.poller!r}, got {chosen!r}", file=sys.stderr)
        return 1

    rc = run([sys.executable, "-m", "pytest", "-n", "2", *args.pytest_args], env=env)
    if rc == 5:
        print("ci: pytest collected no tests (exit 5): that is a failure", file=sys.stderr)
    elapsed = time.monotonic() - started
    print(f"ci: {args.poller} on Python {sys.version.split()[0]}: exit {rc} in {elapsed:.0f}s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
