"""Sphinx configuration for the iostream documentation site.

Build it with ``python -m sphinx -W -b html docs docs/_build/html`` (or
``tox -e docs``) after ``python -m pip install -e '.[docs]'``. The pages are
Markdown (MyST); the API reference comes from the docstrings (autodoc); the
code examples live in ``docs/examples/`` and ``tests/test_docs.py`` runs them.
"""

from __future__ import annotations

import os
import sys

# Document the copy of iostream next to this file (the checkout), not an
# older one installed elsewhere.
sys.path.insert(0, os.path.abspath(".."))

from iostream._version import __version__

project = "iostream"
author = "The iostream team"
copyright = "the iostream authors; Apache License 2.0"
release = __version__
version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "examples/README.md", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

# No network at build time: intersphinx is configured, but links to the
# Python docs are resolved only where an inventory is cached (CI has none).
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

# Cross-references the docstrings make to names Sphinx cannot resolve
# offline (the standard library without an inventory) are not errors.
nitpicky = False

html_theme = "furo"
html_title = f"iostream {release}"
html_static_path: list[str] = []


# ----------------------------------------------------------------------------
# Pages written ahead of the code. The features of a round land in parallel;
# until a module exists, its section of the API reference says so visibly
# instead of failing the build. Every module named here exists in a release.


def _importable(name: str) -> bool:
    import importlib

    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _mark_missing_modules(app: object, docname: str, source: list[str]) -> None:
    import re

    def replace(match: re.Match[str]) -> str:
        module = match.group(1)
        if _importable(module):
            return match.group(0)
        return f"```{{warning}}\n`{module}` is not part of this build yet.\n```"

    source[0] = re.sub(r"```\{eval-rst\}\n\.\. automodule:: (\S+)\n[^`]*?```", replace, source[0])


def setup(app: object) -> None:
    """Sphinx hook: register :func:`_mark_missing_modules`."""
    app.connect("source-read", _mark_missing_modules)  # type: ignore[attr-defined]
