"""The documentation's code examples run, and print what the pages say.

Every ``docs/examples/*.py`` is a complete program on 127.0.0.1. Each ends
with an ``# expected output:`` comment block; this test runs the example in
a subprocess on every poller available here (``IOSTREAM_POLLER``) and
compares its standard output with that block, so a page that shows an
example (``literalinclude``) shows code that works.

An example may name what it needs (``# needs: iostream.asyncio.run;
stream futures``): a dotted name that must import, or a feature from
:data:`FEATURES`. While a need is missing from this build, the example is
skipped with a reason that names it (the docs describe features that are
being built in parallel; nothing that has landed is ever skipped).
"""

from __future__ import annotations

import importlib
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import iostream
from iostream import IOLoop, IOStream, pollers

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("*.py"))
PACKAGE_PARENT = Path(iostream.__file__).resolve().parent.parent


def _stream_futures() -> bool:
    """Do stream methods return an awaitable when given no callback?"""
    a, b = socket.socketpair()
    loop = IOLoop()
    try:
        stream = IOStream(a, io_loop=loop)
        write: Callable[[bytes], object] = stream.write  # typed for either answer
        result = write(b"x")
        stream.close()
        return result is not None and hasattr(result, "__await__")
    finally:
        b.close()
        loop.close(all_fds=True)


#: Features that are not a single name: description -> probe.
FEATURES: dict[str, Callable[[], bool]] = {"stream futures": _stream_futures}


def _has(dotted: str) -> bool:
    """Whether *dotted* (``package.module.Attr.attr``) resolves in this build."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for name in parts[split:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


def missing_needs(source: str) -> list[str]:
    """The needs declared in *source* (``# needs: a; b``) that this build lacks."""
    missing = []
    for line in re.findall(r"^# needs: (.+)$", source, re.M):
        for need in (n.strip() for n in line.split(";")):
            probe = FEATURES.get(need)
            ok = probe() if probe is not None else _has(need)
            if not ok:
                missing.append(need)
    return missing


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
    missing = missing_needs(source)
    if missing:
        pytest.skip(f"not in this build yet: {', '.join(missing)}")
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


def test_missing_needs_reads_the_declaration() -> None:
    """The skip logic itself: a present name passes, an absent one is reported."""
    source = "# needs: iostream.IOLoop.start; iostream.no_such_thing\n"
    assert missing_needs(source) == ["iostream.no_such_thing"]
    assert missing_needs("print()\n") == []
