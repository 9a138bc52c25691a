"""The documentation's code examples run, and print what the pages say.

Every ``docs/examples/*.py`` is a complete program on 127.0.0.1. Each ends
with an ``# expected output:`` comment block; this test runs the example in
a subprocess on every poller available here (``IOSTREAM_POLLER``) and
compares its standard output with that block, so a page that shows an
example (``literalinclude``) shows code that works. Nothing is skipped.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import iostream
from iostream import pollers

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("*.py"))
PACKAGE_PARENT = Path(iostream.__file__).resolve().parent.parent


def expected_output(source: str) -> str:
    """The ``# expected output:`` block at the end of an example, uncommented."""
    _, marker, block = source.partition("# expected output:\n")
    assert marker, "an example must end with an '# expected output:' comment block"
    return "".join(line[2:] + "\n" for line in block.splitlines())


def test_there_are_examples() -> None:
    """The glob found the examples (a moved directory must not pass silently)."""
    assert len(EXAMPLES) >= 5, EXAMPLES


@pytest.mark.parametrize("poller", pollers.available())
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(example: Path, poller: str) -> None:
    """The example exits 0 and prints exactly its expected output."""
    source = example.read_text(encoding="utf-8")
    expected = expected_output(source)
    env = dict(os.environ, IOSTREAM_POLLER=poller)
    env["PYTHONPATH"] = str(PACKAGE_PARENT) + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, str(example)],
        cwd=PACKAGE_PARENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected, result.stderr


def test_every_example_is_shown_in_the_docs() -> None:
    """Each example appears in a page, and each page includes only existing files."""
    pages = {p: p.read_text(encoding="utf-8") for p in DOCS.glob("*.md")}
    included = {
        (page.parent / target).resolve()
        for page, text in pages.items()
        for target in re.findall(r"\{literalinclude\}\s+(\S+)", text)
    }
    for path in included:
        assert path.is_file(), f"a page includes {path}, which does not exist"
    for example in EXAMPLES:
        assert example.resolve() in included, f"no page shows {example.name}"


def _readme_examples() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, re.S)


def _refused_port() -> int:
    """A loopback port with nothing listening (bound, noted, closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("index", range(len(_readme_examples())))
def test_readme_example_reports_a_failed_connect(index: int) -> None:
    """The README's API-at-a-glance examples, pointed at a refused port, say so and end."""
    source = _readme_examples()[index]
    assert '("example.org", 80)' in source
    source = source.replace('("example.org", 80)', f'("127.0.0.1", {_refused_port()})')
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PACKAGE_PARENT) + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, "-c", source],
        cwd=PACKAGE_PARENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("failed: "), (result.stdout, result.stderr)
    assert "refused" in result.stdout.lower()
