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


# ------------------------------------------------- the docs agree with the code


def _synopsis(page: Path) -> dict[str, str]:
    """Command -> its line in the page's ``python -m iostream COMMAND ...`` block."""
    text = page.read_text(encoding="utf-8")
    lines = re.findall(r"^python -m iostream (\w+)\s+(.*)$", text, re.M)
    return dict(lines)


def _option_strings(parser: object) -> set[str]:
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    return {
        option
        for action in parser._actions
        for option in action.option_strings
        if option not in ("-h", "--help")
    }


@pytest.mark.parametrize("page", ["README.md", "docs/cli.md"])
def test_cli_synopsis_lists_every_option(page: str) -> None:
    """The synopsis names every option of info, get and doctor (bench's ends in
    ``...`` and defers to ``bench --help``): a new option is documented or fails here."""
    import argparse

    from iostream import _cli, _doctor

    synopsis = _synopsis(ROOT / page)
    assert set(synopsis) == {"info", "get", "run", "doctor", "bench"}, synopsis
    sub = next(a for a in _cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parsers = {"info": sub.choices["info"], "get": sub.choices["get"]}
    parsers["doctor"] = _doctor.build_parser()
    for command, parser in parsers.items():
        for option in _option_strings(parser):
            assert re.search(rf"\[{re.escape(option)}\b", synopsis[command]) or (
                option == "--include" and "[-i]" in synopsis[command]
            ), f"{page}: {command}'s synopsis lacks {option}: {synopsis[command]!r}"
    assert synopsis["bench"].endswith("..."), synopsis["bench"]


#: The pages that tell how to install (examples/lineproto/pyproject.toml
#: depends on the name, which is right for an installed copy).
INSTALL_PAGES = [
    "README.md",
    "docs/testing.md",
    "docs/index.md",
    "docs/cli.md",
    "docs/benchmark.md",
    "examples/lineproto/README.md",
]


@pytest.mark.parametrize("page", INSTALL_PAGES)
def test_install_from_the_index_is_only_offered_for_when_it_is_published(page: str) -> None:
    """``iostream-loop`` is not on the package index yet: every paragraph that shows
    ``pip install iostream-loop...`` says so, and offers the install from a clone."""
    text = (ROOT / page).read_text(encoding="utf-8")
    paragraphs = re.split(r"\n\s*\n", text)
    shown = [p for p in paragraphs if re.search(r"pip\s+install\s+'?iostream-loop", p)]
    for paragraph in shown:
        flat = " ".join(paragraph.split()).lower()
        assert "once" in flat and "published" in flat, f"{page}: {flat}"
    if shown:
        assert "'.[" in text or "install ." in text, f"{page}: no install from a clone"


def test_documented_periodic_callback_signature_is_the_real_one() -> None:
    """Every ``PeriodicCallback(...)`` the pages show names real parameters, in order."""
    import inspect

    from iostream.periodic import PeriodicCallback

    real = list(inspect.signature(PeriodicCallback).parameters)
    found = 0
    for page in ("guarantees.md", "tornado.md"):
        text = (DOCS / page).read_text(encoding="utf-8")
        for args in re.findall(r"`PeriodicCallback\(([^)`]*)\)`", text):
            names = [arg.split("=")[0].strip() for arg in args.split(",") if arg.strip()]
            assert names == real[: len(names)], (page, names, real)
            found += 1
    assert found >= 2


def test_ioloop_poller_argument_is_as_documented() -> None:
    """guarantees.md: a name or a comma-separated string chooses; a list is a TypeError."""
    from iostream import IOLoop

    text = " ".join((DOCS / "guarantees.md").read_text(encoding="utf-8").split())
    assert "a string chooses by name, and may be a comma-separated preference list" in text
    assert "a Python list of names included — raises `TypeError`" in text
    best = pollers.available()[0]
    loop = IOLoop(f"{best},select", make_current=False)
    try:
        assert loop.poller.name == best
    finally:
        loop.close()
    with pytest.raises(TypeError):
        IOLoop([best], make_current=False)  # type: ignore[arg-type]


#: Modules whose ``__all__`` the API reference (docs/api.md) must cover.
API_MODULES = [
    "iostream",
    "iostream.stream",
    "iostream.pipe",
    "iostream.ioloop",
    "iostream.periodic",
    "iostream.tcpserver",
    "iostream.netutil",
    "iostream.process",
    "iostream.pollers",
    "iostream.pollers.base",
    "iostream.pollers.fallback",
    "iostream.pollers.select_",
    "iostream.asyncio",
    "iostream.testing",
    "iostream.testing.strategies",
    "iostream.testing.pytest_plugin",
]


def test_every_public_name_is_in_the_api_reference(tmp_path: Path) -> None:
    """Build the site (warnings are errors, as CI builds it) and check that every name
    in the public modules' ``__all__`` has an entry: under its own module's name, or
    (a re-export) the same object's entry under another public module."""
    import importlib
    import inspect
    import posixpath

    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    from sphinx.util.inventory import InventoryFile

    out = tmp_path / "html"
    build = ["-W", "--keep-going", "-q", "-b", "html", "-d", str(tmp_path / "doctrees")]
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", *build, str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    with open(out / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", posixpath.join)
    entries = getattr(inventory, "data", inventory)
    documented = {name for by_name in entries.values() for name in by_name}
    modules = {name: importlib.import_module(name) for name in API_MODULES}
    missing = []
    for module_name, module in modules.items():
        for name in module.__all__:
            obj = getattr(module, name)
            places = [f"{module_name}.{name}"]
            if inspect.isclass(obj) or inspect.isfunction(obj):
                places.append(f"{obj.__module__}.{obj.__qualname__}")
            places += [
                f"{other}.{name}"
                for other, other_module in modules.items()
                if getattr(other_module, name, None) is obj
            ]
            if not any(place in documented for place in places):
                missing.append(f"{module_name}.{name}")
    assert missing == []
