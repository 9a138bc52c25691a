"""The package version, in one place.

``pyproject.toml`` reads it (setuptools ``dynamic = ["version"]``) and
``iostream/__init__.py`` re-exports it as ``iostream.__version__``.
"""

from __future__ import annotations

__version__ = "0.1.0"
