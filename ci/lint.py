"""Lint and type-check: the step the CI workflow's lint job calls.

    python ci/lint.py

Installs the ``lint``, ``type`` and ``test`` extras, then runs ``ruff
check``, ``ruff format --check`` and ``mypy --strict`` (configured in
pyproject.toml), all of them even when one fails. Exit code non-zero if any
failed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STEPS: list[list[str]] = [
    [sys.executable, "-m", "ruff", "check", "."],
    [sys.executable, "-m", "ruff", "format", "--check", "."],
    [sys.executable, "-m", "mypy", "--strict"],
]


def main() -> int:
    """Install the tools, run every check, report; return the exit code."""
    install = [sys.executable, "-m", "pip", "install", "-e", ".[lint,type,test]"]
    print("+ " + " ".join(install), flush=True)
    if subprocess.call(install, cwd=ROOT):
        return 1
    failed: list[str] = []
    for cmd in STEPS:
        print("+ " + " ".join(cmd), flush=True)
        if subprocess.call(cmd, cwd=ROOT):
            failed.append(" ".join(cmd[2:]))
    if failed:
        print("ci: failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    print("ci: lint and type checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
