"""Run the benchmark from a source tree: ``python bench/run.py [options]``.

The same as ``python -m iostream bench``; the code is in ``iostream/bench/``
and the description in ``bench/README.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from iostream.bench import main

    sys.exit(main(sys.argv[1:]))
