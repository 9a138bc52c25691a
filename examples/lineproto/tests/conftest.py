"""Pick the implementation under test: ``LINEPROTO_IMPL=naive`` or ``careful`` (default)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


@pytest.fixture
def impl() -> ModuleType:
    """The module under test: ``lineproto.careful`` or ``lineproto.naive``."""
    name = os.environ.get("LINEPROTO_IMPL", "careful")
    if name not in ("naive", "careful"):
        raise pytest.UsageError(f"LINEPROTO_IMPL must be naive or careful, not {name!r}")
    return importlib.import_module(f"lineproto.{name}")
