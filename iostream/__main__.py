"""``python -m iostream``: the command line (see :mod:`iostream._cli`)."""

from __future__ import annotations

from iostream._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
