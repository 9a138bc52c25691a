"""The mutation run's patterns still apply to today's code (tests/mutation/README.md).

Each mutation of ``tests/mutation/run_mutations.py`` edits the library by
plain string replacement. When the code under a pattern moves, the pattern
stops matching (STALE) or, worse, matches in a new place and breaks the
file's syntax; either way that mutation silently tests nothing until the
next mutation run. This runs the script's ``--check`` step per mutation:
the edit applies the stated number of times and the result compiles.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parent / "mutation" / "run_mutations.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_mutations", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("run_mutations", module)
    spec.loader.exec_module(module)
    return module


RUN_MUTATIONS = _script()


@pytest.mark.parametrize("mutation", RUN_MUTATIONS.MUTATIONS, ids=lambda m: m.id)
def test_mutation_still_applies_and_compiles(mutation: object, tmp_path: Path) -> None:
    path = mutation.path  # type: ignore[attr-defined]
    (tmp_path / path).parent.mkdir(parents=True)
    shutil.copy2(RUN_MUTATIONS.ROOT / path, tmp_path / path)
    assert RUN_MUTATIONS.apply(mutation, tmp_path) == ""
    assert (tmp_path / path).read_text() != (RUN_MUTATIONS.ROOT / path).read_text()


def test_a_pattern_that_breaks_the_syntax_is_reported(tmp_path: Path) -> None:
    """The f1 case: the pattern matched after the code moved, and broke it."""
    path = "iostream/_errors.py"
    old = "class _ReadClosedError(StreamClosedError):\n"
    broken = RUN_MUTATIONS.Mutation(
        "x1", "a class left without a body", path, [(old, old + "if True:\n")]
    )
    (tmp_path / "iostream").mkdir()
    shutil.copy2(RUN_MUTATIONS.ROOT / path, tmp_path / path)
    assert "does not compile" in RUN_MUTATIONS.apply(broken, tmp_path)
