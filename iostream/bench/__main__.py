"""``python -m iostream.bench``: the same as ``python -m iostream bench``."""

from __future__ import annotations

import sys

from iostream.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
